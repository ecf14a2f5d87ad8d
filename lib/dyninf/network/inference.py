"""Inference on uint8 images: eval-mode logits in batches, and test loss and accuracy. Apart from
the training loop, so that a decider that predicts (AIG's threshold calibration) and the dynamic
networks do not import it."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.data.batches import model_inputs
from dyninf.network.precision import autocast

# forward(model, images, **kwargs) -> logits
Forward = Callable[..., torch.Tensor]


def plain_forward(model: nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    return model(images, **kwargs)


PER_IMAGE_ARGUMENTS = ("decisions", "filter_gates")   # forward arguments with a row per image


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 500,
            device: torch.device | str | None = None, forward: Forward | None = None,
            **forward_kwargs) -> torch.Tensor:
    """Eval-mode logits (on the CPU) for uint8 images; ``forward_kwargs`` go to the model, and
    per-image tensors among them (``decisions``, ``filter_gates``) are sliced along with the
    images and moved to the device."""
    if not isinstance(images, torch.Tensor) or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected at least one uint8 image, of shape (N, 3, H, W); got {shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device) if device else next(model.parameters()).device
    forward = forward or plain_forward
    model.eval()
    per_image = {name: forward_kwargs.pop(name) for name in PER_IMAGE_ARGUMENTS
                 if isinstance(forward_kwargs.get(name), torch.Tensor)}
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = model_inputs(images[start:start + batch_size], device)
        forward_kwargs.update({name: values[start:start + batch_size].to(device)
                               for name, values in per_image.items()})
        with autocast(device):
            outputs.append(forward(model, batch, **forward_kwargs).float().cpu())
        if not bool(torch.isfinite(outputs[-1]).all()):   # read back anyway: no extra wait
            raise FloatingPointError(f"the network's logits for images {start} to {start + len(batch) - 1} "
                                     f"hold NaN or inf (its weights or its decisions are not finite)")
    return torch.cat(outputs)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             **predict_kwargs) -> dict[str, float]:
    """Test loss and accuracy (in [0, 1]) of ``model`` on uint8 ``images``."""
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"expected one label per image, shape ({len(images)},), got {shape}")
    logits = predict(model, images, **predict_kwargs)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}
