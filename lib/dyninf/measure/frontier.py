"""Judging networks on accuracy against mean MACs per image: a network's point (its test
accuracy with a standard error, and the MACs it spends), the static frontier of the plain networks,
and each dynamic network judged against it, in words. Which networks a profile has trained is the
course's (``dyninf.course.points``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from dyninf.data.cifar import ImageDataset
from dyninf.decisions import DeciderKind
from dyninf.measure.uncertainty import SIGNIFICANT, binomial_standard_error, compare_accuracies
from dyninf.network import skipping
from dyninf.network.cost import network_cost
from dyninf.network.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.network.inference import predict


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
