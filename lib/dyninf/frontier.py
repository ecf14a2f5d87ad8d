"""Accuracy against mean MACs per image for the networks of a profile that are already trained:
the points every notebook puts its own results beside. Nothing is trained here; a method whose
runs are missing is simply absent."""
from __future__ import annotations

import pandas as pd
import torch

from dyninf.backbones import cifar_resnet
from dyninf.cost import network_cost
from dyninf.data import ImageDataset
from dyninf.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.paths import runs_dir
from dyninf.profiles import Profile
from dyninf.train import load_history
from dyninf.trained import (GATERNET_SCHEDULES, finished_runs, train_aig, train_blockdrop,
                            train_gaternet, trained_plain_resnets)

METHODS = ("plain", "SD", "AIG", "GaterNet", "BlockDrop")
COLUMNS = ["method", "network", "mean MACs (M)", "accuracy (%)"]


def dynamic_point(method: str, network: str, net: DynamicNetwork, data: ImageDataset,
                  device: torch.device | str | None = None) -> dict:
    """A dynamic network's test accuracy and mean spent MACs (its decider's cost included)."""
    logits, decisions = predict_with_decisions(net, data.test_images, device=device)
    return {"method": method, "network": network,
            "mean MACs (M)": spent_macs(net, decisions).mean().item() / 1e6,
            "accuracy (%)": 100 * (logits.argmax(1) == data.test_labels).float().mean().item()}


def trained_points(profile: Profile, data: ImageDataset, methods=METHODS) -> pd.DataFrame:
    """One row per trained network of ``methods``: plain ResNets of every depth, stochastic depth
    (all blocks run at test time), AIG per target rate, GaterNet per L1 weight, BlockDrop per
    penalty."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")
    rows = []
    if "plain" in methods:
        for depth, history in trained_plain_resnets(profile).items():
            rows.append({"method": "plain", "network": f"plain ResNet-{depth}",
                         "mean MACs (M)": network_cost(cifar_resnet(depth)).total_macs / 1e6,
                         "accuracy (%)": 100 * history.test_accuracy.iloc[-1]})
    if "SD" in methods:
        for match in finished_runs(profile, rf"resnet(\d+)_sd_pL([\d.]+)"):
            history = load_history(runs_dir() / profile.runs / match.group(0))
            rows.append({"method": "SD", "network": f"SD ResNet-{match[1]}, p_L = {match[2]}",
                         "mean MACs (M)": network_cost(cifar_resnet(int(match[1]))).total_macs / 1e6,
                         "accuracy (%)": 100 * history.test_accuracy.iloc[-1]})
    if "AIG" in methods:
        for match in finished_runs(profile, rf"resnet{profile.depth}_aig_t([\d.]+)"):
            net, _ = train_aig(profile, data, float(match[1]), progress=False)
            rows.append(dynamic_point("AIG", f"AIG, t = {match[1]}", net, data, profile.device))
    if "GaterNet" in methods:
        from_scratch = not GATERNET_SCHEDULES[profile.name]["finetune"]
        for match in finished_runs(profile, r"resnet(\d+)(_bottleneck)?_gaternet_l([\d.]+)"):
            backbone = (int(match[1]), bool(match[2])) if from_scratch else None
            net, _ = train_gaternet(profile, data, float(match[3]), progress=False, scratch_backbone=backbone)
            name = f"GaterNet ResNet-{match[1]}, λ = {match[3]}" if from_scratch else f"GaterNet, λ = {match[3]}"
            rows.append(dynamic_point("GaterNet", name, net, data, profile.device))
    if "BlockDrop" in methods:
        for match in finished_runs(profile, r"resnet(\d+)_blockdrop_g([\d.]+)"):
            net, _ = train_blockdrop(profile, data, float(match[2]), progress=False, depth=int(match[1]))
            rows.append(dynamic_point("BlockDrop", f"BlockDrop ResNet-{match[1]}, γ = {match[2]}", net, data,
                                      profile.device))
    return pd.DataFrame(rows, columns=COLUMNS)
