"""The one training loop every notebook uses.

SGD with (Nesterov) momentum and weight decay; a one-cycle schedule for short runs or the papers'
step schedule; extra loss terms through hooks; bf16 autocast on CUDA; channels_last memory layout;
tqdm progress; a checkpoint after every epoch, from which an interrupted run resumes by itself;
a per-epoch history returned as a table and written as JSON. Under torchrun, several processes
train one run (``dyninf.training.distributed``).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dyninf.data.batches import Batches
from dyninf.data.cifar import ImageDataset
from dyninf.network.dynamic import DynamicNetwork
from dyninf.network.inference import evaluate
from dyninf.training.distributed import Processes, processes, synchronised
from dyninf.utils.devices import default_device
from dyninf.utils.io import atomic_torch_save, atomic_write_text, folder_lock
from dyninf.utils.paths import shown_path
from dyninf.network.precision import autocast

SCHEDULES = ("onecycle", "step")
OPTIMIZERS = ("sgd", "adam")
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
_REPORTED_RUNS: set[Path] = set()   # run folders whose line this process has printed


@dataclass(frozen=True)
class TrainingStep:
    """What an extra loss or a logged metric sees of one training step."""
    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    # a DynamicNetwork's decisions in this forward pass, with their gradient (block decisions, or
    # filter gates for a decider of kind FILTERS); None for a network without a decider
    decisions: torch.Tensor | None
    # the keep-probabilities a policy drew its decisions from (kind BLOCKS: BlockDrop), with their
    # gradient; None for other networks
    probabilities: torch.Tensor | None = None


# extra loss or logged metric: step -> scalar; epoch start: (model, epoch) -> values to log, or None
ExtraLoss = Callable[[TrainingStep], torch.Tensor]
EpochStart = Callable[[nn.Module, int], "Mapping[str, float | int | str] | None"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 0.1                 # peak rate for one-cycle, initial rate for step
    schedule: str = "onecycle"
    milestones: tuple[float, ...] = (0.5, 0.75)   # step schedule: fractions of the epochs
    gamma: float = 0.1              # step schedule: factor at each milestone
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = True
    decider_lr_factor: float = 1.0  # learning-rate multiplier for a DynamicNetwork's decider
    seed: int = 0
    optimizer: str = "sgd"          # "adam" (BlockDrop's policy training) ignores momentum

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive, got {self}")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def at_batch_size(self, batch_size: int) -> "TrainConfig":
        """This recipe at another batch size, with the learning rate scaled so that an epoch moves
        the weights about as far: linearly for SGD (Goyal et al. 2017, "Accurate, large minibatch
        SGD", which needs a warm-up: one-cycle's first 30% is one), by the square root for Adam
        (Malladi et al. 2022, "On the SDEs and scaling rules for adaptive gradient algorithms")."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if self.schedule != "onecycle" and self.optimizer == "sgd" and batch_size > self.batch_size:
            raise ValueError("a larger batch with SGD needs a warm-up, which only the one-cycle "
                             f"schedule has; this recipe's schedule is {self.schedule!r}")
        ratio = batch_size / self.batch_size
        return replace(self, batch_size=batch_size,
                       lr=self.lr * (ratio if self.optimizer == "sgd" else math.sqrt(ratio)))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD or Adam; a model's ``decider`` (if any) gets ``decider_lr_factor`` times the learning
    rate. Frozen parameters (``requires_grad=False``) are left out."""
    decider = getattr(model, "decider", None)
    decider_params = {id(p) for p in decider.parameters()} if isinstance(decider, nn.Module) else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in decider_params], "lr": config.lr}]
    if decider_params:
        groups.append({"params": list(decider.parameters()), "lr": config.lr * config.decider_lr_factor})
    # Every group stays (a frozen one empty), so that the scheduler's and a checkpoint's group
    # count does not depend on what is frozen.
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-iteration learning-rate schedule over the whole run."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total)
    milestones = [round(f * config.epochs) * steps_per_epoch for f in config.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=config.gamma)


PROGRESS_STYLES = ("bars", "lines")


def progress_style() -> str:
    """How training shows progress: ``bars`` (tqdm, the default, live in Jupyter and terminals) or
    ``lines`` (one line per training, no bars), from ``$DYNINF_PROGRESS``. The course runner asks for
    lines: a notebook executed by papermill keeps every bar's first frame as an output, which the
    executed copy and its HTML then show as rows of "0%|"."""
    style = os.environ.get("DYNINF_PROGRESS", "bars")
    if style not in PROGRESS_STYLES:
        raise ValueError(f"DYNINF_PROGRESS must be one of {PROGRESS_STYLES}, got {style!r}")
    return style


def fit(model: nn.Module, data: ImageDataset, config: TrainConfig,
        run_dir: str | os.PathLike | None = None, *, device: torch.device | str | None = None,
        extra_losses: Mapping[str, ExtraLoss] | None = None,
        metrics: Mapping[str, ExtraLoss] | None = None, on_epoch_start: EpochStart | None = None,
        progress: bool = True, description: str = "training") -> pd.DataFrame:
    """Train ``model`` on ``data`` and return its per-epoch history.

    With ``run_dir``, a checkpoint is written after every epoch and a later call with the same
    configuration resumes from it (or, if the run is complete, loads the trained weights and
    returns the stored history at once). A different configuration there is an error.
    ``extra_losses`` (each called with the step's ``TrainingStep``: the model, the batch, the logits and
    a dynamic network's decisions) are added to the cross-entropy and logged under their names;
    ``metrics``, called the same way, are only logged (batch means, like the losses);
    ``on_epoch_start(model, epoch)`` (epoch counted from 0) sets per-epoch state such as a
    schedule or a curriculum step, so it must depend on ``epoch`` alone for resume to be exact;
    what it returns (a dict, or None) goes into that epoch's history row and progress bar.

    A run folder is locked while it trains: a second process asked for the same run waits for
    the first, then loads what it trained.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    group = processes()   # under torchrun: this process's shard, and rank 0 alone locks and writes the run
    with folder_lock(run_dir, "training this run") if run_dir is not None and group.writes else nullcontext():
        if group.world > 1:
            torch.distributed.barrier()   # the others read the run folder once rank 0 holds it
        return _fit(model, data, config, run_dir, device, extra_losses, metrics, on_epoch_start, progress,
                    description, group)


def _fit(model, data, config, run_dir, device, extra_losses, metrics, on_epoch_start, progress,
         description, group: Processes) -> pd.DataFrame:
    device = group.device(torch.device(device) if device else default_device())
    extra_losses = dict(extra_losses or {})
    metrics = dict(metrics or {})
    model.to(device=device, memory_format=torch.channels_last)
    train_batches = Batches(data.train_images, data.train_labels, config.batch_size, train=True,
                            device=device, seed=config.seed, shard=(group.rank, group.world))
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_batches))
    history: list[dict] = []
    if run_dir is not None and (run_dir / CHECKPOINT).exists():
        history = _resume(run_dir, config, model, optimizer, scheduler, device)
    else:
        seed_everything(config.seed)

    trained_before = len(history)
    training_pass = synchronised(model, training_forward, group)
    progress = progress and group.writes   # one progress report for all the processes
    bars = progress and progress_style() == "bars"
    epochs = tqdm(range(config.epochs), desc=description, initial=len(history),
                  total=config.epochs, disable=not bars, unit="epoch")
    for epoch in range(len(history), config.epochs):
        epoch_info = dict((on_epoch_start(model, epoch) if on_epoch_start else None) or {})
        epochs.set_postfix(epoch_info)
        row = {**epoch_info, **_train_one_epoch(model, train_batches, epoch, optimizer, scheduler,
                                                extra_losses, metrics, device, bars, training_pass, group)}
        scores = evaluate(model, data.test_images, data.test_labels, device=device)
        row.update(test_loss=scores["loss"], test_accuracy=scores["accuracy"])
        history.append(row)
        epochs.update(1)
        epochs.set_postfix(epoch_info, loss=f"{row['train_loss']:.3f}",
                           acc=f"{row['train_accuracy']:.3f}", test_acc=f"{row['test_accuracy']:.3f}")
        if run_dir is not None and group.writes:
            _save_checkpoint(run_dir, config, model, optimizer, scheduler, history)
    epochs.close()
    model.eval()
    loaded = trained_before == config.epochs
    # a plain line that stays readable in executed notebooks, where bars do not; a run already
    # reported is not reported again when loaded (five networks finetuned from one baseline load it five times)
    if progress and not (loaded and run_dir is not None and run_dir.resolve() in _REPORTED_RUNS):
        last = history[-1]
        print(f"{description}: {'loaded from ' + shown_path(run_dir) if loaded else 'trained'}"
              f"; {config.epochs} epoch{'s' if config.epochs != 1 else ''}, test accuracy {100 * last['test_accuracy']:.2f}%, "
              f"{sum(row['seconds'] for row in history):.0f} s of training")
        if run_dir is not None:
            _REPORTED_RUNS.add(run_dir.resolve())
    return pd.DataFrame(history)


