"""The decision protocol: what the backbone asks before each residual block, and decisions given as
a tensor. At the bottom of the library (it imports only torch): the backbone and every decider use it."""
from __future__ import annotations

import enum
from typing import Callable, Union

import torch

# A decider is called as decider(block_index, block_input) and returns a (batch,) tensor:
# 1 = run block ``block_index`` for that image, 0 = skip it (other values scale the residual),
# a number (float) when every image gets the same decision and the host knows it (stochastic
# depth's batch mode: skipped mode then needs to read nothing back; AIG's gates for one image on a
# CPU, which read it back themselves and say so with ``numbers_read_back = True``), or None when
# every image runs it. Local gates (AIG) look at ``block_input``; global deciders (BlockDrop, a
# fixed tensor) ignore it.
BlockDecider = Callable[[int, torch.Tensor], Union[torch.Tensor, float, None]]


class DeciderKind(enum.Enum):
    """How a dynamic network calls its decider and what the decider returns; each decider module
    states its kind in a ``kind`` attribute."""
    PER_BLOCK = "per block"            # decider(block_index, block_input) -> (batch,), before each block (AIG)
    TRAINING_ONLY = "training only"    # per block while training; at test time every block runs (stochastic depth)
    # decider(images) -> (decisions, keep-probabilities), both (batch, num_blocks), once, before the
    # backbone (BlockDrop's policy: the decisions are drawn from the probabilities, which its loss needs)
    BLOCKS = "blocks"
    FILTERS = "filters"                # decider(images) -> (batch, num_filter_gates), once (GaterNet)

    @property
    def decides_once(self) -> bool:
        """Global: called once with the images before the backbone runs, not before each block."""
        return self in (DeciderKind.BLOCKS, DeciderKind.FILTERS)


def decider_kind(decider: object) -> DeciderKind:
    """``decider.kind``, or a clear error for a decider that does not state it."""
    kind = getattr(decider, "kind", None)
    if not isinstance(kind, DeciderKind):
        raise TypeError(f"a dynamic network's decider states how it decides in a `kind` attribute, one of "
                        f"{[k.name for k in DeciderKind]} (dyninf.decisions.DeciderKind); "
                        f"{type(decider).__name__} has {kind!r}")
    return kind


class FixedDecisions:
    """Decisions known before the forward pass: a (batch, num_blocks) tensor."""

    def __init__(self, decisions: torch.Tensor, batch: int, num_blocks: int):
        if decisions.dim() != 2 or tuple(decisions.shape) != (batch, num_blocks):
            raise ValueError(f"decisions must have shape (batch, num_blocks) = "
                             f"({batch}, {num_blocks}), got {tuple(decisions.shape)}")
        self.decisions = decisions

    def __call__(self, block_index: int, block_input: torch.Tensor) -> torch.Tensor:
        return self.decisions[:, block_index]


def as_decider(decisions: Union[None, torch.Tensor, BlockDecider], batch: int,
               num_blocks: int) -> BlockDecider | None:
    """None (run everything), a (batch, num_blocks) tensor, or a decider, as a decider."""
    if decisions is None or callable(decisions) and not isinstance(decisions, torch.Tensor):
        return decisions
    if isinstance(decisions, torch.Tensor):
        return FixedDecisions(decisions, batch, num_blocks)
    raise TypeError(f"decisions must be None, a (batch, num_blocks) tensor or a decider "
                    f"called as decider(block_index, block_input); got {type(decisions).__name__}")


def random_decisions(batch: int, num_blocks: int, keep: float, seed: int = 0) -> torch.Tensor:
    """Independent Bernoulli(``keep``) run/skip decisions, (batch, num_blocks), as float 0/1."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, num_blocks), float(keep)), generator=generator)


def check_batch_for_batch_norm(module: torch.nn.Module, batch: int, what: str) -> None:
    """A clear error for a training batch of one image where ``what`` (a module with a BatchNorm
    over per-image vectors) needs at least two: the batch's statistics are its normalisation."""
    if module.training and batch < 2:
        raise ValueError(f"{what} trains on batches of at least 2 images (its BatchNorm normalises each "
                         f"unit over the batch), got {batch}: use a larger batch, or call .eval() to "
                         f"run it on one image")
