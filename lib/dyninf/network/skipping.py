"""Skipped execution: each residual block computed only for the images (and filters) that run it,
planned before the blocks run.

Why a plan. To run a block on some images only, the host must know how many and which, to size
the gathered batch. On a GPU the decisions live on the device, and reading them back makes the host
wait until every kernel queued before it has finished: read per block, the host can never run
ahead of the GPU, and each block pays the GPU's whole launch latency. Decisions known before the
first block (a fixed tensor, stochastic depth's test-time drops, BlockDrop's policy, GaterNet's
filter gates) are read back once per batch, in one small transfer, by ``plan_execution``; the
blocks then run without a single synchronisation. A local decider (AIG's gates) decides on each
block's input, so its plan is made block by block: one read per gated block, where the device's
policy says the wait pays (on a GPU it does not, and those blocks run masked).

Per block, the plan chooses the cheapest correct way to run it (``BlockRun.how``):

* ``"skip"``: no image runs it: the shortcut alone;
* ``"all"``: the whole batch, the residual scaled by the decisions (masked mode for this block),
  when so many images run it that gathering and scattering would cost more than they save;
* ``"gather"``: the running images gathered, run and scattered back.

The block runs itself the way its ``BlockRun`` says (``ResidualBlock.run_skipped``); this module
plans, and holds the tensor operations it runs with: ``gather``, ``scatter_``, ``sliced_conv_bn``
and ``scaled_residual``.

Which way pays depends on the device: ``POLICIES`` holds, per device type, the rules measured there
(``SkippingPolicy``). Filter gates: only the filters open for some image that runs the block are
computed, rounded up to a multiple of ``FILTER_BLOCK`` (convolution kernels compute filters in
blocks of 8 or 16), where that pays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.network.folding import folded_conv_bn

WAYS = ("skip", "all", "gather")
NOT_FINITE_GATES = "the filter gates must be finite (1 = run, 0 = skip, another value scales the residual), got NaN or inf"


@dataclass(frozen=True)
class SkippingPolicy:
    """How skipped mode runs blocks on one kind of device: the cheapest correct way, as measured
    there (``POLICIES``). ``gather_at_most``: the largest share of the batch that is gathered (above
    it the block runs on the whole batch, masked); ``gather_saving_at_least``: the fewest images a
    gather must leave out; ``plan_local_decisions``: read a block-by-block decider's decisions back
    before each block (one wait per block) so that a block no image runs is skipped, or run those
    blocks masked without waiting; ``slice_filters``: compute only the open filters, or compute all
    of them and mask."""

    gather_at_most: float = 0.9
    gather_saving_at_least: int = 1
    plan_local_decisions: bool = True
    slice_filters: bool = True


# CPU: compute scales with the images and filters, so leaving them out pays until copying the
# images in and out costs more than the few it saves. GPU: these small networks' kernels are
# launched slower than the GPU runs them, so computing fewer images saves time only at large
# batches, and every extra launch or wait costs. Measured on an H100 (make bench, keep 0.5): at
# batch 256 gathering every partial block took 1.3x as long as never gathering (ResNet-20 and -110);
# at batch 1024 gathering up to half the batch took 0.85x as long; reading AIG's gates back before
# each block was slower than masked mode at batch 1 (2.69 against 2.52 ms) and at batch 256 (3.92
# against 2.71); computing only GaterNet's open filters was slower than masking them (3.43 against
# 2.61 ms at batch 1, 3.15 against 2.52 at batch 256).
POLICIES = {"cpu": SkippingPolicy(),
            "cuda": SkippingPolicy(gather_at_most=0.5, gather_saving_at_least=384,
                                   plan_local_decisions=False, slice_filters=False)}


def policy_for(device: torch.device | str) -> SkippingPolicy:
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return POLICIES.get(kind, SkippingPolicy())


# Convolution kernels (oneDNN on CPUs, tensor cores on GPUs) compute output channels in blocks of
# 8 or 16 and a remainder on a slower path: at batch 1 on this course's CPU, 13 of 16 filters took
# 1.4x as long as all 16. Skipped mode pads the open filters it computes with closed ones (masked
# to zero) up to a multiple of FILTER_BLOCK; 1 computes exactly the open filters.
FILTER_BLOCK = 8


@dataclass(frozen=True)
class BlockRun:
    """How one block runs for one batch: ``how`` (one of ``WAYS``); for ``"gather"`` the running
    images' indices on the device; ``scaled``: whether the residual must be multiplied by the
    decisions (some are neither 0 nor 1, or ``"all"`` runs images whose decision is 0); for filter
    gates, per gate group the filters to compute (None: all of them) and whether their gates must
    be applied (False when every computed gate of every running image is 1)."""

    how: str
    images: torch.Tensor | None = None
    scaled: bool = False
    filters: tuple[torch.Tensor | None, ...] | None = None
    gated: tuple[bool, ...] | None = None


MASKED = BlockRun("all", scaled=True)   # masked mode for one block: nothing read back, nothing left out
SKIP, ALL, ALL_SCALED = BlockRun("skip"), BlockRun("all"), MASKED   # the steps that need no indices


@dataclass(frozen=True)
class ExecutionRecord:
    """How one forward pass of a network ran: ``plan_reads``, how many times it read decisions back
    to the host to plan skipped execution (1 for decisions known before the first block, one per
    gated block for a local decider, 0 in masked mode; a local decider that reads its own decisions
    back, as AIG's gates do for one image on a CPU, counts one per gated block in either mode);
    ``ways``, how each block ran (one of ``WAYS``; "all" in masked mode)."""

    plan_reads: int
    ways: tuple[str, ...]


def plan_execution(decisions: torch.Tensor | None, filter_gates: torch.Tensor | None,
                   filter_groups: Sequence[tuple[int, ...]], batch: int,
                   policy: SkippingPolicy | None = None) -> list[BlockRun]:
    """One ``BlockRun`` per block for a batch: ``decisions`` (batch, blocks) or None (all run),
    ``filter_gates`` (batch, gates) or None, ``filter_groups`` each block's gate group sizes.

    Reads back to the host once: the decisions themselves (a few kilobytes) and, for filter gates,
    which filters are open for a running image and which gates are not 1 (reduced over the batch
    on the device first). The host works out the rest, where a small operation costs microseconds
    instead of a kernel launch, and sends the indices the blocks need in one copy that does not
    wait. A ValueError if a decision or a gate is not finite."""
    device = (decisions if decisions is not None else filter_gates).device
    policy = policy or policy_for(device)
    width = 0 if filter_gates is None else filter_gates.shape[1]
    with torch.no_grad():
        values = None if decisions is None else decisions.detach().float()
        host_decisions = None
        if filter_gates is None:
            host_decisions = values.cpu()                                      # the one read back
        elif decisions is None and len(filter_gates) == 1:   # one image: its gates are the flags
            gates = filter_gates.detach()[0].tolist()                           # the one read back
            if not all(map(math.isfinite, gates)):
                raise ValueError(NOT_FINITE_GATES)
            open_flags, not_one = [gate != 0 for gate in gates], [gate != 1 for gate in gates]
        else:
            gates = filter_gates.detach()
            rows = torch.ones_like(gates, dtype=torch.bool) if decisions is None \
                else _per_filter(values.ne(0), filter_groups)
            packet = [(gates.ne(0) & rows).any(0).float(), (gates.ne(1) & rows).any(0).float(),
                      gates.sum().float().view(1)]   # finite only if every gate is
            if decisions is not None:
                packet.insert(0, values.flatten())
            host = torch.cat(packet).cpu()                                     # the one read back
            if decisions is not None:
                host_decisions, host = host[:decisions.numel()].view(decisions.shape), host[decisions.numel():]
            host = host.tolist()   # a few hundred flags: Python is cheaper than a tensor operation per group
            if not math.isfinite(host[2 * width]):
                raise ValueError(NOT_FINITE_GATES)
            open_flags, not_one = host[:width], host[width:2 * width]
    ways, scaled, images = block_ways(host_decisions, len(filter_groups), batch, policy)
    keeps = gated = None
    if filter_gates is not None:
        keeps, gated = _filters_to_compute(open_flags, not_one, filter_groups)
    images, keeps = _to_device(images, keeps, device)
    if keeps is None and not any(how == "gather" for how in ways):   # the common steps, made once
        return [SKIP if how == "skip" else ALL_SCALED if scaled[block] else ALL for block, how in enumerate(ways)]
    return [BlockRun(how, images[block], scaled[block], None if keeps is None else keeps[block],
                     None if gated is None else gated[block])
            for block, how in enumerate(ways)]


def plan_block(run: torch.Tensor | None, filters: torch.Tensor | None, filter_groups: tuple[int, ...],
               batch: int, policy: SkippingPolicy) -> tuple[BlockRun, bool]:
    """The way to run one block whose decisions were made on its input (AIG's gates), and whether
    planning it read them back to the host: only where ``policy`` says the wait pays."""
    filters = filters if policy.slice_filters else None
    if (run is None or not policy.plan_local_decisions) and filters is None:
        return MASKED, False
    if filters is None and batch == 1:   # one image: its decision, read back, says it all
        return uniform_block_run(run.item()), True
    return plan_execution(None if run is None else run[:, None], filters, [filter_groups], batch, policy)[0], True


def uniform_block_run(decision: float) -> BlockRun:
    """How a block runs when every image has the same ``decision``, known on the host: skipped at
    0, else on the whole batch (scaled unless 1). Nothing to read back, on any device."""
    if not math.isfinite(decision):
        raise ValueError(f"a decision must be finite (1 = run, 0 = skip, another value scales the "
                         f"residual), got {decision}")
    return SKIP if decision == 0 else ALL if decision == 1 else ALL_SCALED


def block_ways(decisions: torch.Tensor | None, blocks: int, batch: int, policy: SkippingPolicy):
    """Per block, on the host: the way it runs (nothing; the running images gathered, when they are
    few enough for ``policy``; else the whole batch), whether its residual must be scaled, and the
    running images' indices for a gathered block."""
    if decisions is None:
        return ["all"] * blocks, [False] * blocks, [None] * blocks
    counts, needs_scale, running_images = _column_statistics(decisions)
    ways, scaled, images = [], [], []
    for block, count in enumerate(counts):
        gather = (0 < count < batch and count <= policy.gather_at_most * batch
                  and batch - count >= policy.gather_saving_at_least)
        ways.append("skip" if count == 0 else "gather" if gather else "all")
        # the whole batch with some images at 0 is masked mode for this block: scaled
        scaled.append(bool(needs_scale[block]) or (not gather and 0 < count < batch))
        images.append(running_images(block) if gather else None)
    return ways, scaled, images


# Up to this many decisions the plan is worked out in plain Python: at batch 1 it is a handful of
# numbers, and each tensor operation would cost more than the Python (about 10 us on a small CPU).
SMALL_PLAN = 2048


def _column_statistics(decisions: torch.Tensor):
    """Per block (column) of host-side ``decisions``: how many images run it, whether any of them
    has a decision other than 1, and a function giving the running images' indices; a ValueError
    if a decision is not finite."""
    if decisions.numel() <= SMALL_PLAN:
        columns = list(zip(*decisions.tolist())) or [()] * decisions.shape[1]
        finite = all(math.isfinite(value) for column in columns for value in column)
        counts = [sum(value != 0 for value in column) for column in columns]
        needs_scale = [any(value not in (0, 1) for value in column) for column in columns]

        def running_images(block):
            return torch.tensor([i for i, value in enumerate(columns[block]) if value != 0])
    else:
        finite = bool(torch.isfinite(decisions).all())
        running = decisions.ne(0)
        counts = running.sum(0).tolist()
        needs_scale = (running & decisions.ne(1)).any(0).tolist()

        def running_images(block):
            return running[:, block].nonzero().squeeze(1)
    if not finite:
        raise ValueError("the decisions must be finite (1 = run, 0 = skip, another value scales the "
                         "residual), got NaN or inf")
    return counts, needs_scale, running_images


def _per_filter(running: torch.Tensor, filter_groups: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """(batch, blocks) -> (batch, gates): each block's decision repeated over its gated filters."""
    key = (tuple(filter_groups), running.device)
    if key not in _BLOCK_OF_FILTER:   # made once per network and device (its copy waits, once)
        sizes = torch.tensor([sum(groups) for groups in filter_groups])
        _BLOCK_OF_FILTER[key] = torch.arange(len(sizes)).repeat_interleave(sizes).to(running.device)
    return running.index_select(1, _BLOCK_OF_FILTER[key])


_BLOCK_OF_FILTER: dict = {}


def _filters_to_compute(open_: list, not_one: list, filter_groups):
    """Per block and gate group, on the host (``open_``, ``not_one``: a flag per gate, whether it is
    open for some running image and whether it is other than 1 for one), the filters to compute:
    those open for some running image, padded with closed ones to a multiple of ``FILTER_BLOCK``,
    None for the whole group; and whether the gates on them must be applied."""
    chosen, gated, start = [], [], 0
    for groups in filter_groups:
        block_keeps, block_gated = [], []
        for size in groups:
            opened = open_[start:start + size]
            keep = [i for i, flag in enumerate(opened) if flag]
            padding = min(-len(keep) % FILTER_BLOCK, size - len(keep))
            if not keep:   # none open: filter 0 stands in (masked to zero), shapes stay valid
                keep = [0]
            elif padding:   # in order: all of them is the whole layer
                keep = sorted(keep + [i for i, flag in enumerate(opened) if not flag][:padding])
            flags = not_one[start:start + size]
            block_gated.append(any(flags[i] for i in keep))
            block_keeps.append(None if len(keep) == size else torch.tensor(keep))
            start += size
        chosen.append(tuple(block_keeps))
        gated.append(tuple(block_gated))
    return chosen, gated


def _to_device(images: list, keeps: list | None, device: torch.device):
    """The plan's index tensors on ``device``: one copy from pinned memory that does not wait."""
    if torch.device(device).type == "cpu":
        return images, keeps
    flat = [t for t in images if t is not None] + [t for block in keeps or [] for t in block if t is not None]
    if not flat:
        return images, keeps
    moved = iter(torch.cat(flat).pin_memory().to(device, non_blocking=True).split([len(t) for t in flat]))
    images = [None if t is None else next(moved) for t in images]
    if keeps is not None:
        keeps = [tuple(None if t is None else next(moved) for t in block) for block in keeps]
    return images, keeps


def scaled_residual(residual: torch.Tensor, run: torch.Tensor | None, scaled: bool) -> torch.Tensor:
    """``run * residual`` per image, unless the plan knows every decision is 1 (a broadcast multiply
    costs a pass over the whole tensor). Decisions that need a gradient are always multiplied, so
    that the gradient reaches them."""
    if run is None or not (scaled or run.requires_grad):
        return residual
    return run.to(residual.dtype).view(-1, 1, 1, 1) * residual


def sliced_conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d,
                   inputs: torch.Tensor | None = None,
                   outputs: torch.Tensor | None = None) -> torch.Tensor:
    """Eval-mode ``bn(conv(x))`` with the convolution cut to input channels ``inputs`` and output
    filters ``outputs`` (None: all), so that only those are computed. Without autograd the
    batch norm is folded into the convolution (cached), which saves slicing its four statistics
    and running it: five small operations per convolution, each with a fixed cost that at batch 1
    adds up to a good part of a convolution's time."""
    if not torch.is_grad_enabled():
        weight, bias = folded_conv_bn(conv, bn)
        if outputs is not None:
            weight, bias = gather(weight, outputs), bias.index_select(0, outputs)
        if inputs is not None:
            weight = gather(weight, inputs, dim=1)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding)
    weight = conv.weight
    statistics = (bn.running_mean, bn.running_var, bn.weight, bn.bias)
    if outputs is not None:
        weight = weight.index_select(0, outputs)
        statistics = tuple(t.index_select(0, outputs) for t in statistics)
    if inputs is not None:
        weight = weight.index_select(1, inputs)
    return F.batch_norm(F.conv2d(x, weight, None, conv.stride, conv.padding), *statistics,
                        False, 0.0, bn.eps)


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


_NHWC_DIM = (0, 3, 1, 2)   # where each NCHW dimension sits in the NHWC view


def gather(x: torch.Tensor, indices: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x.index_select(dim, indices)``, keeping a channels-last tensor channels-last: gathered on
    its NHWC view, each image (or each filter of a weight) is one contiguous block, which is much
    faster to copy than the strided gather ``index_select`` does on the NCHW view, and the
    convolutions get the memory format they want without a reordering copy."""
    if _channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(_NHWC_DIM[dim], indices).permute(0, 3, 1, 2)
    return x.index_select(dim, indices)


def scatter_(out: torch.Tensor, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``out.index_copy_(0, images, rows)``, on the NHWC views when ``out`` is channels-last."""
    if _channels_last(out) and _channels_last(rows):
        out.permute(0, 2, 3, 1).index_copy_(0, images, rows.permute(0, 2, 3, 1))
        return out
    return out.index_copy_(0, images, rows)
