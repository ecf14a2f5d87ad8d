"""Adversarial examples: the fast gradient sign method (Goodfellow et al., ICLR 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.data.batches import CIFAR10_MEAN, CIFAR10_STD, normalize


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float,
         batch_size: int = 500, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised adversarial images: each pixel moves by ``epsilon`` (on the [0, 1] intensity
    scale) in the direction that increases the model's loss, then is clipped to valid pixels."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be non-negative, got {epsilon}")
    device = torch.device(device) if device else next(model.parameters()).device
    model.eval()
    std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    adversarial = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size].to(device)).requires_grad_(True)
        loss = F.cross_entropy(model(x), labels[start:start + batch_size].to(device))
        gradient, = torch.autograd.grad(loss, x)
        moved = x.detach() + epsilon / std * gradient.sign()
        adversarial.append(torch.max(torch.min(moved, high), low).cpu())
    return torch.cat(adversarial)
