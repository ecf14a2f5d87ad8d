"""The course's trained networks: trained once per profile, cached in ``runs/<profile>/<name>/``,
reused by every notebook that needs them (and retrained only when missing)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dyninf.network.backbones import BottleneckBlock, CifarResNet, cifar_resnet
from dyninf.data.cifar import ImageDataset
from dyninf.deciders import (AIGGates, BlockDropPolicy, Gater, StochasticDepth, blockdrop_reward,
                             calibrate_thresholds, check_penalty, check_target_rate, curriculum_step,
                             gate_sparsity_loss, policy_gradient_loss, target_rate_loss)
from dyninf.network.dynamic import DynamicNetwork
from dyninf.training.loop import TrainConfig, TrainingStep, fit, load_history, seed_everything
from dyninf.utils.paths import runs_dir
from dyninf.course.profiles import Profile
from dyninf.course.recipes import RunName, parse_run_name, recipes_of, run_name


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
    return net, train_cached(profile, run_name("plain", depth, bottleneck=bottleneck), net, data, progress=progress)


def trained_plain_resnets(profile: Profile) -> dict[int, pd.DataFrame]:
    """The histories of this profile's plain ResNets that are already trained, by depth (nothing is
    trained here): the static networks a dynamic one is compared with."""
    found = {run.depth: load_history(run_dir(profile, str(run)))
             for run in finished_runs(profile, "plain") if not run.bottleneck}
    return dict(sorted(found.items()))


def finished_runs(profile: Profile, method: str) -> list[RunName]:
    """The profile's completed runs of ``method`` ("plain" or a key of ``RUN_SETTINGS``), parsed
    from their folder names (``dyninf.course.recipes.parse_run_name``), in name order."""
    folders = sorted((runs_dir() / profile.runs).glob("*"))
    runs = [parse_run_name(f.name) for f in folders if (f / "history.json").exists()]
    return [run for run in runs if run is not None and run.method == method]


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
    return net, train_cached(profile, run_name("SD", profile.depth, p_last), net, data, config, progress)


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


def _backbone_to_gate(profile: Profile, data: ImageDataset, finetune: bool, progress: bool,
                      depth: int | None = None, bottleneck: bool = False) -> CifarResNet:
    """The backbone a dynamic method starts from: the profile's trained baseline when its recipe
    finetunes, else a fresh ResNet of ``depth`` (default: the profile's), with ``bottleneck`` blocks."""
    if finetune:
        return train_baseline(profile, data, progress=progress)[0]
    seed_everything(profile.seed)
    return cifar_resnet(depth or profile.depth, len(data.classes), bottleneck=bottleneck)


def train_aig(profile: Profile, data: ImageDataset | None = None, target: float = 0.7,
              progress: bool = True, calibrate: bool = True) -> tuple[DynamicNetwork, pd.DataFrame]:
    """ConvNet-AIG on the profile's backbone for target rate ``target``: trained in masked mode
    (the gates' straight-through gradient needs every residual), evaluated in skipped mode with
    thresholds calibrated to ``target`` (``calibrate=False``: the paper's larger-logit rule)."""
    check_target_rate(target)
    data = data if data is not None else profile.load_data()
    recipe = recipes_of(profile).aig
    backbone = _backbone_to_gate(profile, data, recipe.finetune, progress)
    seed_everything(profile.seed)
    net = DynamicNetwork(backbone, AIGGates(backbone), train_mode="masked", eval_mode="skipped")

    def target_loss(step: TrainingStep):
        return recipe.loss_weight * target_rate_loss(step.decisions, target, net.decider.gated_blocks)

    history = train_cached(profile, run_name("AIG", profile.depth, target), net, data, recipe.config, progress,
                           extra_losses={"target_loss": target_loss})
    if calibrate:
        calibrate_thresholds(net, calibration_images(data, profile.seed), target, profile.device)
    return net, history


def train_gaternet(profile: Profile, data: ImageDataset | None = None, sparsity_weight: float = 0.5,
                   progress: bool = True, scratch_backbone: tuple[int, bool] | None = None
                   ) -> tuple[DynamicNetwork, pd.DataFrame]:
    """GaterNet on the profile's backbone: loss = cross-entropy + ``sparsity_weight`` x the fraction
    of open gates; trained in masked mode, evaluated in skipped mode (open filters only).
    ``scratch_backbone``: (depth, bottleneck) of a backbone trained from scratch with the gater,
    instead of the recipe's (the paper profile's grid). Runs are named by the backbone:
    ``resnet<depth>[_bottleneck]_gaternet_l<weight>``."""
    if sparsity_weight < 0:
        raise ValueError(f"the sparsity weight must be >= 0, got {sparsity_weight}")
    data = data if data is not None else profile.load_data()
    recipe = recipes_of(profile).gaternet
    if scratch_backbone is not None:
        depth, bottleneck = scratch_backbone
        recipe = replace(recipe, finetune=False, backbone_depth=depth, backbone_bottleneck=bottleneck)
    backbone = _backbone_to_gate(profile, data, recipe.finetune, progress, *recipe.gated_backbone(profile.depth))
    seed_everything(profile.seed)
    gater = Gater.for_backbone(backbone, depth=recipe.gater_depth, width=recipe.gater_width,
                               bottleneck=recipe.bottleneck)
    net = DynamicNetwork(backbone, gater, train_mode="masked", eval_mode="skipped")

    def sparsity(step: TrainingStep):
        return sparsity_weight * gate_sparsity_loss(step.decisions)

    name = run_name("GaterNet", backbone.depth, sparsity_weight, isinstance(backbone.blocks[0], BottleneckBlock))
    return net, train_cached(profile, name, net, data, recipe.config, progress,
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


def blockdrop_losses(penalty: float, entropy_weight: float) -> tuple[dict, dict]:
    """The shared training loop's hooks for BlockDrop: the policy-gradient loss with the
    self-critical baseline (the greedy policy's reward on the same images, one more forward pass
    without gradients), and the logged reward and blocks used of the sampled policies."""
    check_penalty(penalty)

    def reward(step: TrainingStep, logits: torch.Tensor, decisions: torch.Tensor) -> torch.Tensor:
        return blockdrop_reward(logits.argmax(1) == step.labels, decisions.sum(1), step.model.num_blocks, penalty)

    def policy_loss(step: TrainingStep):
        model, sampled, probabilities = step.model, step.decisions, step.probabilities
        policy = model.decider
        greedy = policy.greedy(probabilities)
        with torch.no_grad():
            greedy_logits = model.backbone(step.images, decisions=greedy, mode=model.train_mode)
        return policy_gradient_loss(policy.log_probability(probabilities, sampled), reward(step, step.logits, sampled),
                                    reward(step, greedy_logits, greedy), policy.entropy(probabilities), entropy_weight)

    metrics = {"reward": lambda step: reward(step, step.logits, step.decisions).mean(),
               "blocks": lambda step: step.decisions.sum(1).mean()}
    return {"policy_loss": policy_loss}, metrics


def train_blockdrop(profile: Profile, data: ImageDataset | None = None, penalty: float | None = None,
                    progress: bool = True, depth: int | None = None) -> tuple[DynamicNetwork, pd.DataFrame]:
    """BlockDrop on the profile's trained plain ResNet of ``depth`` (default: the profile's
    baseline; the paper also uses ResNet-32): the curriculum (backbone frozen), then joint
    finetuning with the penalty gamma (default: the recipe's). The curriculum trains in skipped
    mode (the decisions are sampled, so no gradient needs the skipped residuals, and the frozen
    backbone's batch norms keep their statistics); joint finetuning in masked mode, as the paper's
    code does (the backbone's batch norms normalise over the whole batch). Evaluated in skipped mode.
    Returns the network and both phases' history (column ``phase``)."""
    recipe = recipes_of(profile).blockdrop
    penalty = recipe.penalty if penalty is None else penalty
    check_penalty(penalty)
    data = data if data is not None else profile.load_data()
    backbone = train_baseline(profile, data, depth, progress=progress)[0]
    seed_everything(profile.seed)
    policy = BlockDropPolicy.for_backbone(backbone, depth=recipe.policy_depth, width=recipe.policy_width,
                                          alpha=recipe.alpha)
    net = DynamicNetwork(backbone, policy, train_mode="skipped", eval_mode="skipped").freeze_backbone()
    blocks = backbone.num_blocks

    def curriculum(model, epoch):
        policy.decided_blocks = curriculum_step(epoch, blocks, recipe.blocks_per_epoch)
        return {"phase": "curriculum", "decided_blocks": policy.decided_blocks}

    losses, metrics = blockdrop_losses(recipe.curriculum_penalty, recipe.entropy_weight)
    first = train_cached(profile, f"resnet{backbone.depth}_blockdrop_curriculum", net, data,
                         recipe.curriculum, progress, extra_losses=losses, metrics=metrics,
                         on_epoch_start=curriculum)
    net.freeze_backbone(False)
    net.train_mode = "masked"   # skipped mode refuses per-image decisions once the batch norms train
    policy.decided_blocks = blocks

    def finetune(model, epoch):
        return {"phase": "finetune", "decided_blocks": blocks}

    losses, metrics = blockdrop_losses(penalty, 0.0)
    second = train_cached(profile, run_name("BlockDrop", backbone.depth, penalty), net, data,
                          recipe.finetune, progress, extra_losses=losses, metrics=metrics,
                          on_epoch_start=finetune)
    return net, pd.concat([first, second], ignore_index=True)
