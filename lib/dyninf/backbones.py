"""He et al.'s CIFAR ResNets with gateable residual blocks and two execution modes.

Every block computes ``relu(shortcut(x) + residual(x))``. Given per-image decisions ``run``
(1 = run, 0 = skip; any other value runs the block with its residual scaled by that value, as
stochastic depth's 1/p does) a block computes ``relu(shortcut(x) + run * residual(x))``, either

* ``mode="masked"``: for the whole batch; differentiable in ``run``, for training; skipped images
  still cost their full compute; or
* ``mode="skipped"``: the residual branch runs only on the images whose decision is not 0
  (gathered, then scattered back); a block that no image runs costs nothing.

Both give the same outputs in eval mode: block inputs come out of a ReLU and the shortcut only
subsamples and zero-pads, so ``shortcut(x) >= 0`` and ``relu(shortcut(x)) == shortcut(x)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dyninf.deciders.base import BlockDecider, as_decider

MODES = ("masked", "skipped")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class ResidualBlock(nn.Module):
    """A residual block that can be skipped per image; subclasses define the two branches."""

    downsamples: bool

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, run: torch.Tensor | None = None,
                mode: str = "masked") -> torch.Tensor:
        if run is None:
            return F.relu(self.shortcut(x) + self.residual(x))
        if mode == "masked":
            return F.relu(self.shortcut(x) + run.to(x.dtype).view(-1, 1, 1, 1) * self.residual(x))
        return self._forward_skipped(x, run)

    def _forward_skipped(self, x: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        running = run.nonzero().squeeze(1)
        if len(running) == 0:
            return shortcut
        if len(running) == len(x):
            return F.relu(shortcut + run.to(x.dtype).view(-1, 1, 1, 1) * self.residual(x))
        weight = run.index_select(0, running).to(x.dtype).view(-1, 1, 1, 1)
        executed = F.relu(shortcut.index_select(0, running)
                          + weight * self.residual(x.index_select(0, running)))
        return shortcut.index_copy(0, running, executed)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions; the shortcut subsamples and zero-pads channels (He et al.'s option A,
    parameter-free, so a skipped downsampling block still yields a valid output)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.downsamples = stride != 1 or in_channels != out_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsamples:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class CifarResNet(nn.Module):
    """Stem (3x3 conv, BN, ReLU) -> residual blocks in three stages -> global pool -> linear.

    ``forward(images, decisions=None, mode="masked")``: ``decisions`` is None (plain ResNet), a
    (batch, num_blocks) tensor (1 = run, 0 = skip) or a decider called before each block as
    ``decider(block_index, block_input)`` returning a (batch,) tensor, or None for "all run".
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.depth = 6 * blocks_per_stage + 2
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, channels = [], width
        for stage in range(3):
            out_channels = width * 2 ** stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.stage_of_block = [k // blocks_per_stage for k in range(len(blocks))]
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def downsampling_blocks(self) -> list[int]:
        """Indices of the blocks that change resolution or width (first of stages 2 and 3)."""
        return [k for k, block in enumerate(self.blocks) if block.downsamples]

    def forward(self, images: torch.Tensor,
                decisions: torch.Tensor | BlockDecider | None = None,
                mode: str = "masked", return_decisions: bool = False):
        """Logits (batch, num_classes); with ``return_decisions`` also the (batch, num_blocks)
        decisions taken (all ones for a plain forward pass)."""
        check_images(images)
        check_mode(mode)
        batch = len(images)
        decider = as_decider(decisions, batch, self.num_blocks)
        hidden = self.stem(images)
        taken = []
        for index, block in enumerate(self.blocks):
            run = None
            if decider is not None:
                run = decider(index, hidden)
                if run is not None:
                    check_block_decisions(run, batch, index)
            hidden = block(hidden, run, mode)
            taken.append(run)
        logits = self.head(hidden)
        if not return_decisions:
            return logits
        ones = torch.ones(batch, device=images.device)
        return logits, torch.stack([ones if run is None else run.to(ones.dtype) for run in taken], 1)


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 \
            or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected normalised float images of shape (batch, 3, height, width), "
                         f"got {shape}")


def check_block_decisions(run: torch.Tensor, batch: int, index: int) -> None:
    if not isinstance(run, torch.Tensor) or tuple(run.shape) != (batch,):
        shape = tuple(run.shape) if isinstance(run, torch.Tensor) else type(run).__name__
        raise ValueError(f"the decisions for block {index} must have shape (batch,) = ({batch},), "
                         f"got {shape}")


def cifar_resnet(depth: int, num_classes: int = 10, width: int = 16) -> CifarResNet:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 layers (8, 14, 20, 32, 44, 56, 110, ...)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet's depth must be 6n + 2 with n >= 1 "
                         f"(8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
    return CifarResNet((depth - 2) // 6, num_classes, width)
