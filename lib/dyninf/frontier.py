"""Accuracy against mean MACs per image for the networks of a profile that are already trained,
and the static frontier they are judged against: the points every notebook puts its own results
beside. Nothing is trained here; a method whose runs are missing is simply absent."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from dyninf import skipping
from dyninf.cost import network_cost
from dyninf.data import ImageDataset
from dyninf.decisions import DeciderKind
from dyninf.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.inference import predict
from dyninf.networks import (finished_runs, train_aig, train_baseline, train_blockdrop, train_gaternet,
                             train_stochastic_depth, trained_plain_resnets)
from dyninf.profiles import Profile
from dyninf.recipes import recipes_of
from dyninf.uncertainty import SIGNIFICANT, binomial_standard_error, compare_accuracies

METHODS = ("plain", "SD", "AIG", "GaterNet", "BlockDrop")
COLUMNS = ["method", "network", "mean MACs (M)", "ideal MACs (M)", "accuracy (%)", "standard error (points)",
           "training epochs", "control"]
# MACS: what skipped mode executes for an image on its own on a CPU (GaterNet's open filters in the
# kernels' blocks of 8); IDEAL_MACS: exactly what the decisions need. Only filter gates tell them apart.
MACS, IDEAL_MACS, ACCURACY = "mean MACs (M)", "ideal MACs (M)", "accuracy (%)"


@dataclass(frozen=True)
class TrainedNetwork:
    method: str          # one of METHODS
    name: str
    net: nn.Module
    epochs: int          # training epochs in all, the pretrained backbone's included
    control: bool = False   # a control run, not a dynamic method (GaterNet without its L1 term)


def network_point(network: TrainedNetwork, data: ImageDataset, device: torch.device | str | None = None) -> dict:
    """A network's test accuracy (with its binomial standard error) and the MACs it spends per
    image on average, executed and ideal (``MACS``, ``IDEAL_MACS``): for a dynamic network with a
    costed decider, what each image ran plus the decider; else the whole network."""
    net = network.net
    if isinstance(net, DynamicNetwork) and net.kind is not DeciderKind.TRAINING_ONLY:
        logits, decisions = predict_with_decisions(net, data.test_images, device=device)
        macs = spent_macs(net, decisions, executed=True).mean().item()
        ideal = spent_macs(net, decisions).mean().item()
    else:   # a plain ResNet, or stochastic depth (every block runs at test time)
        logits = predict(net, data.test_images, device=device)
        macs = ideal = network_cost(getattr(net, "backbone", net)).total_macs
    accuracy = (logits.argmax(1) == data.test_labels).float().mean().item()
    return {"method": network.method, "network": network.name, MACS: macs / 1e6, IDEAL_MACS: ideal / 1e6,
            ACCURACY: 100 * accuracy,
            "standard error (points)": 100 * binomial_standard_error(accuracy, len(data.test_labels)),
            "training epochs": network.epochs, "control": network.control}


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


def static_frontier(points: pd.DataFrame, cost: str = MACS) -> pd.DataFrame:
    """The plain networks that no cheaper plain network beats in accuracy, by increasing ``cost``."""
    plain = points[points.method == "plain"].sort_values(cost)
    return plain[plain[ACCURACY] > plain[ACCURACY].cummax().shift(fill_value=-1.0)]


def frontier_accuracy(frontier: pd.DataFrame, cost_value: float, chance: float, cost: str = MACS) -> float:
    """The static frontier's accuracy (%) at ``cost_value``: linear between its plain networks,
    flat beyond the last, and below the first the line from (0, ``chance`` %) to it."""
    xs = np.concatenate([[0.0], frontier[cost].to_numpy()])
    ys = np.concatenate([[chance], frontier[ACCURACY].to_numpy()])
    return float(np.interp(cost_value, xs, ys))


def judge_against_frontier(points: pd.DataFrame, chance: float, images: int, cost: str = MACS) -> pd.DataFrame:
    """``points`` with the frontier's accuracy at each network's cost, the difference ("above
    frontier (points)") and a verdict: "above" or "below" only where the difference exceeds
    ``SIGNIFICANT`` standard errors, else "within error"; plain networks are "static". Where the
    cheapest plain network beats all the others, the frontier is the line from chance to it: a
    judgement of little worth, which notebook 05 rules out in the profiles whose claims it checks."""
    frontier = static_frontier(points, cost)
    if frontier.empty:
        raise ValueError("a static frontier needs at least one plain network; the points have none")
    judged = points.copy()
    judged["frontier accuracy (%)"] = judged[cost].map(lambda value: frontier_accuracy(frontier, value, chance, cost))
    judged["above frontier (points)"] = judged[ACCURACY] - judged["frontier accuracy (%)"]

    def verdict(row):
        if row.method == "plain":
            return "static"
        found, _ = compare_accuracies(row[ACCURACY] / 100, row["frontier accuracy (%)"] / 100, images)
        return {"higher": "above", "lower": "below"}.get(found, found)
    judged["verdict"] = judged.apply(verdict, axis=1)
    return judged


def cost_sentences(points: pd.DataFrame, reference: str, images: int) -> list[str]:
    """One sentence per dynamic network (or control) in ``points``, against ``reference``, a plain
    network in ``points``: the MACs it spent against the reference's, said plainly when it spent
    more (and what its decisions alone need, where the executed MACs are more), and its accuracy
    against the reference's beside the standard error of the difference."""
    ref = points.set_index("network").loc[reference]
    sentences = []
    for _, row in points[points.method != "plain"].iterrows():
        ratio = row[MACS] / ref[MACS]
        if abs(ratio - 1) < 0.005:
            spent = f"spent the same MACs per image as the {reference} ({ref[MACS]:.2f} M)"
        elif ratio > 1:
            spent = (f"**spent more MACs than the {reference}**: {row[MACS]:.2f} M per image against "
                     f"{ref[MACS]:.2f} M ({100 * (ratio - 1):.0f}% more)")
        else:
            spent = (f"spent {row[MACS]:.2f} M MACs per image, {100 * (1 - ratio):.0f}% fewer than the "
                     f"{reference} ({ref[MACS]:.2f} M)")
        if row[MACS] > 1.005 * row[IDEAL_MACS]:
            spent += (f" (its open filters alone need {row[IDEAL_MACS]:.2f} M: skipped mode computes them in "
                      f"blocks of {skipping.FILTER_BLOCK})")
        difference = row[ACCURACY] - ref[ACCURACY]
        found, error = compare_accuracies(row[ACCURACY] / 100, ref[ACCURACY] / 100, images)
        if found == "within error":
            accuracy = (f"within sampling error of it in accuracy ({difference:+.1f} points, standard error of the "
                        f"difference {100 * error:.1f})")
        else:
            accuracy = (f"{abs(difference):.1f} points {'more' if found == 'higher' else 'less'} accurate "
                        f"(standard error of the difference {100 * error:.1f})")
        sentences.append(f"{row.network} {spent}, and was {accuracy}.")
    return sentences


def frontier_sentences(judged: pd.DataFrame) -> list[str]:
    """What ``judge_against_frontier`` found, one sentence per verdict, controls apart."""
    dynamic = judged[(judged.method != "plain") & ~judged.control.astype(bool)]
    sentences = []
    for verdict, words in [("above", f"above the static frontier by more than {SIGNIFICANT:g} standard errors"),
                           ("within error", "within sampling error of the static frontier"),
                           ("below", f"below the static frontier by more than {SIGNIFICANT:g} standard errors")]:
        rows = dynamic[dynamic.verdict == verdict]
        if len(rows):
            listed = "; ".join(f"{r.network} ({r['above frontier (points)']:+.1f} points)" for _, r in rows.iterrows())
            sentences.append(f"{len(rows)} of {len(dynamic)} dynamic networks {'lies' if len(rows) == 1 else 'lie'} "
                             f"{words}: {listed}.")
    for _, row in judged[judged.control.astype(bool)].iterrows():
        sentences.append(f"{row.network} is a control, not a dynamic method ({row['above frontier (points)']:+.1f} "
                         "points against the frontier): it shows what the extra training and the decider's "
                         "parameters give without the pressure to save work.")
    return sentences
