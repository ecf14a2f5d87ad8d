"""Training in several processes, as `torchrun` launches them (one per GPU, or several on a CPU).

Under ``torchrun --nproc_per_node=N`` (and ``--nnodes``, with torchrun's rendezvous) every process
runs the same training: each takes its shard of every global batch (the batches one process would
see, in the same order, split into N equal parts), PyTorch's DistributedDataParallel averages the
gradients, and only the process of rank 0 writes the run's folder. BatchNorm normalises each
process's shard by itself (per process): SyncBatchNorm runs only on GPUs, and per-process statistics
are what the course's single-process runs would give with N ghost batches. Launched without
torchrun, a process is the only one of its run and nothing here changes what it does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dyninf.network.dynamic import DynamicNetwork


@dataclass(frozen=True)
class Processes:
    """This process's place among those training one run: its rank and how many there are."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's checkpoints and history (rank 0 only)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` as this process uses it: its own GPU of the machine's (LOCAL_RANK) under torchrun."""
        if self.world > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device


def processes() -> Processes:
    """The processes of this run: one, unless torchrun launched this one (``WORLD_SIZE`` above 1),
    in which case the process group is joined here the first time (NCCL between GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():   # NCCL's collectives (a barrier too) run on the current GPU
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank)


class TrainingPass(nn.Module):
    """``pass_`` of ``model`` as a module's forward, so that DistributedDataParallel, which wraps a
    module's forward only, sees a dynamic network's training pass (``forward_with_probabilities``)."""

    def __init__(self, model: nn.Module, pass_):
        super().__init__()
        self.model, self.pass_ = model, pass_

    def forward(self, images: torch.Tensor):
        return self.pass_(self.model, images)


def synchronised(model: nn.Module, pass_, processes: Processes):
    """The training pass to run: ``pass_(model, images)`` itself for one process, else the same pass
    through DistributedDataParallel (which makes every process start from rank 0's weights)."""
    if processes.world == 1:
        return lambda images: pass_(model, images)
    from torch.nn.parallel import DistributedDataParallel

    # a dynamic network can leave parameters without a gradient in a step (a skipped block's)
    return DistributedDataParallel(TrainingPass(model, pass_), find_unused_parameters=isinstance(model, DynamicNetwork))
