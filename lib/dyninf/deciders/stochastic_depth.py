"""Stochastic depth (Huang et al., ECCV 2016): a random decider.

Block l of L survives with probability p_l = 1 - (l / L)(1 - p_L), decaying linearly from almost 1
to p_L. The paper trains with the residual unscaled and multiplies it by p_l at test time;
``torchvision.ops.stochastic_depth`` (used here) scales a surviving residual by 1 / p_l during
training instead and leaves the test-time network plain. Both give the same expected output.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import stochastic_depth

from dyninf.decisions import DeciderKind

SD_MODES = ("row", "batch")


def survival_probabilities(num_blocks: int, p_last: float = 0.5) -> torch.Tensor:
    """p_l = 1 - (l / L)(1 - p_L) for l = 1 ... L (the linear decay rule)."""
    if not 0 < p_last <= 1:
        raise ValueError(f"p_last (the last block's survival probability p_L) must be in (0, 1], "
                         f"got {p_last}")
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be positive, got {num_blocks}")
    layers = torch.arange(1, num_blocks + 1, dtype=torch.float64)
    return (1 - layers / num_blocks * (1 - p_last)).float()


class StochasticDepth(nn.Module):
    """Random block decisions while training; every block runs in eval mode.

    ``mode="row"`` draws a decision per image (masked execution: no time saved);
    ``mode="batch"`` draws one per block for the whole mini-batch, so with skipped execution a
    dropped block is not computed at all, which is where the paper's training speed-up comes from.
    A surviving block's decision is 1 / p_l (torchvision's scaling), a dropped one's 0.
    """

    kind = DeciderKind.TRAINING_ONLY

    def __init__(self, num_blocks: int, p_last: float = 0.5, mode: str = "batch"):
        super().__init__()
        if mode not in SD_MODES:
            raise ValueError(f"mode must be one of {SD_MODES}, got {mode!r}")
        self.mode, self.p_last = mode, p_last
        self.register_buffer("survival", survival_probabilities(num_blocks, p_last), persistent=False)

    @property
    def num_blocks(self) -> int:
        return len(self.survival)

    def expected_fraction_dropped(self) -> float:
        return float(1 - self.survival.mean())

    def macs_and_params(self) -> tuple[int, int]:
        """Nothing decides at test time (every block runs) and nothing is learned: (0, 0)."""
        return 0, 0

    def forward(self, block_index: int, block_input: torch.Tensor) -> torch.Tensor | float | None:
        if not self.training:
            return None
        drop = 1 - float(self.survival[block_index])
        if self.mode == "batch":
            # one draw for the whole batch, made on the host and returned as a number: skipped mode
            # then drops or runs the block without reading a decision back from the GPU
            return float(stochastic_depth(torch.ones(1), p=drop, mode="batch"))
        ones = torch.ones(len(block_input), device=block_input.device)
        return stochastic_depth(ones, p=drop, mode="row")