def training_forward(model: nn.Module, images: torch.Tensor) -> tuple:
    """The logits, and a dynamic network's decisions and its policy's keep-probabilities in this
    pass, for the hooks (None where the network has none)."""
    if isinstance(model, DynamicNetwork):
        return model.forward_with_probabilities(images)
    return model(images), None, None


def _train_one_epoch(model, batches, epoch, optimizer, scheduler, extra_losses, metrics,
                     device, progress, training_pass=None, group: Processes = Processes()) -> dict:
    """One pass over the training batches. The running sums (loss, correct predictions, each
    logged term; weighted by batch size) stay on the device and are read back once, at the end:
    a read per step (``loss.item()``) would make the host wait for the GPU at every step, so it
    could never queue the next step's kernels while the GPU runs this one."""
    model.train()
    training_pass = training_pass or synchronised(model, training_forward, Processes())   # one process's pass
    logged = [*extra_losses, *metrics]
    sums = torch.zeros(2 + len(logged), device=device)
    seen = 0
    start = time.perf_counter()
    bar = tqdm(batches.epoch(epoch), total=len(batches), desc=f"epoch {epoch + 1}", leave=False,
               disable=not progress, unit="batch")
    for images, labels in bar:
        with autocast(device):
            logits, decisions, probabilities = training_pass(images)
            loss = F.cross_entropy(logits, labels)
            step = TrainingStep(model, images, labels, logits, decisions, probabilities)
            extras = {name: term(step) for name, term in extra_losses.items()}
            total = loss + sum(extras.values())
            with torch.no_grad():
                extras.update({name: term(step) for name, term in metrics.items()})
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        lr = next(g["lr"] for g in optimizer.param_groups if g["params"])  # the rate this batch used
        scheduler.step()
        n = len(labels)
        seen += n
        with torch.no_grad():
            step_values = [loss.float() * n, (logits.argmax(1) == labels).sum().float(),
                           *(torch.as_tensor(extras[name], device=device).float() * n for name in logged)]
            sums += torch.stack(step_values)
    if group.world > 1:   # the epoch's sums over every process's shard
        torch.distributed.all_reduce(sums)
        seen *= group.world
    means = [total / seen for total in sums.tolist()]   # the epoch's one read back to the host
    if not all(math.isfinite(value) for value in means):
        named = dict(zip(["train_loss", "train_accuracy", *logged], means))
        raise FloatingPointError(
            f"training diverged in epoch {epoch + 1}: {named}. Its checkpoint was not written; try "
            f"a smaller learning rate (lr) or a longer warm-up, then run again (it resumes from the "
            f"last finished epoch)")
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": means[0], "train_accuracy": means[1],
           "seconds": time.perf_counter() - start}
    row.update(zip(logged, means[2:]))
    return row


