"""The networks a profile has already trained, as points for the frontier: each loaded in eval
mode, named and counted as the course shows it, with its accuracy and MACs
(``dyninf.measure.frontier`` judges them). Nothing is trained here; a method whose runs are missing is
simply absent."""
from __future__ import annotations

import pandas as pd
from torch import nn

from dyninf.course.profiles import Profile
from dyninf.course.recipes import recipes_of
from dyninf.course.trained import (finished_runs, train_aig, train_baseline, train_blockdrop, train_gaternet,
                                   train_stochastic_depth, trained_plain_resnets)
from dyninf.data.cifar import ImageDataset
from dyninf.measure.frontier import COLUMNS, METHODS, TrainedNetwork, network_point


def trained_networks(profile: Profile, data: ImageDataset, methods=METHODS) -> list[TrainedNetwork]:
    """Each trained network of ``methods``, loaded in eval mode: plain ResNets of every depth,
    stochastic depth, AIG per target rate, GaterNet per L1 weight (λ = 0 is the control),
    BlockDrop per penalty."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")
    found = []
    pretrained = profile.train.epochs   # the baseline that finetuned methods start from

    def add(method, name, trained, start_epochs=0, control=False):
        net, history = trained
        found.append(TrainedNetwork(method, name, net.eval(), start_epochs + len(history), control))

    if "plain" in methods:
        for depth in trained_plain_resnets(profile):
            add("plain", f"plain ResNet-{depth}", train_baseline(profile, data, depth, progress=False))
    if "SD" in methods:
        for run in finished_runs(profile, "SD"):
            if run.depth == profile.depth:
                add("SD", f"SD ResNet-{run.depth}, p_L = {run.value:g}",
                    train_stochastic_depth(profile, data, run.value, progress=False))
    if "AIG" in methods:
        for run in finished_runs(profile, "AIG"):
            if run.depth == profile.depth:
                found.append(aig_network(profile, run.value, train_aig(profile, data, run.value, progress=False)))
    if "GaterNet" in methods:
        from_scratch = not recipes_of(profile).gaternet.finetune
        for run in finished_runs(profile, "GaterNet"):
            backbone = (run.depth, run.bottleneck) if from_scratch else None
            trained = train_gaternet(profile, data, run.value, progress=False, scratch_backbone=backbone)
            found.append(gaternet_network(profile, run.value, trained, backbone[0] if backbone else None))
    if "BlockDrop" in methods:
        for run in finished_runs(profile, "BlockDrop"):
            add("BlockDrop", f"BlockDrop ResNet-{run.depth}, γ = {run.value:g}",
                train_blockdrop(profile, data, run.value, progress=False, depth=run.depth), pretrained)
    return found


def aig_network(profile: Profile, target: float, trained: tuple[nn.Module, pd.DataFrame]) -> TrainedNetwork:
    """An AIG network for target rate ``target`` as ``train_aig`` returned it, named and counted as
    the course shows it (its epochs include the baseline's where the profile finetunes)."""
    net, history = trained
    start = profile.train.epochs if recipes_of(profile).aig.finetune else 0
    return TrainedNetwork("AIG", f"AIG, t = {target:g}", net.eval(), start + len(history))


def gaternet_network(profile: Profile, weight: float, trained: tuple[nn.Module, pd.DataFrame],
                     backbone_depth: int | None = None) -> TrainedNetwork:
    """A GaterNet with L1 weight ``weight`` as ``train_gaternet`` returned it; λ = 0 is the control.
    ``backbone_depth`` names the backbone of a from-scratch run (the paper's grid)."""
    net, history = trained
    start = profile.train.epochs if recipes_of(profile).gaternet.finetune else 0
    name = f"GaterNet ResNet-{backbone_depth}, λ = {weight:g}" if backbone_depth else f"GaterNet, λ = {weight:g}"
    control = weight == 0
    return TrainedNetwork("GaterNet", name + (" (control: no L1 term)" if control else ""), net.eval(),
                          start + len(history), control)


def trained_points(profile: Profile, data: ImageDataset, methods=METHODS) -> pd.DataFrame:
    """One row (``COLUMNS``) per trained network of ``methods`` (see ``trained_networks``)."""
    rows = [network_point(network, data, profile.device) for network in trained_networks(profile, data, methods)]
    return pd.DataFrame(rows, columns=COLUMNS)
