"""The course's trained networks: trained once per profile, cached in ``runs/<profile>/<name>/``,
reused by every notebook that needs them (and retrained only when missing)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dyninf.backbones import BottleneckBlock, CifarResNet, cifar_resnet
from dyninf.data import ImageDataset
from dyninf.deciders import (AIGGates, BlockDropPolicy, Gater, StochasticDepth, blockdrop_reward,
                             calibrate_thresholds, check_penalty, check_target_rate, curriculum_step,
                             gate_sparsity_loss, policy_gradient_loss, target_rate_loss)
from dyninf.dynamic import DynamicNetwork
from dyninf.fitting import TrainConfig, TrainingStep, fit, load_history, seed_everything
from dyninf.paths import runs_dir
from dyninf.profiles import Profile


def run_dir(profile: Profile, name: str) -> Path:
    return runs_dir() / profile.runs / name


def train_cached(profile: Profile, name: str, model: nn.Module, data: ImageDataset,
                 config: TrainConfig | None = None, progress: bool = True,
                 **fit_kwargs) -> pd.DataFrame:
    """Train ``model`` as run ``name`` of ``profile``: loaded when complete, resumed when
    interrupted, trained when missing. Returns the history. ``config`` (default: the profile's)
    trains with the profile's seed (and one epoch in a dry run). ``fit_kwargs`` go to ``fit``."""
    config = profile.train_config(config)
    seed = "" if profile.seed == 0 else f", seed {profile.seed}"
    return fit(model, data, config, run_dir(profile, name), device=profile.device,
               progress=progress, description=f"{name} ({profile.name}{seed})", **fit_kwargs)


def train_baseline(profile: Profile, data: ImageDataset | None = None, depth: int | None = None,
                   progress: bool = True, bottleneck: bool = False) -> tuple[CifarResNet, pd.DataFrame]:
    """The profile's plain ResNet (``depth`` defaults to the profile's; ``bottleneck`` blocks for
    the 9n + 2 ResNets, run ``resnet<depth>_bottleneck``) and its history."""
    data = data if data is not None else profile.load_data()
    depth = depth or profile.depth
    seed_everything(profile.seed)
    net = cifar_resnet(depth, num_classes=len(data.classes), bottleneck=bottleneck)
    name = f"resnet{depth}_bottleneck" if bottleneck else f"resnet{depth}"
    return net, train_cached(profile, name, net, data, progress=progress)


def trained_plain_resnets(profile: Profile) -> dict[int, pd.DataFrame]:
    """The histories of this profile's plain ResNets that are already trained, by depth (nothing is
    trained here): the static networks a dynamic one is compared with."""
    found = {int(m[1]): load_history(runs_dir() / profile.runs / m[0])
             for m in finished_runs(profile, r"resnet(\d+)")}
    return dict(sorted(found.items()))


def finished_runs(profile: Profile, pattern: str) -> list[re.Match]:
    """The profile's completed runs whose folder name matches the regular expression ``pattern``
    (whole name), in name order, as matches (their groups parse the run's settings)."""
    folders = sorted((runs_dir() / profile.runs).glob("*"))
    return [m for f in folders if (f / "history.json").exists() and (m := re.fullmatch(pattern, f.name))]


def stochastic_depth_recipe(profile: Profile) -> TrainConfig:
    """The profile's schedule, and in ``paper`` the official code's CIFAR-10 one: 500 epochs."""
    return replace(profile.train, epochs=500) if profile.recipes == "paper" else profile.train


def train_stochastic_depth(profile: Profile, data: ImageDataset | None = None, p_last: float = 0.5,
                           config: TrainConfig | None = None, progress: bool = True
                           ) -> tuple[DynamicNetwork, pd.DataFrame]:
    """A ResNet of the profile's depth trained with batch-level stochastic depth (dropped blocks
    not computed); in eval mode it is a plain ResNet."""
    data = data if data is not None else profile.load_data()
    seed_everything(profile.seed)
    backbone = cifar_resnet(profile.depth, num_classes=len(data.classes))
    net = DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, p_last, mode="batch"),
                         train_mode="skipped", eval_mode="skipped")
    name = f"resnet{profile.depth}_sd_pL{p_last:g}"
    return net, train_cached(profile, name, net, data, config, progress)


