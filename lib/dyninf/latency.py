"""Wall-clock latency of a forward pass, measured with ``torch.utils.benchmark``."""
from __future__ import annotations

from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn
from torch.utils import benchmark

from dyninf.batches import normalize


def measure_latency(net: nn.Module, batch_size: int, *, decisions: torch.Tensor | None = None,
                    mode: str = "masked", device: torch.device | str = "cpu",
                    image_size: int = 32, min_run_time: float = 0.5,
                    images: torch.Tensor | None = None) -> float:
    """Median seconds for one eval-mode forward pass of a random batch of ``batch_size`` images,
    using all of PyTorch's threads (``benchmark.Timer`` defaults to one). ``images``: a real
    batch (normalised float, ``batch_size`` of them) to time instead, for deciders that look at
    the image: on random images they would decide differently."""
    device = torch.device(device)
    net = net.to(device).eval()
    if images is None:
        images = torch.randn(batch_size, 3, image_size, image_size)
    elif len(images) != batch_size:
        raise ValueError(f"expected a batch of {batch_size} images, got {tuple(images.shape)}")
    images = images.to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    kwargs = {"mode": mode}
    if decisions is not None:  # a DynamicNetwork takes its decisions from its own decider
        kwargs["decisions"] = decisions.to(device)
    timer = benchmark.Timer(
        stmt="with torch.no_grad(): net(images, **kwargs)",
        globals={"torch": torch, "net": net, "images": images, "kwargs": kwargs},
        num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def measure_training_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                          min_run_time: float = 2.0) -> float:
    """Mean seconds for one SGD step (forward, cross-entropy, backward, update) of ``model`` in
    train mode on a fixed batch. The mean, not the median: a random decider's cost varies from
    step to step, and an epoch pays the mean. ``model`` is trained by this, so pass a copy."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    timer = benchmark.Timer(stmt="step()", globals={"step": step},
                            num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).mean


def speedup_table(plain: nn.Module, net: nn.Module, images: torch.Tensor, batch_sizes: Iterable[int],
                  ideal_speedup: Callable[[torch.Tensor], float], label: str,
                  device: torch.device | str = "cpu", min_run_time: float = 0.5) -> pd.DataFrame:
    """Latency of a dynamic ``net`` in masked and in skipped mode against the ``plain`` network,
    at each batch size, on the first images of ``images`` (uint8 test images: a decider decides
    on what it sees, so random inputs would mislead). ``ideal_speedup(batch)`` gives the MACs
    ratio for those images; the table adds the measured speed-up and realized / ideal."""
    rows = []
    for batch_size in batch_sizes:
        batch = images[:batch_size]
        ideal = ideal_speedup(batch)
        inputs = normalize(batch)
        plain_seconds = measure_latency(plain, batch_size, device=device, images=inputs,
                                        min_run_time=min_run_time)
        for mode in ("masked", "skipped"):
            seconds = measure_latency(net, batch_size, mode=mode, device=device, images=inputs,
                                      min_run_time=min_run_time)
            rows.append({"batch": batch_size, "mode": f"{label} {mode}", "ms per batch": 1e3 * seconds,
                         "plain ms": 1e3 * plain_seconds, "speed-up": plain_seconds / seconds,
                         "ideal speed-up": ideal, "realized / ideal": plain_seconds / seconds / ideal})
    return pd.DataFrame(rows)
