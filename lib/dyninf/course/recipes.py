"""How each method trains in each profile: one frozen, typed recipe per method (like ``TrainConfig``),
a profile's recipes together in one ``Recipes`` (``recipes_of(profile)``), and the names of the runs
they train, built and parsed in one place (``run_name``, ``parse_run_name``).

``tiny`` trains ``quick``'s recipes (``Profile.recipes``); a dry run cuts every schedule to one epoch
(``Profile.train_config``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from dyninf.training.loop import TrainConfig
from dyninf.course.profiles import Profile


@dataclass(frozen=True)
class AIGRecipe:
    """ConvNet-AIG: gates before every block but the downsampling ones, trained towards a target rate."""
    finetune: bool               # add the gates to the profile's trained baseline (else: from scratch)
    targets: tuple[float, ...]   # the target rates t, one network each
    loss_weight: float           # the target-rate loss's weight
    config: TrainConfig


@dataclass(frozen=True)
class GaterNetGrid:
    """The paper's grid of backbones and data sets, each trained beside the same plain ResNet."""
    backbones: tuple[tuple[int, bool], ...]   # (depth, bottleneck blocks)
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class GaterNetRecipe:
    """GaterNet: a gater network that opens the backbone's filters, with an L1 term on the open share."""
    finetune: bool                      # gate the profile's trained baseline (else: a backbone from scratch)
    gater_depth: int
    gater_width: int
    bottleneck: int                     # b, the width of the gater's fully connected bottleneck
    sparsity_weights: tuple[float, ...]   # one network per L1 weight; 0 is the control
    config: TrainConfig | None          # None: the profile's own schedule
    backbone_depth: int | None = None   # a backbone from scratch: its depth (None: the profile's)
    backbone_bottleneck: bool = False   # ... and whether it has bottleneck blocks
    grid: GaterNetGrid | None = None

    def gated_backbone(self, profile_depth: int) -> tuple[int, bool]:
        """(depth, bottleneck blocks) of the backbone this recipe gates: the profile's baseline
        when it finetunes, else its backbone from scratch (of the profile's depth unless named)."""
        if self.finetune:
            return profile_depth, False
        return self.backbone_depth or profile_depth, self.backbone_bottleneck


@dataclass(frozen=True)
class BlockDropRecipe:
    """BlockDrop: a policy network's curriculum on the frozen baseline, then joint finetuning."""
    policy_depth: int
    policy_width: int
    alpha: float                 # the bound on the keep-probabilities
    entropy_weight: float        # beta, the entropy bonus during the curriculum
    blocks_per_epoch: int        # blocks the curriculum hands to the policy per epoch
    curriculum_penalty: float    # gamma during the curriculum
    penalty: float               # gamma during finetuning
    curriculum: TrainConfig
    finetune: TrainConfig
    extra_depths: tuple[int, ...] = ()   # further plain ResNets BlockDrop also runs on (paper: ResNet-32)


@dataclass(frozen=True)
class Recipes:
    """One profile's recipes: every method's, and the plain ResNets of notebook 05's static frontier."""
    stochastic_depth_epochs: int | None   # None: the profile's plain schedule
    aig: AIGRecipe
    gaternet: GaterNetRecipe
    blockdrop: BlockDropRecipe
    frontier_depths: tuple[int, ...]


def _adam(epochs: int, batch_size: int, lr: float, decider_lr_factor: float = 1.0,
          milestones: tuple[float, ...] = ()) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule="step", milestones=milestones,
                       weight_decay=0.0, optimizer="adam", decider_lr_factor=decider_lr_factor)