# ConvNet-AIG. quick and standard finetune the profile's trained baseline with gates added (cheap,
# and a good backbone lets short runs show the gates' behaviour); short runs also give the fresh
# gates a larger learning rate and the target-rate loss a larger weight. paper trains ResNet-110
# from scratch with the official code's CIFAR-10 schedule: 350 epochs, batch 256, lr 0.1 divided
# by 10 at epochs 150 and 250, momentum 0.9 (not Nesterov), weight decay 5e-4, target-loss weight 2.
AIG_SCHEDULES = {
    "quick": {"finetune": True, "targets": (0.5, 0.7), "loss_weight": 10.0,
              "config": TrainConfig(epochs=4, batch_size=128, lr=0.05, schedule="onecycle",
                                    decider_lr_factor=20)},
    "standard": {"finetune": True, "targets": (0.5, 0.7, 0.9), "loss_weight": 5.0,
                 "config": TrainConfig(epochs=15, batch_size=128, lr=0.05, schedule="onecycle",
                                       decider_lr_factor=10).at_batch_size(512)},
    "paper": {"finetune": False, "targets": (0.7,), "loss_weight": 2.0,
              "config": TrainConfig(epochs=350, batch_size=256, lr=0.1, schedule="step",
                                    milestones=(150 / 350, 250 / 350), nesterov=False)},
}
CALIBRATION_IMAGES = 2000   # images the gate thresholds are set on when none are held out


def calibration_images(data: ImageDataset, seed: int = 0) -> torch.Tensor:
    """Images to set AIG's test-time thresholds on: the held-out training images when the profile
    keeps some (unseen in training, like the test set), else a random sample of the training
    images (full-data profiles; after a long run the gates treat both alike)."""
    if len(data.held_out_images):
        return data.held_out_images
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(data.train_images), generator=generator)[:CALIBRATION_IMAGES]
    return data.train_images[chosen.sort().values]


def _backbone_to_gate(profile: Profile, data: ImageDataset, schedule: dict,
                      progress: bool) -> CifarResNet:
    """The backbone a dynamic method starts from: the profile's trained baseline when the schedule
    finetunes, else a fresh ResNet (the schedule's ``backbone_depth``/``backbone_bottleneck``, by
    default the profile's depth)."""
    if schedule["finetune"]:
        return train_baseline(profile, data, progress=progress)[0]
    seed_everything(profile.seed)
    return cifar_resnet(schedule.get("backbone_depth", profile.depth), len(data.classes),
                        bottleneck=schedule.get("backbone_bottleneck", False))


def train_aig(profile: Profile, data: ImageDataset | None = None, target: float = 0.7,
              progress: bool = True, calibrate: bool = True) -> tuple[DynamicNetwork, pd.DataFrame]:
    """ConvNet-AIG on the profile's backbone for target rate ``target``: trained in masked mode
    (the gates' straight-through gradient needs every residual), evaluated in skipped mode with
    thresholds calibrated to ``target`` (``calibrate=False``: the paper's larger-logit rule)."""
    check_target_rate(target)
    data = data if data is not None else profile.load_data()
    schedule = AIG_SCHEDULES[profile.recipes]
    backbone = _backbone_to_gate(profile, data, schedule, progress)
    seed_everything(profile.seed)
    net = DynamicNetwork(backbone, AIGGates(backbone), train_mode="masked", eval_mode="skipped")

    def target_loss(step: TrainingStep):
        return schedule["loss_weight"] * target_rate_loss(step.decisions, target, net.decider.gated_blocks)

    name = f"resnet{profile.depth}_aig_t{target:g}"
    history = train_cached(profile, name, net, data, schedule["config"], progress,
                           extra_losses={"target_loss": target_loss})
    if calibrate:
        calibrate_thresholds(net, calibration_images(data, profile.seed), target, profile.device)
    return net, history


# GaterNet. quick and standard finetune the profile's trained baseline together with a fresh gater
# (quick: a narrow ResNet-8 gater, so that the gater costs less than the filters it can save);
# paper trains the paper's largest CIFAR setting from scratch on the profile's schedule: a
# bottleneck ResNet-164 backbone with a ResNet-20 gater. Each schedule trains one network per L1
# weight; weight 0 is the control that shows what the sparsity term does. paper also has the
# paper's grid: backbones ResNet-20, ResNet-56 and ResNet-164 (bottleneck) on CIFAR-10 and
# CIFAR-100, each beside the same plain ResNet trained on the same schedule.
GATERNET_SCHEDULES = {
    "quick": {"finetune": True, "gater_depth": 8, "gater_width": 8, "bottleneck": 64,
              "sparsity_weights": (0.0, 1.0),
              "config": TrainConfig(epochs=3, batch_size=128, lr=0.05, schedule="onecycle",
                                    decider_lr_factor=4)},
    "standard": {"finetune": True, "gater_depth": 20, "gater_width": 16, "bottleneck": 256,
                 "sparsity_weights": (0.0, 1.0),
                 "config": TrainConfig(epochs=15, batch_size=128, lr=0.05, schedule="onecycle",
                                       decider_lr_factor=2).at_batch_size(512)},
    "paper": {"finetune": False, "backbone_depth": 164, "backbone_bottleneck": True,
              "gater_depth": 20, "gater_width": 16, "bottleneck": 256,
              "sparsity_weights": (0.0, 1.0), "config": None,   # None: the profile's schedule
              "grid": {"backbones": ((20, False), (56, False), (164, True)),
                       "datasets": ("cifar10", "cifar100")}},
}


