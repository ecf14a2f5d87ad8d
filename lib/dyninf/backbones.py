"""He et al.'s CIFAR ResNets with gateable residual blocks and two execution modes.

Every block computes ``relu(shortcut(x) + residual(x))``. Given per-image decisions ``run``
(1 = run, 0 = skip; any other value runs the block with its residual scaled by that value, as
stochastic depth's 1/p does) a block computes ``relu(shortcut(x) + run * residual(x))``, either

* ``mode="masked"``: for the whole batch; differentiable in ``run``, for training; skipped images
  still cost their full compute; or
* ``mode="skipped"``: the residual branch runs only on the images whose decision is not 0
  (gathered, then scattered back); a block that no image runs costs nothing.

Both give the same outputs in eval mode: block inputs come out of a ReLU and the shortcut only
subsamples and zero-pads, so ``shortcut(x) >= 0`` and ``relu(shortcut(x)) == shortcut(x)``.

Filter gates (GaterNet) act inside the residual branch: per image, a gate on every inner filter
(the outputs of a basic block's first convolution, of a bottleneck block's first two; the block's
output width is unchanged). Masked mode multiplies those feature maps by the gates. Skipped mode,
in eval, computes only the filters open for some image of the batch (at batch 1: that image's),
rounded up to a multiple of ``FILTER_BLOCK`` for the convolution kernels' sake, by slicing each
convolution's gated outputs and inputs, and masks the rest; in training it falls back to masking
(the gates' gradient needs every filter).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.deciders.base import BlockDecider, as_decider
from dyninf.folding import folded_conv_bn

MODES = ("masked", "skipped")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class ResidualBlock(nn.Module):
    """A residual block that can be skipped per image, with an option-A shortcut; subclasses define
    the residual branch and which of its filters can be gated."""

    # (convolution attribute, gate group on its inputs, gate group on its outputs), None = ungated
    convs_and_gate_groups: tuple[tuple[str, int | None, int | None], ...]

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.downsamples = stride != 1 or in_channels != out_channels

    def filter_groups(self) -> tuple[int, ...]:
        """Sizes of the groups of filter gates, in the order of the gate vector."""
        raise NotImplementedError

    @property
    def gated_filters(self) -> int:
        """How many filter gates the residual branch takes."""
        return sum(self.filter_groups())

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """He et al.'s option A: subsample and zero-pad channels (parameter-free, so a skipped
        downsampling block still yields a valid output)."""
        if not self.downsamples:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None,
                 mode: str = "masked") -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, run: torch.Tensor | None = None, mode: str = "masked",
                filters: torch.Tensor | None = None, *, overwrite_input: bool = False) -> torch.Tensor:
        """``run``: (batch,) block decisions; ``filters``: (batch, gated_filters) filter gates.
        ``overwrite_input``: skipped mode may write its output into ``x`` when no gradient is
        recorded (the network passes it for its own intermediate tensors, saving a copy)."""
        if run is None:
            return F.relu(self.shortcut(x) + self.residual(x, filters, mode))
        if mode == "masked":
            residual = self.residual(x, filters, mode)
            return F.relu(self.shortcut(x) + run.to(x.dtype).view(-1, 1, 1, 1) * residual)
        return self._forward_skipped(x, run, filters, overwrite_input)

    def _forward_skipped(self, x: torch.Tensor, run: torch.Tensor,
                         filters: torch.Tensor | None, overwrite_input: bool = False) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if len(x) == 1 and not run.requires_grad:
            # One image: a Python branch on its decision, without the batch's index bookkeeping
            # (at batch 1 a few small operations per block add up to a visible share of the time).
            value = run.item()
            if value == 0:
                return shortcut
            residual = self.residual(x, filters, "skipped")
            return F.relu(shortcut + (residual if value == 1 else value * residual))
        running = run.nonzero().squeeze(1)
        if len(running) == 0:
            return shortcut
        if len(running) == len(x):
            return F.relu(shortcut + _scaled(self.residual(x, filters, "skipped"), run))
        if filters is not None:
            filters = filters.index_select(0, running)
        residual = self.residual(_gather(x, running), filters, "skipped")
        executed = F.relu(_gather(shortcut, running) + _scaled(residual, run.index_select(0, running)))
        # Scatter back in place where that is safe: without autograd, into a shortcut that is a
        # new tensor (downsampling) or into an input the caller lets us overwrite.
        if torch.is_grad_enabled() or (shortcut is x and not overwrite_input):
            shortcut = shortcut.clone(memory_format=torch.preserve_format)
        return _scatter_(shortcut, running, executed)


def _scaled(residual: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
    """``run * residual`` per image; skipped when every decision is a constant 1 (0/1 decisions
    of running images), since a broadcast multiply costs a pass over the whole tensor. Decisions
    that need a gradient are always multiplied, so that the gradient reaches them."""
    if not run.requires_grad and _all_ones(run):
        return residual
    return run.to(residual.dtype).view(-1, 1, 1, 1) * residual


def _all_ones(x: torch.Tensor) -> bool:
    return torch.equal(x, torch.ones_like(x))   # one call; (x == 1).all() takes three


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


_NHWC_DIM = (0, 3, 1, 2)   # where each NCHW dimension sits in the NHWC view


def _gather(x: torch.Tensor, indices: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x.index_select(dim, indices)``, keeping a channels-last tensor channels-last: gathered on
    its NHWC view, each image (or each filter of a weight) is one contiguous block, which is much
    faster to copy than the strided gather ``index_select`` does on the NCHW view, and the
    convolutions get the memory format they want without a reordering copy."""
    if _channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(_NHWC_DIM[dim], indices).permute(0, 3, 1, 2)
    return x.index_select(dim, indices)


