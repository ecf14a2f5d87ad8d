"""Every training the course's notebooks do in a profile, in one list: what a dry run of a
profile's recipes trains, and what the time estimate of a profile counts.

    python -m dyninf.course.trainings --profile standard            # the estimate per training and notebook
    python -m dyninf.course.trainings --profile standard --train    # train them all here, timed
    python -m dyninf.course.trainings --profile quick --train --jobs 2   # two at a time, each on half the CPU threads
    torchrun --nproc_per_node=8 -m dyninf.course.trainings --profile paper --train   # each training on 8 GPUs

The estimate multiplies each training's steps by a step time measured on one H100 (each method's
per-epoch time at ResNet-32 on all of CIFAR-10, issue 16). It is an estimate, not a measurement
of the profile, and says so wherever it is shown.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from typing import Callable

import pandas as pd
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.data.cifar import ImageDataset, dataset_spec
from dyninf.deciders import Gater
from dyninf.training.distributed import processes
from dyninf.training.loop import TrainConfig
from dyninf.course.trained import (train_aig, train_baseline, train_blockdrop, train_gaternet, train_stochastic_depth,
                             train_wider)
from dyninf.utils.paths import runs_dir
from dyninf.course.profiles import PROFILES, Profile, get_profile
from dyninf.course.recipes import recipes_of, stochastic_depth_recipe
from dyninf.utils.devices import device_name

# Seconds per training step on one H100 (PyTorch 2.11, bf16, channels-last), ResNet-32 on all of
# CIFAR-10, measured at main 31c5ae7 as one epoch of each method's recipe then (issue 16): the
# epoch's seconds over its steps (390 at batch 128, 195 at 256), with a read-back per step.
H100_STEP_SECONDS = {"plain": 5.7 / 390, "SD": 5.8 / 390, "AIG": 11.2 / 390, "GaterNet": 9.1 / 390,
                     "BlockDrop curriculum": 3.9 / 195, "BlockDrop finetuning": 8.2 / 195}
MEASURED_DEPTH = 32
# Up to this batch a step costs what the measured one did (the GPU waits on kernel launches:
# ResNet-32's plain step took 14.8 ms at batch 128 and 14.6 ms at 512); beyond it, proportionally more.
LAUNCH_BOUND_BATCH = 512


@dataclass(frozen=True)
class Training:
    notebook: str                 # the first notebook that trains it (later ones load it)
    label: str
    depth: int                    # the trained network's depth (step time grows with it)
    # each phase's recipe, with whose measured step time it costs (a key of H100_STEP_SECONDS)
    phases: tuple[tuple[str, TrainConfig], ...]
    train: Callable[[ImageDataset], object]   # trains it (or loads it when cached)
    # the depth of the plain ResNet it starts from (finetunes or freezes), which must be trained
    # first; None when it starts from scratch
    starts_from: int | None = None


def plain_label(depth: int) -> str:
    """The label of the training of the plain ResNet of ``depth``."""
    return f"plain ResNet-{depth}"


def course_trainings(profile: Profile) -> list[Training]:
    """What notebooks 00-05 train in ``profile``, in the order they first train it (the profile's
    data set only: notebook 03's paper grid adds CIFAR-100 runs that are not listed)."""
    depth, recipes = profile.depth, recipes_of(profile)
    aig, gaternet, blockdrop = recipes.aig, recipes.gaternet, recipes.blockdrop
    gated_depth, _ = gaternet.gated_backbone(depth)
    aig_start, gaternet_start = (depth if recipe.finetune else None for recipe in (aig, gaternet))
    recipe = profile.train_config   # a schedule as the profile trains it (cut in a dry run)

    def plain(notebook, plain_depth, label=None, train=None):
        return Training(notebook, label or plain_label(plain_depth), plain_depth,
                        (("plain", recipe()),), train or partial(_baseline, profile, plain_depth))

    trainings = [
        plain("00", depth),
        Training("01", f"stochastic depth ResNet-{depth}", depth, (("SD", recipe(stochastic_depth_recipe(profile))),),
                 partial(_stochastic_depth, profile)),
        *(Training("02", f"AIG, t = {target:g}", depth, (("AIG", recipe(aig.config)),),
                   partial(_aig, profile, target), aig_start) for target in aig.targets),
        *(Training("03", f"GaterNet, L1 weight {weight:g}", gated_depth,
                   (("GaterNet", recipe(gaternet.config)),), partial(_gaternet, profile, weight),
                   gaternet_start)
          for weight in gaternet.sparsity_weights),
    ]
    if profile.recipes != "quick":   # notebook 03: GaterNet's control, a plain ResNet as large
        trainings.append(plain("03", depth, "ResNet-Wider", partial(_wider, profile)))
    for blockdrop_depth in (depth, *blockdrop.extra_depths):
        if blockdrop_depth != depth:
            trainings.append(plain("04", blockdrop_depth))
        trainings.append(Training("04", f"BlockDrop ResNet-{blockdrop_depth}", blockdrop_depth,
                                  (("BlockDrop curriculum", recipe(blockdrop.curriculum)),
                                   ("BlockDrop finetuning", recipe(blockdrop.finetune))),
                                  partial(_blockdrop, profile, blockdrop_depth), blockdrop_depth))
    labels = {t.label for t in trainings}
    return trainings + [plain("05", d) for d in recipes.frontier_depths if plain_label(d) not in labels]


def _baseline(profile, depth, data):
    return train_baseline(profile, data, depth, progress=False)


def _stochastic_depth(profile, data):
    return train_stochastic_depth(profile, data, config=stochastic_depth_recipe(profile), progress=False)


def _aig(profile, target, data):
    return train_aig(profile, data, target, progress=False)


def _gaternet(profile, weight, data):   # on the recipe's backbone: the baseline, or one from scratch
    return train_gaternet(profile, data, weight, progress=False)


def _wider(profile, data):
    return train_wider(profile, wider_parameters(profile, len(data.classes)), data, progress=False)


def wider_parameters(profile: Profile, classes: int = 10) -> int:
    """Notebook 03's budget for ResNet-Wider: the plain backbone's parameters and the gater's."""
    recipe = recipes_of(profile).gaternet
    backbone = cifar_resnet(profile.depth, classes)
    gater = Gater.for_backbone(backbone, depth=recipe.gater_depth, width=recipe.gater_width,
                               bottleneck=recipe.bottleneck)
    return network_cost(backbone).total_params + gater.macs_and_params()[1]


def _blockdrop(profile, depth, data):
    return train_blockdrop(profile, data, progress=False, depth=depth)


def estimated_seconds(training: Training, train_images: int) -> float:
    """Seconds of training on one H100 estimated from ``H100_STEP_SECONDS``: steps times the
    method's step time, scaled by the network's layers (launch-bound: time goes with kernels)
    and, beyond ``LAUNCH_BOUND_BATCH``, by the batch. Evaluation and notebook work not counted."""
    layers = (training.depth - 2) / (MEASURED_DEPTH - 2)
    return sum(config.epochs * math.floor(train_images / config.batch_size) * H100_STEP_SECONDS[kind]
               * layers * max(1.0, config.batch_size / LAUNCH_BOUND_BATCH) for kind, config in training.phases)


def estimate_table(profile: Profile) -> pd.DataFrame:
    """Each training of ``profile`` with its epochs, batch sizes and estimated H100 minutes."""
    spec = dataset_spec(profile.dataset)
    images = (profile.train_per_class or spec.per_class["train"]) * len(spec.classes)
    rows = [{"notebook": t.notebook, "training": t.label,
             "epochs": " + ".join(str(config.epochs) for _, config in t.phases),
             "batch": " + ".join(str(config.batch_size) for _, config in t.phases),
             "estimated minutes": estimated_seconds(t, images) / 60} for t in course_trainings(profile)]
    return pd.DataFrame(rows)


def shown_minutes(minutes: float) -> str:
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.0f} h"