def train_gaternet(profile: Profile, data: ImageDataset | None = None, sparsity_weight: float = 0.5,
                   progress: bool = True, scratch_backbone: tuple[int, bool] | None = None
                   ) -> tuple[DynamicNetwork, pd.DataFrame]:
    """GaterNet on the profile's backbone: loss = cross-entropy + ``sparsity_weight`` x the fraction
    of open gates; trained in masked mode, evaluated in skipped mode (open filters only).
    ``scratch_backbone``: (depth, bottleneck) of a backbone trained from scratch with the gater,
    instead of the schedule's (the paper profile's grid). Runs are named by the backbone:
    ``resnet<depth>[_bottleneck]_gaternet_l<weight>``."""
    if sparsity_weight < 0:
        raise ValueError(f"the sparsity weight must be >= 0, got {sparsity_weight}")
    data = data if data is not None else profile.load_data()
    schedule = GATERNET_SCHEDULES[profile.recipes]
    if scratch_backbone is not None:
        depth, bottleneck = scratch_backbone
        schedule = dict(schedule, finetune=False, backbone_depth=depth, backbone_bottleneck=bottleneck)
    backbone = _backbone_to_gate(profile, data, schedule, progress)
    seed_everything(profile.seed)
    gater = Gater.for_backbone(backbone, depth=schedule["gater_depth"], width=schedule["gater_width"],
                               bottleneck=schedule["bottleneck"])
    net = DynamicNetwork(backbone, gater, train_mode="masked", eval_mode="skipped")

    def sparsity(step: TrainingStep):
        return sparsity_weight * gate_sparsity_loss(step.decisions)

    kind = "_bottleneck" if isinstance(backbone.blocks[0], BottleneckBlock) else ""
    name = f"resnet{backbone.depth}{kind}_gaternet_l{sparsity_weight:g}"
    return net, train_cached(profile, name, net, data, schedule["config"], progress,
                             extra_losses={"sparsity_loss": sparsity})


def wider_width(depth: int, parameters: int, bottleneck: bool = False) -> int:
    """The smallest base width (16 for He et al.'s ResNets) at which a ResNet of ``depth`` has at
    least ``parameters`` parameters: GaterNet's control, a plain ResNet as large as backbone + gater."""
    width = 16
    while sum(p.numel() for p in cifar_resnet(depth, width=width, bottleneck=bottleneck).parameters()) < parameters:
        width += 1
    return width


def train_wider(profile: Profile, parameters: int, data: ImageDataset | None = None,
                progress: bool = True) -> tuple[CifarResNet, pd.DataFrame]:
    """ResNet-Wider (GaterNet's control): the profile's plain ResNet, widened until it has at least
    ``parameters`` parameters, trained like the baseline."""
    data = data if data is not None else profile.load_data()
    width = wider_width(profile.depth, parameters)
    seed_everything(profile.seed)
    net = cifar_resnet(profile.depth, num_classes=len(data.classes), width=width)
    return net, train_cached(profile, f"resnet{profile.depth}_wider{width}", net, data, progress=progress)


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
def _adam(epochs: int, batch_size: int, lr: float, decider_lr_factor: float = 1.0,
          milestones: tuple[float, ...] = ()) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule="step", milestones=milestones,
                       weight_decay=0.0, optimizer="adam", decider_lr_factor=decider_lr_factor)


