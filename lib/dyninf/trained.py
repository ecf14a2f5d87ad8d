"""The course's trained networks: trained once per profile, cached in ``runs/<profile>/<name>/``,
reused by every notebook that needs them (and retrained only when missing)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from torch import nn

from dyninf.backbones import CifarResNet, cifar_resnet
from dyninf.data import ImageDataset
from dyninf.deciders import StochasticDepth
from dyninf.dynamic import DynamicNetwork
from dyninf.paths import runs_dir
from dyninf.profiles import Profile
from dyninf.train import TrainConfig, fit, seed_everything


def run_dir(profile: Profile, name: str) -> Path:
    return runs_dir() / profile.runs / name


def train_cached(profile: Profile, name: str, model: nn.Module, data: ImageDataset,
                 config: TrainConfig | None = None, progress: bool = True) -> pd.DataFrame:
    """Train ``model`` as run ``name`` of ``profile``: loaded when complete, resumed when
    interrupted, trained when missing. Returns the history."""
    return fit(model, data, config or profile.train, run_dir(profile, name), device=profile.device,
               progress=progress, description=f"{name} ({profile.name})")


def train_baseline(profile: Profile, data: ImageDataset | None = None, depth: int | None = None,
                   progress: bool = True) -> tuple[CifarResNet, pd.DataFrame]:
    """The profile's plain ResNet (``depth`` defaults to the profile's) and its history."""
    data = data if data is not None else profile.load_data()
    depth = depth or profile.depth
    seed_everything(profile.train.seed)
    net = cifar_resnet(depth, num_classes=len(data.classes))
    return net, train_cached(profile, f"resnet{depth}", net, data, progress=progress)


def train_stochastic_depth(profile: Profile, data: ImageDataset | None = None, p_last: float = 0.5,
                           config: TrainConfig | None = None, progress: bool = True
                           ) -> tuple[DynamicNetwork, pd.DataFrame]:
    """A ResNet of the profile's depth trained with batch-level stochastic depth (dropped blocks
    not computed); in eval mode it is a plain ResNet."""
    data = data if data is not None else profile.load_data()
    seed_everything(profile.train.seed)
    backbone = cifar_resnet(profile.depth, num_classes=len(data.classes))
    net = DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, p_last, mode="batch"),
                         train_mode="skipped", eval_mode="skipped")
    name = f"resnet{profile.depth}_sd_pL{p_last:g}"
    return net, train_cached(profile, name, net, data, config, progress)