# ConvNet-AIG. quick and standard finetune the profile's trained baseline with gates added (cheap,
# and a good backbone lets short runs show the gates' behaviour); short runs also give the fresh
# gates a larger learning rate and the target-rate loss a larger weight. paper trains ResNet-110
# from scratch with the official code's CIFAR-10 schedule: 350 epochs, batch 256, lr 0.1 divided
# by 10 at epochs 150 and 250, momentum 0.9 (not Nesterov), weight decay 5e-4, target-loss weight 2.
#
# GaterNet. quick and standard finetune the profile's trained baseline together with a fresh gater
# (quick: a narrow ResNet-8 gater, so that the gater costs less than the filters it can save);
# paper trains the paper's largest CIFAR setting from scratch on the profile's schedule: a
# bottleneck ResNet-164 backbone with a ResNet-20 gater. Each recipe trains one network per L1
# weight; weight 0 is the control that shows what the sparsity term does. paper also has the
# paper's grid: backbones ResNet-20, ResNet-56 and ResNet-164 (bottleneck) on CIFAR-10 and
# CIFAR-100, each beside the same plain ResNet trained on the same schedule.
#
# BlockDrop: the policy learns on the profile's trained, frozen baseline with a curriculum (the
# policy decides the last t blocks in epoch t), then policy and backbone are finetuned jointly.
# Both phases use Adam without weight decay, as the official code. paper: its README's CIFAR-10
# ResNet-110 commands (curriculum lr 1e-3, batch 2048, 5000 epochs, gamma 1, entropy weight 0.1;
# finetuning lr 1e-4, batch 256, gamma 10; the released checkpoint, ckpt_E_2000, ran the finetuning
# script's default 2,000 epochs with the rate divided by 10 at epoch 1,600, not the README's
# --max_epochs 1600, so paper trains that). The entropy bonus is the Bernoulli entropy of the
# decided blocks (BlockDropPolicy.entropy), where the official code adds -s' log s' over all blocks:
# that term alone peaks at s' = 1/e and so pulls every block towards being dropped, and the blocks
# the curriculum fixes are not the policy's choice (the official code masks them out of the policy
# gradient but not out of the entropy). quick: 3 blocks per curriculum epoch,
# so the 9 blocks of ResNet-20 are all decided by the third epoch; a narrow ResNet-8 policy
# (width 8) that costs a small fraction of the backbone, as ResNet-8 does beside ResNet-110; and
# smaller penalties (0.3, then 1), because on a 9-block network every dropped block costs a larger
# share of accuracy: with the paper's gammas, 3 short epochs learn to keep every block.
#
# Stochastic depth trains on the profile's schedule, and in paper on the official code's CIFAR-10
# one: 500 epochs.
RECIPES = {
    "quick": Recipes(
        stochastic_depth_epochs=None,
        aig=AIGRecipe(finetune=True, targets=(0.5, 0.7), loss_weight=10.0,
                      config=TrainConfig(epochs=4, batch_size=128, lr=0.05, schedule="onecycle",
                                         decider_lr_factor=20)),
        gaternet=GaterNetRecipe(finetune=True, gater_depth=8, gater_width=8, bottleneck=64,
                                sparsity_weights=(0.0, 1.0),
                                config=TrainConfig(epochs=3, batch_size=128, lr=0.05, schedule="onecycle",
                                                   decider_lr_factor=4)),
        blockdrop=BlockDropRecipe(policy_depth=8, policy_width=8, alpha=0.8, entropy_weight=0.1,
                                  blocks_per_epoch=3, curriculum_penalty=0.3, penalty=1.0,
                                  curriculum=_adam(3, 128, 1e-3), finetune=_adam(2, 128, 1e-4, decider_lr_factor=10)),
        frontier_depths=(8, 14, 20),
    ),
    "standard": Recipes(
        stochastic_depth_epochs=None,
        aig=AIGRecipe(finetune=True, targets=(0.5, 0.7, 0.9), loss_weight=5.0,
                      config=TrainConfig(epochs=15, batch_size=128, lr=0.05, schedule="onecycle",
                                         decider_lr_factor=10).at_batch_size(512)),
        gaternet=GaterNetRecipe(finetune=True, gater_depth=20, gater_width=16, bottleneck=256,
                                sparsity_weights=(0.0, 1.0),
                                config=TrainConfig(epochs=15, batch_size=128, lr=0.05, schedule="onecycle",
                                                   decider_lr_factor=2).at_batch_size(512)),
        blockdrop=BlockDropRecipe(policy_depth=8, policy_width=16, alpha=0.8, entropy_weight=0.1,
                                  blocks_per_epoch=1, curriculum_penalty=1.0, penalty=10.0,
                                  curriculum=_adam(15, 256, 1e-3).at_batch_size(512),   # one epoch per block
                                  finetune=_adam(10, 256, 1e-4, decider_lr_factor=10).at_batch_size(512)),
        frontier_depths=(20, 32, 44),
    ),
    "paper": Recipes(
        stochastic_depth_epochs=500,
        aig=AIGRecipe(finetune=False, targets=(0.7,), loss_weight=2.0,
                      config=TrainConfig(epochs=350, batch_size=256, lr=0.1, schedule="step",
                                         milestones=(150 / 350, 250 / 350), nesterov=False)),
        gaternet=GaterNetRecipe(finetune=False, gater_depth=20, gater_width=16, bottleneck=256,
                                sparsity_weights=(0.0, 1.0), config=None,
                                backbone_depth=164, backbone_bottleneck=True,
                                grid=GaterNetGrid(backbones=((20, False), (56, False), (164, True)),
                                                  datasets=("cifar10", "cifar100"))),
        blockdrop=BlockDropRecipe(policy_depth=8, policy_width=16, alpha=0.8, entropy_weight=0.1,
                                  blocks_per_epoch=1, curriculum_penalty=1.0, penalty=10.0,
                                  curriculum=_adam(5000, 2048, 1e-3),
                                  finetune=_adam(2000, 256, 1e-4, milestones=(0.8,)),
                                  extra_depths=(32,)),   # the paper's second CIFAR-10 backbone, beside ResNet-110
        frontier_depths=(56, 110),
    ),
}


