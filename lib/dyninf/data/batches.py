"""Mini-batches straight from in-memory uint8 tensors: augmentation and normalisation as tensor ops.

No PIL and no worker processes in the training loop: the whole data set sits on the target device
as uint8 and each batch is cropped, flipped and normalised there.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator

import torch

# Used for CIFAR-100 too: its channel statistics differ by at most 0.02, which the first
# BatchNorm absorbs, and one normalisation keeps every notebook's input pipeline the same.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def normalize(images: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) in [0, 255] -> float32, per-channel standardised."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), "
                         f"got {images.dtype} {tuple(images.shape)}")
    mean, std = _channel_statistics(tuple(mean), tuple(std), images.device)
    return (images.float() / 255 - mean) / std


@functools.lru_cache(maxsize=None)
def _channel_statistics(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept per device: a new tensor from a Python list per batch would be a copy to the GPU that
    can make the host wait for it (the list is in pageable memory)."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
            torch.tensor(std, device=device).view(1, 3, 1, 1))


def model_inputs(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images as the course's networks take them at inference: on ``device``, normalised,
    channels-last (faster on CPUs and GPUs)."""
    return normalize(images.to(device)).contiguous(memory_format=torch.channels_last)


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  padding: int = 4) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to the input size at ``offsets`` (N, 2) = (row, column)
    in [0, 2 * padding], then mirror the images where ``flips`` (N,) is true."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)   # (N, H)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)    # (N, W)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows.view(n, 1, height, 1), cols.view(n, 1, 1, width)]


class Batches:
    """Iterate over (normalised float images, labels) batches of an in-memory data set.

    ``train=True`` shuffles, augments (4-pixel pad + random crop, horizontal flip) and drops the
    last incomplete batch; each epoch's order and augmentation depend only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one. ``shard=(k, n)``: the k-th of n equal
    parts of each of those batches (process k of n in a distributed run).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 train: bool, device: torch.device | str = "cpu", seed: int = 0,
                 channels_last: bool = True, shard: tuple[int, int] = (0, 1)):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        index, shards = shard
        if batch_size % shards or not 0 <= index < shards:
            raise ValueError(f"a batch of {batch_size} cannot be split into {shards} equal shards "
                             f"(shard {index}): the global batch must be a multiple of the processes")
        self.shard = shard
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        count = len(self.images) / self.batch_size
        return max(1, math.floor(count)) if self.train else math.ceil(count)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator) if self.train else torch.arange(n)
        offsets = torch.randint(0, 9, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        # drawn on the host (the same batches on every device), moved to the device once per
        # epoch: three copies per batch could each make the host wait for the GPU
        order, offsets, flips = (values.to(self.device) for values in (order, offsets[order], flips[order]))
        shard, shards = self.shard
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            # this process's part of the global batch (all of it for one process); a data set smaller
            # than one batch is one batch of all its images, split as evenly as it goes
            size = min(self.batch_size, n - start)
            part = slice(start + shard * size // shards, start + (shard + 1) * size // shards)
            index = order[part]
            images = self.images[index]
            if self.train:
                images = crop_and_flip(images, offsets[part], flips[part])
            images = normalize(images)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]

    def __iter__(self):
        return self.epoch(0)