def _scatter_(out: torch.Tensor, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``out.index_copy_(0, images, rows)``, on the NHWC views when ``out`` is channels-last."""
    if _channels_last(out) and _channels_last(rows):
        out.permute(0, 2, 3, 1).index_copy_(0, images, rows.permute(0, 2, 3, 1))
        return out
    return out.index_copy_(0, images, rows)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions and the option-A shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    # Filter gates: the first convolution's outputs, which are the second's inputs.
    convs_and_gate_groups = (("conv1", None, 0), ("conv2", 0, None))

    def filter_groups(self) -> tuple[int, ...]:
        return (self.conv1.out_channels,)

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None,
                 mode: str = "masked") -> torch.Tensor:
        if filters is None:
            return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if mode == "masked" or self.training:
            hidden = F.relu(self.bn1(self.conv1(x))) * filters.to(x.dtype)[:, :, None, None]
            return self.bn2(self.conv2(hidden))
        keep, kept = _open_filters(filters)
        hidden = _masked(F.relu(_sliced_conv_bn(x, self.conv1, self.bn1, outputs=keep)), kept)
        return _sliced_conv_bn(hidden, self.conv2, self.bn2, inputs=keep)


class BottleneckBlock(ResidualBlock):
    """1x1 (reduce to ``width``) -> 3x3 (stride) -> 1x1 (expand to 4 x ``width``), for the deep CIFAR
    ResNets of depth 9n + 2 (ResNet-164); option-A shortcut like the basic block (He et al. use
    projections here, which add parameters and break skipped mode's shortcut >= 0). Filter gates:
    the outputs of the two inner convolutions (``width`` each)."""

    expansion = 4
    convs_and_gate_groups = (("conv1", None, 0), ("conv2", 0, 1), ("conv3", 1, None))

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        out_channels = self.expansion * width
        super().__init__(in_channels, out_channels, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def filter_groups(self) -> tuple[int, ...]:
        return (self.conv1.out_channels, self.conv2.out_channels)

    def residual(self, x: torch.Tensor, filters: torch.Tensor | None = None,
                 mode: str = "masked") -> torch.Tensor:
        if filters is None:
            hidden = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return self.bn3(self.conv3(hidden))
        first, second = filters.split(self.filter_groups(), dim=1)
        if mode == "masked" or self.training:
            hidden = F.relu(self.bn1(self.conv1(x))) * first.to(x.dtype)[:, :, None, None]
            hidden = F.relu(self.bn2(self.conv2(hidden))) * second.to(x.dtype)[:, :, None, None]
            return self.bn3(self.conv3(hidden))
        (keep1, kept1), (keep2, kept2) = _open_filters(first), _open_filters(second)
        hidden = _masked(F.relu(_sliced_conv_bn(x, self.conv1, self.bn1, outputs=keep1)), kept1)
        hidden = _masked(F.relu(_sliced_conv_bn(hidden, self.conv2, self.bn2, keep1, keep2)), kept2)
        return _sliced_conv_bn(hidden, self.conv3, self.bn3, inputs=keep2)


# Convolution kernels (oneDNN on CPUs, tensor cores on GPUs) compute output channels in blocks of
# 8 or 16 and a remainder on a slower path: at batch 1 on this course's CPU, 13 of 16 filters took
# 1.4x as long as all 16. Skipped mode pads the open filters it computes with closed ones (masked
# to zero) up to a multiple of FILTER_BLOCK; 1 computes exactly the open filters.
FILTER_BLOCK = 8


def _open_filters(filters: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The filters to compute: those some image of the batch keeps open, padded with closed ones
    to a multiple of ``FILTER_BLOCK``; and the gates on them. With none open, filter 0 stands in
    (its gates are all 0, so it is masked): convolutions keep a valid shape."""
    open_for_some = filters[0].ne(0) if len(filters) == 1 else filters.ne(0).any(0)
    keep = open_for_some.nonzero().squeeze(1)
    padding = min(-len(keep) % FILTER_BLOCK, len(open_for_some) - len(keep))
    if len(keep) == 0:
        keep = keep.new_zeros(1)
    elif padding:
        closed = open_for_some.logical_not().nonzero().squeeze(1)[:padding]
        keep = torch.cat([keep, closed]).sort().values   # in order: all of them is the whole layer
    return keep, filters.index_select(1, keep)


def _masked(hidden: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Multiply by the gates unless every one is 1 (batch 1 with 0/1 gates: nothing to mask)."""
    if _all_ones(kept):
        return hidden
    return hidden * kept.to(hidden.dtype)[:, :, None, None]


def _sliced_conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d,
                    inputs: torch.Tensor | None = None,
                    outputs: torch.Tensor | None = None) -> torch.Tensor:
    """Eval-mode ``bn(conv(x))`` with the convolution cut to input channels ``inputs`` and output
    filters ``outputs`` (None: all), so that only those are computed. Without autograd the
    batch norm is folded into the convolution (cached), which saves slicing its four statistics
    and running it: five small operations per convolution, each with a fixed cost that at batch 1
    adds up to a good part of a convolution's time."""
    if outputs is not None and len(outputs) == conv.out_channels:
        outputs = None   # every filter open: the whole convolution, nothing to slice
    if inputs is not None and len(inputs) == conv.in_channels:
        inputs = None
    if not torch.is_grad_enabled():
        weight, bias = folded_conv_bn(conv, bn)
        if outputs is not None:
            weight, bias = _gather(weight, outputs), bias.index_select(0, outputs)
        if inputs is not None:
            weight = _gather(weight, inputs, dim=1)
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


class CifarResNet(nn.Module):
    """Stem (3x3 conv, BN, ReLU) -> residual blocks in three stages -> global pool -> linear.

    ``forward(images, decisions=None, mode="masked")``: ``decisions`` is None (plain ResNet), a
    (batch, num_blocks) tensor (1 = run, 0 = skip) or a decider called before each block as
    ``decider(block_index, block_input)`` returning a (batch,) tensor, or None for "all run".
    ``filter_gates``: None or (batch, num_filter_gates) gates on the residual branches' inner
    filters, block after block (``filter_gate_slices`` says which columns each block takes).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, width: int = 16,
                 bottleneck: bool = False):
        super().__init__()
        self.depth = (9 if bottleneck else 6) * blocks_per_stage + 2
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, channels = [], width
        for stage in range(3):
            out_channels = width * 2 ** stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                if bottleneck:
                    blocks.append(BottleneckBlock(channels, out_channels, stride))
                    channels = BottleneckBlock.expansion * out_channels
                else:
                    blocks.append(BasicBlock(channels, out_channels, stride))
                    channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.stage_of_block = [k // blocks_per_stage for k in range(len(blocks))]
        offsets = [0]
        for block in blocks:
            offsets.append(offsets[-1] + block.gated_filters)
        self.filter_gate_slices = [slice(a, b) for a, b in zip(offsets, offsets[1:])]
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_filter_gates(self) -> int:
        """c: how many filter gates a GaterNet emits for this network."""
        return self.filter_gate_slices[-1].stop

    @property
    def downsampling_blocks(self) -> list[int]:
        """Indices of the blocks that change resolution or width (first of stages 2 and 3)."""
        return [k for k, block in enumerate(self.blocks) if block.downsamples]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The plain network's pooled features (batch, channels), before the classifier: what a
        gater or a policy network built from a ResNet looks at."""
        return self.head[:-1](self._run_blocks(images, None, "masked", None)[0])

    def forward(self, images: torch.Tensor,
                decisions: torch.Tensor | BlockDecider | None = None,
                mode: str = "masked", return_decisions: bool = False,
                filter_gates: torch.Tensor | None = None):
        """Logits (batch, num_classes); with ``return_decisions`` also the (batch, num_blocks)
        decisions taken (all ones for a plain forward pass)."""
        hidden, taken = self._run_blocks(images, decisions, mode, filter_gates)
        logits = self.head(hidden)
        if not return_decisions:
            return logits
        ones = torch.ones(len(images), device=images.device)
        return logits, torch.stack([ones if run is None else run.to(ones.dtype) for run in taken], 1)

    def _run_blocks(self, images, decisions, mode, filter_gates):
        """The last block's output and each block's decisions (None: every image ran it)."""
        check_images(images)
        check_mode(mode)
        batch = len(images)
        decider = as_decider(decisions, batch, self.num_blocks)
        if isinstance(decisions, torch.Tensor):
            check_decision_values(decisions, images, "the decisions")
        if filter_gates is not None:
            check_filter_gates(filter_gates, batch, self.num_filter_gates)
            check_decision_values(filter_gates, images, "the filter gates")
        hidden = self.stem(images)
        taken = []
        for index, block in enumerate(self.blocks):
            run = None
            if decider is not None:
                run = decider(index, hidden)
                if run is not None:
                    check_block_decisions(run, batch, index, images.device)
            filters = None if filter_gates is None else filter_gates[:, self.filter_gate_slices[index]]
            hidden = block(hidden, run, mode, filters, overwrite_input=True)   # our own intermediate
            taken.append(run)
        return hidden, taken


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
            or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected normalised float images of shape (batch, 3, height, width), "
                         f"got {shape}")


def check_block_decisions(run: torch.Tensor, batch: int, index: int,
                          device: torch.device | None = None) -> None:
    if not isinstance(run, torch.Tensor) or tuple(run.shape) != (batch,):
        shape = tuple(run.shape) if isinstance(run, torch.Tensor) else type(run).__name__
        raise ValueError(f"the decisions for block {index} must have shape (batch,) = ({batch},), "
                         f"got {shape}")
    if device is not None and run.device != device:
        raise ValueError(f"the decisions for block {index} are on {run.device}, the images on "
                         f"{device}: a decider must decide on the images' device")


def check_decision_values(values: torch.Tensor, images: torch.Tensor, what: str) -> None:
    """Decisions or filter gates given with the images: on the images' device (every mode alike,
    instead of a crash deep inside one of them) and finite (NaN would silently poison every
    logit). Checked once per forward pass, before the first block."""
    if values.device != images.device:
        raise ValueError(f"{what} are on {values.device}, the images on {images.device}: "
                         f"move them with .to({str(images.device)!r})")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{what} must be finite (1 = run, 0 = skip, another value scales the "
                         f"residual), got NaN or inf")


def check_filter_gates(gates: torch.Tensor, batch: int, count: int) -> None:
    if not isinstance(gates, torch.Tensor) or tuple(gates.shape) != (batch, count):
        shape = tuple(gates.shape) if isinstance(gates, torch.Tensor) else type(gates).__name__
        raise ValueError(f"filter gates must have shape (batch, num_filter_gates) = ({batch}, "
                         f"{count}), one per gated filter of the network, got {shape}")


def cifar_resnet(depth: int, num_classes: int = 10, width: int = 16,
                 bottleneck: bool = False) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers (8, 14, 20, 32, 44, 56, 110, ...), or
    with ``bottleneck`` blocks of depth 9n + 2 (164 for n = 18)."""
    per_block = 9 if bottleneck else 6
    if not isinstance(depth, int) or depth < per_block + 2 or (depth - 2) % per_block:
        examples = "11, 20, 29, 56, 164, ..." if bottleneck else "8, 14, 20, 32, 44, 56, 110, ..."
        raise ValueError(f"a CIFAR ResNet's depth must be {per_block}n + 2 with n >= 1 "
                         f"({examples}), got {depth!r}")
    return CifarResNet((depth - 2) // per_block, num_classes, width, bottleneck)
