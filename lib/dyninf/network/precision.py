"""The precision the course computes in on each device, and how closely two computations of the
same function (masked and skipped mode) can agree in it.

On CUDA, training and inference run under bf16 autocast (tensor cores; about 2x the float32
speed); on the CPU everything stays float32. Masked and skipped mode compute the same function
with different operations (a whole batch or the gathered images, batch norm apart or folded into
the convolution), so in bf16 they agree only to bf16's rounding: a comparison that must hold on
every device is sized by the precision it ran in, not by float32's.
"""
from __future__ import annotations

import torch

# Largest |masked - skipped| relative to the logits' scale (at least 1) that rounding alone
# explains. float32: measured differences are about 1e-6; bf16 (8 significant bits, rounding
# error 2^-8 per operation): measured 0.7% of the scale on a ResNet-20 under CPU bf16 autocast,
# so 2^-5 (3.1%) leaves a factor of four for other kernels (cuDNN's) and deeper networks.
RELATIVE_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2 ** -5}


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """What the course's convolutions compute in on ``device``: bf16 on CUDA, else float32."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def autocast(device: torch.device | str):
    """The course's mixed precision on ``device``: bf16 autocast on CUDA, nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


def logit_tolerance(dtype: torch.dtype, logits: torch.Tensor) -> float:
    """How far two computations of ``logits`` in ``dtype`` may differ from rounding alone."""
    if dtype not in RELATIVE_TOLERANCE:
        raise ValueError(f"no tolerance for {dtype}; known: {', '.join(map(str, RELATIVE_TOLERANCE))}")
    scale = max(1.0, logits.abs().max().item()) if logits.numel() else 1.0
    return RELATIVE_TOLERANCE[dtype] * scale