def readme_row(profile: Profile) -> str:
    """The README's row of estimated training time per notebook (00-05) and in all."""
    table = estimate_table(profile)
    per_notebook = table.groupby("notebook")["estimated minutes"].sum()
    cells = [shown_minutes(m) for m in per_notebook] + [shown_minutes(table["estimated minutes"].sum())]
    return f"| `{profile.name}`, estimated training on one H100 | " + " | ".join(cells) + " |"


def train_all(profile: Profile, data: ImageDataset | None = None, jobs: int = 1) -> pd.DataFrame:
    """Train (or load) every training of ``profile``, as the notebooks would: the estimate table
    with each one's measured minutes beside it. A stopped run resumes where it was. ``jobs`` > 1:
    that many at a time, in processes of their own, each with its share of this process's threads
    (on 2 CPU cores two one-thread trainings finish sooner than one after the other on two
    threads: small convolutions use a second thread poorly); a training that starts from a plain
    ResNet waits for it."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    group = processes()
    if group.world > 1 and jobs > 1:
        raise ValueError(f"under torchrun ({group.world} processes) every process takes its share of each "
                         f"training, one training after the other: jobs must be 1, got {jobs}")
    trainings = course_trainings(profile)
    if group.world > 1:   # every recipe's batch must split evenly: said before hours of training, not in one
        uneven = sorted({config.batch_size for training in trainings for _, config in training.phases
                         if config.batch_size % group.world})
        if uneven:
            raise ValueError(f"the {profile.name} profile's batches of {', '.join(map(str, uneven))} images cannot be "
                             f"split into {group.world} equal parts: run it in a number of processes that divides "
                             f"every batch of its recipes")
        if group.writes:
            print(f"[trainings] {group.world} processes (torchrun): each trains on 1/{group.world} of every batch",
                  flush=True)
    if profile.epoch_cap is not None and group.writes:   # a dry run trains afresh: a cached run would hide a broken recipe
        shutil.rmtree(runs_dir() / profile.runs, ignore_errors=True)
    if group.world > 1:
        torch.distributed.barrier()   # the others start once rank 0 has cleared the dry run's folder
    data = data if data is not None else profile.load_data()   # decoded once, not by each worker
    table = estimate_table(profile)
    if jobs == 1:
        measured = [_timed(training, data) for training in trainings]
    else:
        measured = _train_in_parallel(trainings, data, jobs, table["estimated minutes"].tolist())
    return table.assign(**{"measured minutes": measured})


def _timed(training: Training, data: ImageDataset) -> float:
    start = time.perf_counter()
    training.train(data)
    minutes = (time.perf_counter() - start) / 60
    if processes().writes:
        print(f"[trainings] {training.label}: {minutes:.1f} min", flush=True)
    return minutes


_worker_data: ImageDataset | None = None   # each worker process's copy of the profile's data


def _start_worker(threads: int, data: ImageDataset) -> None:
    global _worker_data
    torch.set_num_threads(threads)
    _worker_data = data
    threading.Thread(target=_exit_with_parent, args=(multiprocessing.parent_process(),), daemon=True).start()


def _exit_with_parent(parent) -> None:
    """A worker ends when the process that started it ends, killed too (a kill cannot be caught,
    so the parent cannot stop its workers itself): the parent's sentinel becomes ready when it is
    gone. Its last finished epoch is checkpointed; a new run resumes from there."""
    if parent is not None:
        parent.join()
        os._exit(1)


def _train_in_worker(training: Training) -> float:
    return _timed(training, _worker_data)


def _train_in_parallel(trainings: list[Training], data: ImageDataset, jobs: int,
                       estimated: list[float] | None = None) -> list[float]:
    """Each training's minutes, trained ``jobs`` at a time; one that starts from a plain ResNet
    is started once no training of that plain ResNet is waiting or running. Of those that can
    start, the longest ``estimated`` first: a long one left for the end would run alone while
    the other cores idle."""
    threads = max(1, torch.get_num_threads() // jobs)
    print(f"[trainings] {len(trainings)} trainings, {jobs} at a time, {threads} thread(s) each", flush=True)
    estimated = estimated or [0.0] * len(trainings)
    waiting = sorted(range(len(trainings)), key=lambda i: -estimated[i])   # stable: ties keep the course's order
    running, measured = {}, {}

    def plain_unfinished(depth: int) -> bool:
        return any(trainings[i].label == plain_label(depth) for i in (*waiting, *running.values()))

    # spawn: a fresh interpreter per worker (forking a process that has run PyTorch can hang)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(threads, data)) as pool:
        while waiting or running:
            for index in list(waiting):
                start = trainings[index].starts_from
                if len(running) < jobs and (start is None or not plain_unfinished(start)):
                    waiting.remove(index)
                    running[pool.submit(_train_in_worker, trainings[index])] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                measured[running.pop(future)] = future.result()   # a failed training raises here
    return [measured[i] for i in range(len(trainings))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A profile's trainings: the H100 estimate, or train them all.")
    parser.add_argument("--profile", default="standard", choices=sorted(PROFILES))
    parser.add_argument("--train", action="store_true",
                        help="train every one on this machine's device (cached runs are loaded), then "
                             "`make course PROFILE=...` finds them all; with the times measured")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --train: the profile's recipes on 2 images per class, one epoch each")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --train: this many trainings at a time, each with its share of the "
                             "CPU threads (default 1)")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, device=None if args.train else "cpu")
    profile = profile.dry_run() if args.dry_run else profile
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    start = time.perf_counter()
    table = train_all(profile, jobs=args.jobs) if args.train else estimate_table(profile)
    if not processes().writes:   # under torchrun, rank 0 reports for all
        return 0
    print(table.round(2).to_string(index=False))
    print(f"\nin all: {table['estimated minutes'].sum():.1f} minutes of training on one H100 (estimated); "
          f"as the README shows it:\n{readme_row(profile)}")
    if args.train:
        side_by_side = f", {(time.perf_counter() - start) / 60:.1f} min wall-clock with {args.jobs} jobs" if args.jobs > 1 else ""
        print(f"measured here: {table['measured minutes'].sum():.1f} minutes of training{side_by_side} "
              f"({device_name(profile.device)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
