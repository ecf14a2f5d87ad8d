"""Multiply-accumulates (MACs) and parameters: per block, in total, and per image as spent.

MACs are counted from each convolution's and linear layer's shapes during one forward pass
(forward hooks), which also tells how cost splits across blocks; the tests cross-check the totals
against ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC). BatchNorm,
ReLU, pooling and additions are not counted, as in the papers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkCost:
    """Per-image MACs and parameter counts of a backbone's stem, blocks and head."""

    stem_macs: int
    block_macs: tuple[int, ...]
    head_macs: int
    stem_params: int
    block_params: tuple[int, ...]
    head_params: int
    # Filter gates (GaterNet): each block's gate groups, and per convolution of the block its MACs
    # with the gate groups on its inputs and outputs (None: not gated).
    block_filter_groups: tuple[tuple[int, ...], ...] = ()
    block_conv_macs: tuple[tuple[tuple[int, int | None, int | None], ...], ...] = ()

    @property
    def total_macs(self) -> int:
        return self.stem_macs + sum(self.block_macs) + self.head_macs

    @property
    def total_params(self) -> int:
        return self.stem_params + sum(self.block_params) + self.head_params

    def spent_macs(self, decisions: torch.Tensor | None = None,
                   filter_gates: torch.Tensor | None = None, filter_block: int | None = None) -> torch.Tensor:
        """MACs each image spends given its (batch, num_blocks) decisions (1 = run, 0 = skip)
        and/or its (batch, num_filter_gates) filter gates: the stem and the head always run, a
        skipped block costs nothing, and a convolution's MACs scale with the open fraction of
        its gated inputs times that of its gated outputs. Values must lie in [0, 1]; any value
        but 0 runs the block (or opens the filter) in full, as in skipped mode.

        ``filter_block``: None counts exactly the open filters (the ideal); a number counts what
        skipped mode computes for one image on a device that slices filters, with that
        ``dyninf.network.skipping.FILTER_BLOCK``: each gate group's open filters rounded up to a multiple
        of it, at most the whole group and at least one filter (it stands in, masked to zero,
        when none is open)."""
        if decisions is None and filter_gates is None:
            raise ValueError("give decisions, filter gates or both")
        if filter_block is not None and (not isinstance(filter_block, int) or filter_block < 1):
            raise ValueError(f"filter_block must be None or an integer >= 1, got {filter_block!r}")
        blocks = len(self.block_macs)
        if decisions is not None and (decisions.dim() != 2 or decisions.shape[1] != blocks):
            raise ValueError(f"decisions must have shape (batch, {blocks}), "
                             f"got {tuple(decisions.shape)}")
        for values, what in ((decisions, "decisions"), (filter_gates, "filter gates")):
            if values is not None and not bool(((values >= 0) & (values <= 1)).all()):
                raise ValueError(f"to count MACs the {what} must lie in [0, 1] (0 = skipped, "
                                 f"otherwise run), got values from {values.min().item():g} to "
                                 f"{values.max().item():g}")
        reference = decisions if decisions is not None else filter_gates
        batch, device = len(reference), reference.device
        if filter_gates is None:
            per_block = torch.tensor(self.block_macs, dtype=torch.float64, device=device).expand(batch, -1)
        else:
            per_block = self._block_macs_with_filters(filter_gates, batch, filter_block)
        if decisions is not None:
            per_block = per_block * decisions.ne(0)
        return self.stem_macs + self.head_macs + per_block.sum(1)

    def _block_macs_with_filters(self, filter_gates: torch.Tensor, batch: int,
                                 filter_block: int | None) -> torch.Tensor:
        """(batch, num_blocks): each block's MACs with only its open filters computed (as
        ``spent_macs`` counts them for ``filter_block``)."""
        sizes = [size for groups in self.block_filter_groups for size in groups]
        if tuple(filter_gates.shape) != (batch, sum(sizes)):
            raise ValueError(f"filter gates must have shape ({batch}, {sum(sizes)}), "
                             f"got {tuple(filter_gates.shape)}")

        def open_fraction(gates: torch.Tensor) -> torch.Tensor:
            computed = gates.ne(0).sum(1).to(torch.float64)
            if filter_block is not None:
                computed = (torch.ceil(computed / filter_block) * filter_block).clamp(1, gates.shape[1])
            return computed / gates.shape[1]

        open_fractions = iter(open_fraction(g) for g in filter_gates.split(sizes, dim=1))
        columns = []
        for groups, convs in zip(self.block_filter_groups, self.block_conv_macs):
            fraction = [next(open_fractions) for _ in groups]
            ones = torch.ones(batch, dtype=torch.float64, device=filter_gates.device)
            columns.append(sum(macs * (ones if into is None else fraction[into])
                               * (ones if out is None else fraction[out]) for macs, into, out in convs))
        return torch.stack(columns, 1)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one convolution or linear layer for the output it produced (per image)."""
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return per_image * module.in_channels // module.groups * kernel
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    raise TypeError(f"no MAC count for {type(module).__name__}")


def network_cost(net: nn.Module, image_size: int = 32) -> NetworkCost:
    """Count the MACs of ``net`` (stem, blocks, head) for one image of ``image_size`` squared."""
    parts = {"stem": net.stem, **{f"block{k}": b for k, b in enumerate(net.blocks)}, "head": net.head}
    macs = dict.fromkeys(parts, 0)
    module_macs: dict[nn.Module, int] = {}
    handles = []
    for part, container in parts.items():
        for module in container.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                def count(module, inputs, output, part=part):
                    module_macs[module] = layer_macs(module, output)
                    macs[part] += module_macs[module]
                handles.append(module.register_forward_hook(count))
    parameter = next(net.parameters())
    was_training = net.training
    try:
        net.eval()
        # with autograd on, every layer runs as its module (the hooks see it); without, inference
        # folds each batch norm into its convolution, a functional call that no module hook sees
        with torch.enable_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=parameter.device))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    params = {part: sum(p.numel() for p in container.parameters()) for part, container in parts.items()}
    blocks = [f"block{k}" for k in range(len(net.blocks))]
    return NetworkCost(macs["stem"], tuple(macs[b] for b in blocks), macs["head"],
                       params["stem"], tuple(params[b] for b in blocks), params["head"],
                       tuple(block.filter_groups() for block in net.blocks),
                       tuple(tuple((module_macs[getattr(block, conv)], into, out)
                                   for conv, _, into, out in block.conv_bn_pairs)
                             for block in net.blocks))
