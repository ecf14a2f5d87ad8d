"""BlockDrop (Wu, Nagarajan et al., CVPR 2018): a policy network looks at the image once and picks,
in one shot, which residual blocks to run; trained with REINFORCE and a self-critical baseline.

Policy: a small ResNet (built by the same backbone builder) -> K sigmoid outputs s. Training
samples u ~ Bernoulli(s') with s' = alpha s + (1 - alpha)(1 - s), so that every block keeps a
chance of being flipped (exploration never stops); evaluation keeps block k iff s_k >= 0.5.
Reward: R(u) = 1 - (|u|_0 / K)^2 for a correct prediction, -gamma for a wrong one.
Loss: -(R(u) - R(u~)) sum_k log pi(u_k) - beta H(pi), with u~ the thresholded (greedy) policy.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli

from dyninf.network.backbones import CifarResNet, cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.decisions import DeciderKind


def check_alpha(alpha: float) -> None:
    if not isinstance(alpha, (int, float)) or not 0.5 < alpha <= 1:
        raise ValueError(f"alpha (BlockDrop's probability bound) must be in (0.5, 1], got {alpha!r}: "
                         f"0.5 would make every decision a coin flip, and below it the policy "
                         f"would be inverted")


def bounded_probabilities(probabilities: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """s' = alpha s + (1 - alpha)(1 - s): keeps every keep-probability in [1 - alpha, alpha]."""
    check_alpha(alpha)
    return alpha * probabilities + (1 - alpha) * (1 - probabilities)


def check_penalty(penalty: float) -> None:
    if not isinstance(penalty, (int, float)) or not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"the penalty gamma must be a finite number >= 0 (a wrong prediction is "
                         f"rewarded -gamma), got {penalty!r}")


def blockdrop_reward(correct: torch.Tensor, blocks_used: torch.Tensor, num_blocks: int,
                     penalty: float) -> torch.Tensor:
    """R = 1 - (blocks_used / K)^2 where the prediction is ``correct``, else -``penalty`` (gamma)."""
    check_penalty(penalty)
    sparsity = 1 - (blocks_used.to(torch.float32) / num_blocks) ** 2
    return torch.where(correct, sparsity, torch.full_like(sparsity, -float(penalty)))


def policy_gradient_loss(log_probability: torch.Tensor, reward: torch.Tensor,
                         baseline_reward: torch.Tensor, entropy: torch.Tensor | None = None,
                         entropy_weight: float = 0.0) -> torch.Tensor:
    """REINFORCE with a baseline, averaged over the batch: -(R(u) - R(u~)) log pi(u) - beta H.
    The advantage is a constant for the gradient (it is detached). Without ``entropy_weight``
    (beta) there is no bonus, whether or not ``entropy`` is given."""
    advantage = (reward - baseline_reward).detach()
    loss = -(advantage * log_probability).mean()
    if entropy_weight:
        if entropy is None:
            raise ValueError(f"an entropy weight ({entropy_weight}) needs the policy's entropy, got none")
        loss = loss - entropy_weight * entropy.mean()
    return loss


def curriculum_step(epoch: int, num_blocks: int, blocks_per_epoch: int = 1) -> int:
    """How many of the last blocks the policy decides in ``epoch`` (counted from 0): the paper adds
    one block per epoch (t = epoch + 1) until it decides all K; the first K - t always run."""
    if blocks_per_epoch < 1:
        raise ValueError(f"blocks_per_epoch must be >= 1, got {blocks_per_epoch}")
    return min(num_blocks, blocks_per_epoch * (epoch + 1))


class BlockDropPolicy(nn.Module):
    """Images (batch, 3, H, W) -> block decisions (batch, K) and the keep-probabilities s (batch, K)
    they come from: sampled while training, thresholded at 0.5 in eval mode. Only the last
    ``decided_blocks`` are the policy's (the curriculum); the others are 1. The policy keeps no
    state from a call: the loss gets the probabilities with the decisions (``TrainingStep``).
    """

    kind = DeciderKind.BLOCKS   # DynamicNetwork passes the decisions to the backbone, and both to the losses

    def __init__(self, num_blocks: int, depth: int = 8, width: int = 16, alpha: float = 0.8):
        super().__init__()
        check_alpha(alpha)
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks, self.alpha = num_blocks, alpha
        self.decided_blocks = num_blocks
        self.extractor = cifar_resnet(depth, num_classes=num_blocks, width=width)
        # Start undecided but leaning to "keep": the pretrained backbone's full path is right
        # most often, so the first greedy policies are accurate and the baseline is informative.
        nn.init.normal_(self.extractor.head[-1].weight, std=0.01)
        nn.init.constant_(self.extractor.head[-1].bias, 1.0)

    @property
    def decided_blocks(self) -> int:
        """How many of the last blocks the policy decides (the curriculum's t); the others run."""
        return self._decided_blocks

    @decided_blocks.setter
    def decided_blocks(self, count: int) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= self.num_blocks:
            raise ValueError(f"decided_blocks must be an integer from 0 to the network's {self.num_blocks} "
                             f"blocks, got {count!r}")
        self._decided_blocks = count

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """s: each block's keep-probability (batch, K)."""
        return torch.sigmoid(self.extractor(images).float())

    def _with_fixed_blocks(self, decisions: torch.Tensor) -> torch.Tensor:
        """The first K - decided_blocks decisions set to 1 (curriculum)."""
        fixed = self.num_blocks - self.decided_blocks
        if fixed:
            decisions = decisions.clone()
            decisions[:, :fixed] = 1
        return decisions

    def greedy(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Thresholded decisions u~ = 1(s >= 0.5) for keep-probabilities s."""
        return self._with_fixed_blocks((probabilities >= 0.5).to(probabilities.dtype))

    def distribution(self, probabilities: torch.Tensor) -> Bernoulli:
        """pi: independent Bernoulli(s') decisions, with s' the bounded keep-probabilities."""
        return Bernoulli(probs=bounded_probabilities(probabilities, self.alpha))

    def log_probability(self, probabilities: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        """log pi(u) (batch,) of ``decisions`` under the keep-probabilities they were drawn from,
        over the decided blocks only (the fixed ones were not the policy's choice)."""
        return self.distribution(probabilities).log_prob(decisions)[:, self.num_blocks - self.decided_blocks:].sum(1)

    def entropy(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The decided blocks' summed Bernoulli entropy (batch,) under the bounded keep-probabilities;
        the official code's bonus differs (-s' log s' over all blocks), and ``dyninf.course.recipes``
        says why this one is used."""
        return self.distribution(probabilities).entropy()[:, self.num_blocks - self.decided_blocks:].sum(1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decisions (sampled while training, greedy in eval mode) and the keep-probabilities."""
        probabilities = self.probabilities(images)
        if not self.training:
            return self.greedy(probabilities), probabilities
        with torch.no_grad():
            sampled = self.distribution(probabilities).sample()
        return self._with_fixed_blocks(sampled), probabilities

    def macs_and_params(self) -> tuple[int, int]:
        """Per-image MACs and the parameter count of the policy network."""
        return network_cost(self.extractor).total_macs, sum(p.numel() for p in self.parameters())

    @classmethod
    def for_backbone(cls, backbone: "CifarResNet", **kwargs) -> "BlockDropPolicy":
        return cls(backbone.num_blocks, **kwargs)