def _save_checkpoint(run_dir, config, model, optimizer, scheduler, history) -> None:
    state = {"config": asdict(config), "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "history": history, "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    atomic_torch_save(state, run_dir / CHECKPOINT)
    atomic_write_text(run_dir / HISTORY, json.dumps(history, indent=1))


class DamagedRunError(RuntimeError):
    """A run folder whose checkpoint cannot be read."""


class ForeignRunError(ValueError):
    """A run folder whose checkpoint holds another network, or settings of another version."""


def _read_checkpoint(run_dir: Path, device=None) -> dict:
    try:
        return torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=True)
    except Exception as error:   # a truncated or foreign file: PyTorch's own message names neither
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedRunError(
            f"the checkpoint of the run in {run_dir} cannot be read ({reason}); the file is damaged "
            f"(an interrupted copy, a full disk?). Delete the folder {run_dir} and run again to "
            f"train it from scratch") from error


def saved_config(run_dir: Path, saved: dict) -> TrainConfig:
    """The training configuration a checkpoint holds, or an error naming the run folder and the
    fields this version of TrainConfig does not know."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ForeignRunError(f"the checkpoint in {run_dir} was trained with settings this version does not "
                              f"know ({', '.join(unknown)}; TrainConfig has {', '.join(sorted(known))}): another "
                              f"version of dyninf wrote it. Load it with that version, or delete the folder "
                              f"{run_dir} to train it again with this one")
    return TrainConfig(**saved)


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], run_dir: Path) -> None:
    """``model.load_state_dict(weights)``, or an error naming the run folder and the first
    difference (PyTorch's own lists every tensor)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    shapes = [(name, tuple(weights[name].shape), tuple(own[name].shape)) for name in own
              if name in weights and weights[name].shape != own[name].shape]
    if missing or unexpected or shapes:
        if shapes:
            name, saved, expected = shapes[0]
            first = f"{name} is {saved} there and {expected} here ({len(shapes)} tensors differ in shape)"
        else:
            first = (f"{len(missing)} tensors missing there (first: {missing[0]})" if missing else
                     f"{len(unexpected)} tensors this network lacks (first: {unexpected[0]})")
        raise ForeignRunError(f"the checkpoint in {run_dir} holds a network other than this one: {first} "
                              f"(another depth, width or decider). Delete that folder, or choose another "
                              f"run folder, to train this network")
    model.load_state_dict(weights)


