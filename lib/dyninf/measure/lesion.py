"""Lesion studies (Veit et al., NeurIPS 2016): delete blocks from a trained network and measure.

A deletion is just a decision of 0 for that block, for every image, executed in skipped mode:
the same forward pass as everything else in the course, no surgery on the model.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from dyninf.network.inference import evaluate


def lesion_decisions(num_images: int, num_blocks: int, deleted: list[int]) -> torch.Tensor:
    """(num_images, num_blocks) decisions that run every block except those in ``deleted``."""
    decisions = torch.ones(num_images, num_blocks)
    decisions[:, list(deleted)] = 0
    return decisions


def lesion_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, deleted: list[int],
                    **predict_kwargs) -> float:
    """Test accuracy of ``net`` (a backbone) with the blocks in ``deleted`` removed."""
    decisions = lesion_decisions(len(images), net.num_blocks, deleted)
    return evaluate(net, images, labels, decisions=decisions, mode="skipped",
                    **predict_kwargs)["accuracy"]


def single_block_lesions(net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         **predict_kwargs) -> pd.DataFrame:
    """Accuracy with each block deleted in turn: columns block, downsampling, accuracy."""
    return pd.DataFrame([{"block": k, "downsampling": k in net.downsampling_blocks,
                          "accuracy": lesion_accuracy(net, images, labels, [k], **predict_kwargs)}
                         for k in range(net.num_blocks)])


def random_lesions(net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   candidates: list[int], draws: int = 5, seed: int = 0,
                   **predict_kwargs) -> pd.DataFrame:
    """Accuracy after deleting k random blocks among ``candidates``, for k = 0 ... all of them,
    ``draws`` random sets per k (one for k = 0 and k = all): columns k, draw, deleted, accuracy."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(len(candidates) + 1):
        for draw in range(draws if 0 < k < len(candidates) else 1):
            chosen = torch.randperm(len(candidates), generator=generator)[:k]
            deleted = sorted(candidates[i] for i in chosen.tolist())
            rows.append({"k": k, "draw": draw, "deleted": deleted,
                         "accuracy": lesion_accuracy(net, images, labels, deleted, **predict_kwargs)})
    return pd.DataFrame(rows)


def random_paths_like(kept: torch.Tensor, num_blocks: int, seed: int = 0) -> torch.Tensor:
    """(N, num_blocks) decisions in which image i keeps ``kept[i]`` blocks chosen uniformly at
    random: BlockDrop's "RandomK" baseline, which spends exactly what a policy spent per image."""
    kept = torch.as_tensor(kept)
    if kept.dim() != 1 or ((kept < 0) | (kept > num_blocks) | (kept != kept.round())).any():
        raise ValueError(f"kept must be a 1-d tensor of whole numbers of blocks in [0, {num_blocks}]")
    generator = torch.Generator().manual_seed(seed)
    # the blocks in a random order per image; keep the first kept[i] of them
    ranks = torch.rand(len(kept), num_blocks, generator=generator).argsort(1).argsort(1)
    return (ranks < kept.view(-1, 1).to(ranks.dtype)).float()
