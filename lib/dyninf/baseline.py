"""The plain ResNet baseline of a profile: trained once, cached in ``runs/<profile>/``, reused by
every notebook that needs it."""
from __future__ import annotations

import pandas as pd

from dyninf.backbones import CifarResNet, cifar_resnet
from dyninf.data import ImageDataset
from dyninf.paths import runs_dir
from dyninf.profiles import Profile
from dyninf.train import fit, seed_everything


def baseline_run_dir(profile: Profile, depth: int | None = None):
    return runs_dir() / profile.runs / f"resnet{depth or profile.depth}"


def train_baseline(profile: Profile, data: ImageDataset | None = None, depth: int | None = None,
                   progress: bool = True) -> tuple[CifarResNet, pd.DataFrame]:
    """The profile's plain ResNet (``depth`` defaults to the profile's) and its training history:
    loaded from its checkpoint when complete, resumed when interrupted, trained when missing."""
    data = data if data is not None else profile.load_data()
    seed_everything(profile.train.seed)
    net = cifar_resnet(depth or profile.depth, num_classes=len(data.classes))
    history = fit(net, data, profile.train, baseline_run_dir(profile, depth),
                  device=profile.device, progress=progress,
                  description=f"ResNet-{depth or profile.depth} ({profile.name})")
    return net, history
