"""Named settings that every notebook's papermill parameter ``profile`` selects.

* ``quick``: the default and what CI runs; a laptop CPU (2 cores suffice), a class-balanced CIFAR-10
  subset, ResNet-20, a few epochs: every notebook in 4-6.5 minutes on 2 cores.
* ``standard``: one GPU, all of CIFAR-10, ResNet-32; sized for about 12 minutes for the whole course on
  one H100 (``dyninf.course.trainings`` estimates it from measured step times; not yet run end to end).
* ``paper``: the papers' depth and schedule; hours to days on one GPU.
* ``tiny``: quick's recipes on 10 images per class for one epoch, for tests (student copies run as
  handed out, nbval, the browser test); its numbers mean nothing and no claim is asserted on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from dyninf.data.cifar import ImageDataset, dataset_spec, load_cifar
from dyninf.training.loop import TrainConfig
from dyninf.utils.devices import default_device


@dataclass(frozen=True)
class Profile:
    name: str
    needs: str                      # hardware and time, stated in every notebook's first cell
    depth: int                      # the baseline ResNet's depth
    train_per_class: int | None     # class-balanced training subset (None = all 5,000 per class)
    test_per_class: int | None      # class-balanced test subset (None = all 1,000 per class)
    train: TrainConfig
    # training images left out of the subset and kept unseen, for tuning test-time decisions
    # (AIG's gate thresholds); 0 when all training images are used
    held_out_per_class: int = 0
    latency_batch_sizes: tuple[int, ...] = (1, 256)
    timing_seconds: float = 0.5     # how long the notebooks time each call (torch.utils.benchmark's min_run_time)
    device: torch.device = field(default_factory=default_device)
    dataset: str = "cifar10"        # "cifar100": GaterNet's paper profile (see ``for_dataset``)
    data_seed: int = 0              # draws the class-balanced subset: the same for every seed
    # every training of the profile stops after this many epochs (None: the recipes' own); set by
    # ``dry_run`` and by ``tiny``, so that a profile's recipes can be exercised on a CPU in seconds
    epoch_cap: int | None = None
    # whose recipes it trains (the deciders' schedules, the frontier's depths): its own name, except
    # ``tiny``, which runs quick's on a few images
    recipes: str = ""
    # whether the notebooks assert their claims about the trained networks (not in ``tiny``)
    checks_claims: bool = True

    def __post_init__(self):
        if not self.recipes:
            object.__setattr__(self, "recipes", self.name)

    @property
    def seed(self) -> int:
        """The seed of every training run of the profile (initialisation, batch order,
        augmentation, a decider's noise); ``with_seed`` gives the profile another."""
        return self.train.seed

    def load_data(self) -> ImageDataset:
        """The profile's data set, cut to its class-balanced subset (the same one every time,
        whatever the training seed)."""
        return load_cifar(self.dataset).subset(self.train_per_class, self.test_per_class,
                                               seed=self.data_seed,
                                               held_out_per_class=self.held_out_per_class)

    def with_seed(self, seed: int) -> "Profile":
        """This profile with training seed ``seed`` and its own runs: the same recipes and data,
        another draw of everything random in training (how far results move between seeds is
        how far they can move between machines, whose floating-point rounding differs)."""
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"a seed must be an integer >= 0, got {seed!r}")
        return replace(self, train=replace(self.train, seed=seed))

    def for_dataset(self, dataset: str) -> "Profile":
        """This profile on another data set (``"cifar10"`` or ``"cifar100"``), with its own runs."""
        dataset_spec(dataset)
        return replace(self, dataset=dataset)

    def dry_run(self, per_class: int = 2) -> "Profile":
        """This profile's recipes (networks, batch sizes, schedules, deciders) on ``per_class``
        images per class, every training cut to one epoch, in runs of their own: proves on a CPU
        that a profile's code paths work, in seconds, before hours of a GPU are spent on them."""
        return replace(self, train_per_class=per_class, test_per_class=per_class,
                       held_out_per_class=0, epoch_cap=1)

    def train_config(self, recipe: TrainConfig | None = None) -> TrainConfig:
        """``recipe`` (default: the profile's plain schedule) with the profile's training seed,
        cut to ``epoch_cap`` epochs in a dry run."""
        recipe = recipe or self.train
        epochs = recipe.epochs if self.epoch_cap is None else min(recipe.epochs, self.epoch_cap)
        return replace(recipe, seed=self.seed, epochs=epochs)

    @property
    def runs(self) -> str:
        """Sub-folder of ``runs/`` that holds this profile's trained networks (``paper-cifar100``
        for another data set than CIFAR-10, ``quick-seed2`` for another training seed than 0, so
        that their networks never mix)."""
        folder = self.name if self.dataset == "cifar10" else f"{self.name}-{self.dataset}"
        folder = folder if self.seed == 0 else f"{folder}-seed{self.seed}"
        dry_run = self.epoch_cap is not None and self.recipes == self.name   # a profile's own recipes, cut short
        return f"{folder}-dry-run" if dry_run else folder


PROFILES = {
    "quick": Profile(
        name="quick", needs="CPU (2 cores are enough), 4-6.5 minutes per notebook on 2 cores",
        depth=20, train_per_class=1000, test_per_class=200,
        train=TrainConfig(epochs=8, batch_size=128, lr=0.2, schedule="onecycle",
                          weight_decay=5e-4),
        held_out_per_class=200,
    ),
    # standard: batch 512, because a GPU step of ResNet-32 costs the same at 128 and 512 images
    # (14.8 and 14.6 ms on an H100: launch-bound), so an epoch is 4 times cheaper; the one-cycle
    # rate scaled with it (quick's 0.2 at 128). Sized so that the course fits 12 minutes on one
    # H100 by ``dyninf.course.trainings``' estimate; not yet run end to end (issue 16).
    "standard": Profile(
        name="standard", needs="one GPU, about 12 minutes for the whole course (estimated, not yet run)",
        depth=32, train_per_class=None, test_per_class=None,
        train=TrainConfig(epochs=40, batch_size=128, lr=0.2, schedule="onecycle",
                          weight_decay=5e-4).at_batch_size(512),
    ),
    "paper": Profile(
        # He et al. 2016, Sec. 4.2: lr 0.1, /10 at 32k and 48k of 64k iterations (~164 epochs at
        # batch 128), weight decay 1e-4, momentum 0.9.
        name="paper", needs="one GPU, several hours per notebook (the papers' schedules)",
        depth=110, train_per_class=None, test_per_class=None,
        train=TrainConfig(epochs=164, batch_size=128, lr=0.1, schedule="step",
                          milestones=(0.5, 0.75), weight_decay=1e-4),
    ),
}
# tiny: every notebook's code on a few images, for tests (a student copy run as handed out, nbval,
# the browser test) and for checking a notebook quickly; its numbers mean nothing, and the
# notebooks do not check their claims about them (``checks_claims``)
PROFILES["tiny"] = replace(
    PROFILES["quick"], name="tiny", recipes="quick", train_per_class=10, test_per_class=10, held_out_per_class=5,
    epoch_cap=1, latency_batch_sizes=(1, 32), timing_seconds=0.05, checks_claims=False,
    needs="any CPU, under a minute per notebook: the notebooks' code on 10 images per class, for tests; "
          "its numbers mean nothing")


def get_profile(name: str, device: torch.device | str | None = None, seed: int = 0) -> Profile:
    """The profile called ``name``, on ``device`` (default: CUDA when present, else the CPU), with
    training seed ``seed``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    profile = replace(profile, device=torch.device(device)) if device else profile
    return profile.with_seed(seed) if seed != profile.seed else profile