BLOCKDROP_SCHEDULES = {
    "quick": {"policy_depth": 8, "policy_width": 8, "alpha": 0.8, "entropy_weight": 0.1,
              "blocks_per_epoch": 3, "curriculum_penalty": 0.3, "penalty": 1.0,
              "curriculum": _adam(3, 128, 1e-3), "finetune": _adam(2, 128, 1e-4, decider_lr_factor=10)},
    "standard": {"policy_depth": 8, "policy_width": 16, "alpha": 0.8, "entropy_weight": 0.1,
                 "blocks_per_epoch": 1, "curriculum_penalty": 1.0, "penalty": 10.0,
                 "curriculum": _adam(15, 256, 1e-3).at_batch_size(512),   # one epoch per block
                 "finetune": _adam(10, 256, 1e-4, decider_lr_factor=10).at_batch_size(512)},
    "paper": {"policy_depth": 8, "policy_width": 16, "alpha": 0.8, "entropy_weight": 0.1,
              "blocks_per_epoch": 1, "curriculum_penalty": 1.0, "penalty": 10.0,
              "curriculum": _adam(5000, 2048, 1e-3), "finetune": _adam(2000, 256, 1e-4, milestones=(0.8,)),
              "extra_depths": (32,)},   # the paper's second CIFAR-10 backbone, beside ResNet-110
}


def blockdrop_losses(penalty: float, entropy_weight: float) -> tuple[dict, dict]:
    """The shared training loop's hooks for BlockDrop: the policy-gradient loss with the
    self-critical baseline (the greedy policy's reward on the same images, one more forward pass
    without gradients), and the logged reward and blocks used of the sampled policies."""
    check_penalty(penalty)

    def reward(step: TrainingStep, logits: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        return blockdrop_reward(logits.argmax(1) == step.labels, decisions.sum(1), step.model.num_blocks, penalty)

    def policy_loss(step: TrainingStep):
        model, sampled = step.model, step.decisions
        policy = model.decider   # its distribution is the one the sampled decisions were drawn from
        greedy = policy.greedy()
        with torch.no_grad():
            greedy_logits = model.backbone(step.images, decisions=greedy, mode=model.train_mode)
        return policy_gradient_loss(policy.log_probability(sampled), reward(step, step.logits, sampled),
                                    reward(step, greedy_logits, greedy), policy.entropy(), entropy_weight)

    metrics = {"reward": lambda step: reward(step, step.logits, step.decisions).mean(),
               "blocks": lambda step: step.decisions.sum(1).mean()}
    return {"policy_loss": policy_loss}, metrics


def train_blockdrop(profile: Profile, data: ImageDataset | None = None, penalty: float | None = None,
                    progress: bool = True, depth: int | None = None) -> tuple[DynamicNetwork, pd.DataFrame]:
    """BlockDrop on the profile's trained plain ResNet of ``depth`` (default: the profile's
    baseline; the paper also uses ResNet-32): the curriculum (backbone frozen), then joint
    finetuning with the penalty gamma (default: the schedule's). Trained and evaluated in
    skipped mode (the decisions are sampled, so no gradient needs the skipped residuals).
    Returns the network and both phases' history (column ``phase``)."""
    schedule = BLOCKDROP_SCHEDULES[profile.recipes]
    penalty = schedule["penalty"] if penalty is None else penalty
    check_penalty(penalty)
    data = data if data is not None else profile.load_data()
    backbone = train_baseline(profile, data, depth, progress=progress)[0]
    seed_everything(profile.seed)
    policy = BlockDropPolicy.for_backbone(backbone, depth=schedule["policy_depth"],
                                          width=schedule["policy_width"], alpha=schedule["alpha"])
    net = DynamicNetwork(backbone, policy, train_mode="skipped", eval_mode="skipped").freeze_backbone()
    blocks = backbone.num_blocks

    def curriculum(model, epoch):
        policy.decided_blocks = curriculum_step(epoch, blocks, schedule["blocks_per_epoch"])
        return {"phase": "curriculum", "decided_blocks": policy.decided_blocks}

    losses, metrics = blockdrop_losses(schedule["curriculum_penalty"], schedule["entropy_weight"])
    first = train_cached(profile, f"resnet{backbone.depth}_blockdrop_curriculum", net, data,
                         schedule["curriculum"], progress, extra_losses=losses, metrics=metrics,
                         on_epoch_start=curriculum)
    net.freeze_backbone(False)
    policy.decided_blocks = blocks

    def finetune(model, epoch):
        return {"phase": "finetune", "decided_blocks": blocks}

    losses, metrics = blockdrop_losses(penalty, 0.0)
    second = train_cached(profile, f"resnet{backbone.depth}_blockdrop_g{penalty:g}", net, data,
                          schedule["finetune"], progress, extra_losses=losses, metrics=metrics,
                          on_epoch_start=finetune)
    return net, pd.concat([first, second], ignore_index=True)
