"""Accuracy against mean MACs per image for the networks of a profile that are already trained:
the points every notebook puts its own results beside. Nothing is trained here; a method whose
runs are missing is simply absent."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from dyninf.cost import network_cost
from dyninf.data import ImageDataset
from dyninf.dynamic import predict_with_decisions, spent_macs
from dyninf.profiles import Profile
from dyninf.train import predict
from dyninf.trained import (GATERNET_SCHEDULES, finished_runs, train_aig, train_baseline, train_blockdrop,
                            train_gaternet, train_stochastic_depth, trained_plain_resnets)

METHODS = ("plain", "SD", "AIG", "GaterNet", "BlockDrop")
COLUMNS = ["method", "network", "mean MACs (M)", "accuracy (%)"]


def network_point(method: str, network: str, net: nn.Module, data: ImageDataset,
                  device: torch.device | str | None = None) -> dict:
    """A network's test accuracy and the MACs it spends per image on average: for a dynamic
    network with a costed decider, what each image ran plus the decider; else the whole network."""
    decider = getattr(net, "decider", None)
    if hasattr(decider, "macs_and_params"):
        logits, decisions = predict_with_decisions(net, data.test_images, device=device)
        macs = spent_macs(net, decisions).mean().item()
    else:   # a plain ResNet, or stochastic depth (every block runs at test time)
        logits = predict(net, data.test_images, device=device)
        macs = network_cost(getattr(net, "backbone", net)).total_macs
    return {"method": method, "network": network, "mean MACs (M)": macs / 1e6,
            "accuracy (%)": 100 * (logits.argmax(1) == data.test_labels).float().mean().item()}


def trained_networks(profile: Profile, data: ImageDataset, methods=METHODS) -> list[tuple[str, str, nn.Module]]:
    """(method, name, network) for each trained network of ``methods``, loaded in eval mode:
    plain ResNets of every depth, stochastic depth, AIG per target rate, GaterNet per L1 weight,
    BlockDrop per penalty."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")
    found = []
    if "plain" in methods:
        for depth in trained_plain_resnets(profile):
            found.append(("plain", f"plain ResNet-{depth}", train_baseline(profile, data, depth, progress=False)[0]))
    if "SD" in methods:
        for match in finished_runs(profile, rf"resnet{profile.depth}_sd_pL([\d.]+)"):
            net, _ = train_stochastic_depth(profile, data, float(match[1]), progress=False)
            found.append(("SD", f"SD ResNet-{profile.depth}, p_L = {match[1]}", net))
    if "AIG" in methods:
        for match in finished_runs(profile, rf"resnet{profile.depth}_aig_t([\d.]+)"):
            found.append(("AIG", f"AIG, t = {match[1]}", train_aig(profile, data, float(match[1]), progress=False)[0]))
    if "GaterNet" in methods:
        from_scratch = not GATERNET_SCHEDULES[profile.name]["finetune"]
        for match in finished_runs(profile, r"resnet(\d+)(_bottleneck)?_gaternet_l([\d.]+)"):
            backbone = (int(match[1]), bool(match[2])) if from_scratch else None
            net, _ = train_gaternet(profile, data, float(match[3]), progress=False, scratch_backbone=backbone)
            name = f"GaterNet ResNet-{match[1]}, λ = {match[3]}" if from_scratch else f"GaterNet, λ = {match[3]}"
            found.append(("GaterNet", name, net))
    if "BlockDrop" in methods:
        for match in finished_runs(profile, r"resnet(\d+)_blockdrop_g([\d.]+)"):
            net, _ = train_blockdrop(profile, data, float(match[2]), progress=False, depth=int(match[1]))
            found.append(("BlockDrop", f"BlockDrop ResNet-{match[1]}, γ = {match[2]}", net))
    return [(method, name, net.eval()) for method, name, net in found]


def trained_points(profile: Profile, data: ImageDataset, methods=METHODS) -> pd.DataFrame:
    """One row (``COLUMNS``) per trained network of ``methods`` (see ``trained_networks``)."""
    rows = [network_point(method, name, net, data, profile.device)
            for method, name, net in trained_networks(profile, data, methods)]
    return pd.DataFrame(rows, columns=COLUMNS)
