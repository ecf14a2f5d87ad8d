"""ConvNet-AIG (Veit & Belongie, ECCV 2018): a light gate before each residual block.

Each gate looks at its block's input (global average pooling -> FC -> BatchNorm -> ReLU -> FC)
and gives two logits, (skip, run). Training samples a hard decision with the straight-through
Gumbel-softmax (forward: 0 or 1; backward: the softmax's gradient); the noise keeps gates from
collapsing to always-on or always-off. Evaluation takes the larger logit, without noise.
Downsampling blocks always run.

The official code keeps sampling with noise at test time. Deterministic test-time gates are what
skipped execution needs, but after a short run the gates are still undecided (open probabilities
near t for most images), and the larger logit then runs a layer far more or less often than t.
``noise`` lets a schedule anneal the noise to 0 at the end of training, so that the target-rate
loss acts on the very decisions used at test time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from dyninf.backbones import CifarResNet

SKIP, RUN = 0, 1


def check_target_rate(target: float) -> None:
    if not 0 < target <= 1:
        raise ValueError(f"the target rate t must be in (0, 1], got {target}")


class Gate(nn.Module):
    """Logits (batch, 2) = (skip, run) from a block's input (batch, channels, H, W)."""

    def __init__(self, channels: int, hidden: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 2)
        # As in the official code: tiny last-layer weights and biases (skip 0.1, run 2.0), so a gate
        # starts open for about softmax(0.1, 2)[run] = 87% of samples, leaving the pretrained
        # or freshly initialised network intact while the gates learn.
        nn.init.normal_(self.fc2.weight, std=0.001)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([0.1, 2.0]))

    def forward(self, block_input: torch.Tensor) -> torch.Tensor:
        pooled = block_input.mean(dim=(2, 3))
        return self.fc2(F.relu(self.bn(self.fc1(pooled))))


class AIGGates(nn.Module):
    """The decider: one gate per non-downsampling block of ``backbone``."""

    def __init__(self, backbone: "CifarResNet", hidden: int = 16):
        super().__init__()
        self.num_blocks = backbone.num_blocks
        self.gated_blocks = [k for k in range(backbone.num_blocks)
                             if k not in backbone.downsampling_blocks]
        self.gates = nn.ModuleDict({str(k): Gate(backbone.blocks[k].conv1.in_channels, hidden)
                                    for k in self.gated_blocks})
        # Scale of the Gumbel noise in training: 1 is the paper's sampler; annealing it to 0
        # trains the deterministic test-time decisions themselves (a course addition, see below).
        self.noise = 1.0

    def forward(self, block_index: int, block_input: torch.Tensor) -> torch.Tensor | None:
        gate = self.gates[str(block_index)] if str(block_index) in self.gates else None
        if gate is None:
            return None  # downsampling blocks always run
        logits = gate(block_input).float()
        if not self.training:
            return (logits[:, RUN] > logits[:, SKIP]).to(block_input.dtype)
        if self.noise > 0:
            # softmax((logits / s + g) * s) = softmax(logits + s * g): Gumbel noise scaled by s
            return F.gumbel_softmax(logits / self.noise, tau=1 / self.noise, hard=True)[:, RUN]
        soft = logits.softmax(dim=1)  # no noise: the eval decision, with the softmax's gradient
        hard = (logits[:, RUN] > logits[:, SKIP]).to(soft.dtype)
        return hard - soft[:, RUN].detach() + soft[:, RUN]

    def macs_and_params(self) -> tuple[int, int]:
        """Per-image MACs of all gates (their linear layers; pooling is not counted) and their
        parameter count."""
        macs = sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        return macs, sum(p.numel() for p in self.parameters())


def target_rate_loss(decisions: torch.Tensor, target: float, gated_blocks: list[int]) -> torch.Tensor:
    """L_target = (1/L) sum_l (z_l - t)^2 over the gated layers, with z_l the fraction of the
    mini-batch that executes layer l."""
    check_target_rate(target)
    rates = decisions[:, gated_blocks].mean(dim=0)
    return ((rates - target) ** 2).mean()