def _resume(run_dir, config, model, optimizer, scheduler, device) -> list[dict]:
    state = _read_checkpoint(run_dir, device)
    saved = saved_config(run_dir, state["config"])
    if saved != config:
        raise ValueError(f"{run_dir} holds a run with another configuration ({saved}); delete that "
                         f"folder or choose another run_dir to train with {config}")
    load_weights(model, state["model"], run_dir)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"].cpu())
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    history = list(state["history"])
    _repair_history(run_dir, history)
    return history


def _repair_history(run_dir: Path, history: list[dict]) -> None:
    """history.json as the checkpoint has it: a kill between the checkpoint's rename and the
    history's leaves the history an epoch behind."""
    try:
        written = json.loads((run_dir / HISTORY).read_text())
    except (OSError, ValueError):
        written = None
    if written != json.loads(json.dumps(history)):
        atomic_write_text(run_dir / HISTORY, json.dumps(history, indent=1))


def load_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A run's per-epoch history, as its checkpoint has it (history.json may lag it by an epoch
    after a kill; the next ``fit`` on the run, under its lock, rewrites it)."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).exists():
        return pd.DataFrame(list(_read_checkpoint(run_dir, "cpu")["history"]))
    return pd.DataFrame(json.loads((run_dir / HISTORY).read_text()))
