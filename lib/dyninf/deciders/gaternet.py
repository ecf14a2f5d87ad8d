"""GaterNet (Chen et al., CVPR 2019): one global gater looks at the image once and emits a binary
gate for every gated filter of the backbone (the inner filters of each residual branch).

Gater = a ResNet feature extractor (built by the same backbone builder) -> FC to a bottleneck of
width b -> BatchNorm -> ReLU -> FC to c logits -> Improved SemHash -> c gates.
"""
from __future__ import annotations

import torch
from torch import nn

from dyninf.network.backbones import CifarResNet, cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.network.folding import folded_linear_bn, inferring
from dyninf.decisions import DeciderKind, check_batch_for_batch_norm


def saturated_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """g_alpha(x) = max(0, min(1, 1.2 sigmoid(x) - 0.1)): reaches exactly 0 and 1."""
    return torch.clamp(1.2 * torch.sigmoid(x) - 0.1, 0.0, 1.0)


def improved_semhash(logits: torch.Tensor, training: bool) -> torch.Tensor:
    """Improved SemHash (Kaiser & Bengio 2018, as GaterNet uses it), written here because no
    library provides it. Training: add noise e ~ N(0, 1); for a random half of the samples the
    gates are g_alpha(x + e), for the other half g_beta(x + e) = 1(x + e > 0) with g_alpha's
    gradient (straight-through). Evaluation: g_beta(x), no noise: exactly 0 or 1, deterministic."""
    if not training:
        return (logits > 0).to(logits.dtype)
    noisy = logits + torch.randn_like(logits)
    soft = saturated_sigmoid(noisy)
    hard = (noisy > 0).to(soft.dtype) + soft - soft.detach()
    use_soft = torch.rand(len(logits), 1, device=logits.device) < 0.5
    return torch.where(use_soft, soft, hard)


class Gater(nn.Module):
    """Images (batch, 3, H, W) -> filter gates (batch, num_gates) for a backbone."""

    kind = DeciderKind.FILTERS   # DynamicNetwork passes its output as the backbone's filter gates

    def __init__(self, num_gates: int, depth: int = 20, bottleneck: int = 256, width: int = 16,
                 open_logit: float = 1.0):
        super().__init__()
        if num_gates < 1 or bottleneck < 1:
            raise ValueError(f"num_gates and bottleneck must be positive, got {num_gates}, {bottleneck}")
        self.num_gates = num_gates
        self.extractor = cifar_resnet(depth, width=width)
        features = self.extractor.head[-1].in_features
        self.extractor.head[-1] = nn.Identity()   # the extractor's classifier is not used
        self.fc1 = nn.Linear(features, bottleneck)
        self.bn = nn.BatchNorm1d(bottleneck)
        self.fc2 = nn.Linear(bottleneck, num_gates)
        # Gates start open at test time (logit > 0), so finetuning starts from the intact
        # pretrained backbone. Not much further: with the training noise a logit of 1 stays open
        # for 84% of the draws, and g_alpha is not yet flat there (it saturates beyond 2.4), so
        # the L1 term has a gradient from the first step.
        nn.init.normal_(self.fc2.weight, std=0.01)
        nn.init.constant_(self.fc2.bias, open_logit)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        check_batch_for_batch_norm(self, len(images), "GaterNet's gater")
        features = self.extractor.features(images)
        if not inferring(self):
            return self.fc2(torch.relu(self.bn(self.fc1(features))))
        weight, bias = folded_linear_bn(self.fc1, self.bn)   # as the backbone folds its own
        return self.fc2(torch.addmm(bias, features, weight.t()).relu_())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return improved_semhash(self.logits(images).float(), self.training)

    def macs_and_params(self) -> tuple[int, int]:
        """Per-image MACs of the gater (extractor and both linear layers) and its parameter count."""
        linear = self.fc1.in_features * self.fc1.out_features + self.fc2.in_features * self.fc2.out_features
        return network_cost(self.extractor).total_macs + linear, sum(p.numel() for p in self.parameters())

    @classmethod
    def for_backbone(cls, backbone: "CifarResNet", **kwargs) -> "Gater":
        return cls(backbone.num_filter_gates, **kwargs)


def gate_sparsity_loss(gates: torch.Tensor) -> torch.Tensor:
    """||G(x)||_1 / c, averaged over the batch: the fraction of open gates."""
    if gates.dim() != 2:
        raise ValueError(f"expected gates of shape (batch, num_gates), got {tuple(gates.shape)}")
    return gates.abs().sum(dim=1).mean() / gates.shape[1]