def recipes_of(profile: Profile) -> Recipes:
    """The recipes ``profile`` trains (``quick``'s for ``tiny``)."""
    if profile.recipes not in RECIPES:
        raise ValueError(f"no recipes for {profile.recipes!r}; there are recipes for {', '.join(RECIPES)}")
    return RECIPES[profile.recipes]


def stochastic_depth_recipe(profile: Profile) -> TrainConfig:
    """The schedule stochastic depth trains on in ``profile``."""
    epochs = recipes_of(profile).stochastic_depth_epochs
    return profile.train if epochs is None else replace(profile.train, epochs=epochs)


# Run folders: resnet<depth>[_bottleneck] for a plain ResNet, with a method's part after it
# (``_sd_pL<p_L>``, ``_aig_t<target>``, ``_gaternet_l<L1 weight>``, ``_blockdrop_g<gamma>``; and
# ``_wider<width>``, ``_blockdrop_curriculum``, which no point of the course is read from).
RUN_SETTINGS = {"SD": "sd_pL", "AIG": "aig_t", "GaterNet": "gaternet_l", "BlockDrop": "blockdrop_g"}
_RUN_NAME = re.compile(r"resnet(?P<depth>\d+)(?P<bottleneck>_bottleneck)?"
                       r"(?:_(?P<setting>" + "|".join(RUN_SETTINGS.values()) + r")(?P<value>\d+(?:\.\d+)?))?")


@dataclass(frozen=True)
class RunName:
    """What a run folder's name says: the method, the network's depth and blocks, the method's setting."""
    method: str                  # "plain" or a key of RUN_SETTINGS
    depth: int
    bottleneck: bool = False
    value: float | None = None   # p_L, the target rate, the L1 weight or gamma; None for a plain ResNet

    def __str__(self) -> str:
        name = f"resnet{self.depth}{'_bottleneck' if self.bottleneck else ''}"
        return name if self.method == "plain" else f"{name}_{RUN_SETTINGS[self.method]}{self.value:g}"


def run_name(method: str, depth: int, value: float | None = None, bottleneck: bool = False) -> str:
    """The folder name of a run of ``method`` ("plain" or a key of ``RUN_SETTINGS``)."""
    if method != "plain" and method not in RUN_SETTINGS:
        raise ValueError(f"unknown method {method!r}; runs are named for 'plain' and {list(RUN_SETTINGS)}")
    if (value is None) != (method == "plain"):
        raise ValueError(f"a run of {method} is named {'without' if method == 'plain' else 'with'} its setting")
    return str(RunName(method, depth, bottleneck, value))


def parse_run_name(name: str) -> RunName | None:
    """What ``run_name`` built ``name`` from, or None for another folder (a wider ResNet, a curriculum)."""
    match = _RUN_NAME.fullmatch(name)
    if match is None:
        return None
    setting = match["setting"]
    method = next((m for m, s in RUN_SETTINGS.items() if s == setting), "plain") if setting else "plain"
    return RunName(method, int(match["depth"]), bool(match["bottleneck"]),
                   float(match["value"]) if setting else None)
