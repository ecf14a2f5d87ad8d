"""The static frontier, the verdicts against it and the sentences generated from them, on
hand-built points whose answers are computed by hand."""
import pandas as pd
import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.data.cifar import synthetic_dataset
from dyninf.deciders import AIGGates, Gater
from dyninf.network.dynamic import DynamicNetwork, predict_with_decisions, spent_macs
from dyninf.measure.frontier import (COLUMNS, IDEAL_MACS, MACS, TrainedNetwork, cost_sentences, frontier_accuracy,
                                     frontier_sentences, judge_against_frontier, network_point, static_frontier)

IMAGES = 2000


def _points(*rows):
    table = pd.DataFrame([dict(zip(["method", "network", "mean MACs (M)", "accuracy (%)"], row[:4]),
                               **{"training epochs": 8, "control": row[4] if len(row) > 4 else False})
                          for row in rows])
    table["standard error (points)"] = 1.0
    table["ideal MACs (M)"] = table["mean MACs (M)"]
    return table[COLUMNS]


PLAIN = [("plain", "plain ResNet-8", 10.0, 50.0), ("plain", "plain ResNet-14", 20.0, 60.0),
         ("plain", "plain ResNet-20", 40.0, 70.0)]


def test_the_frontier_drops_plain_networks_that_a_cheaper_one_beats():
    points = _points(*PLAIN, ("plain", "plain ResNet-26", 50.0, 65.0), ("AIG", "AIG", 15.0, 90.0))
    assert static_frontier(points).network.tolist() == ["plain ResNet-8", "plain ResNet-14", "plain ResNet-20"]


def test_frontier_accuracy_interpolates_and_is_flat_beyond_the_last_network():
    frontier = static_frontier(_points(*PLAIN))
    assert frontier_accuracy(frontier, 15.0, chance=10.0) == pytest.approx(55.0)   # halfway from 50 to 60
    assert frontier_accuracy(frontier, 5.0, chance=10.0) == pytest.approx(30.0)    # on the line from (0, 10) to (10, 50)
    assert frontier_accuracy(frontier, 80.0, chance=10.0) == pytest.approx(70.0)


def test_verdicts_need_more_than_two_standard_errors():
    # at 30 M the frontier is at 65%; the standard error of a difference near 65% on 2,000 images
    # is about 1.5 points, so 2 standard errors are about 3 points
    points = _points(*PLAIN, ("AIG", "clearly above", 30.0, 70.0), ("AIG", "barely above", 30.0, 66.0),
                     ("GaterNet", "clearly below", 30.0, 60.0), ("BlockDrop", "barely below", 30.0, 63.5))
    judged = judge_against_frontier(points, chance=10.0, images=IMAGES).set_index("network")
    assert judged.loc["clearly above", "above frontier (points)"] == pytest.approx(5.0)
    assert judged.verdict.to_dict() == {"plain ResNet-8": "static", "plain ResNet-14": "static",
                                        "plain ResNet-20": "static", "clearly above": "above",
                                        "barely above": "within error", "clearly below": "below",
                                        "barely below": "within error"}


def test_a_frontier_of_one_plain_network_is_the_line_from_chance_to_it_and_none_is_no_frontier():
    # ResNet-8 at (10 M, 50%), chance 10%: at 5 M the line is at 30%, beyond 10 M flat at 50%
    points = _points(PLAIN[0], ("plain", "plain ResNet-14", 20.0, 45.0), ("AIG", "cheap", 5.0, 30.0),
                     ("AIG", "dear", 30.0, 50.0))
    judged = judge_against_frontier(points, chance=10.0, images=IMAGES).set_index("network")
    assert judged["frontier accuracy (%)"].to_dict() == pytest.approx(
        {"plain ResNet-8": 50.0, "plain ResNet-14": 50.0, "cheap": 30.0, "dear": 50.0})
    with pytest.raises(ValueError, match="at least one plain network"):
        judge_against_frontier(_points(("AIG", "AIG", 5.0, 60.0)), chance=10.0, images=IMAGES)


def test_the_generated_verdict_counts_each_kind_and_keeps_controls_apart():
    points = _points(*PLAIN, ("AIG", "AIG, t = 0.5", 30.0, 70.0), ("BlockDrop", "BlockDrop", 30.0, 55.0),
                     ("GaterNet", "GaterNet, λ = 0 (control: no L1 term)", 42.0, 75.0, True))
    text = " ".join(frontier_sentences(judge_against_frontier(points, chance=10.0, images=IMAGES)))
    assert "1 of 2 dynamic networks lies above the static frontier" in text and "AIG, t = 0.5 (+5.0 points)" in text
    assert "1 of 2 dynamic networks lies below the static frontier" in text and "BlockDrop (-10.0 points)" in text
    assert "within sampling error" not in text
    assert "GaterNet, λ = 0 (control: no L1 term) is a control, not a dynamic method (+5.0 points" in text


def test_cost_sentences_say_plainly_when_a_network_spent_more_than_the_plain_one():
    points = _points(*PLAIN, ("BlockDrop", "BlockDrop", 42.0, 70.5), ("AIG", "AIG", 30.0, 60.0),
                     ("SD", "SD", 40.0, 60.0))
    sentences = cost_sentences(points, "plain ResNet-20", IMAGES)
    said = dict(zip(["BlockDrop", "AIG", "SD"], sentences))
    assert len(sentences) == 3 and all(s.startswith(name) for name, s in said.items())   # plain networks are the yardstick
    assert said["BlockDrop"].startswith("BlockDrop **spent more MACs than the plain ResNet-20**: 42.00 M per image "
                                        "against 40.00 M (5% more)")
    assert "within sampling error of it in accuracy (+0.5 points" in said["BlockDrop"]
    assert "spent 30.00 M MACs per image, 25% fewer than the plain ResNet-20" in said["AIG"]
    assert "10.0 points less accurate" in said["AIG"]
    assert "spent the same MACs per image as the plain ResNet-20" in said["SD"]


def test_cost_sentences_say_what_the_open_filters_alone_need_where_more_is_executed():
    points = _points(*PLAIN, ("GaterNet", "GaterNet, λ = 1", 30.0, 70.0), ("AIG", "AIG", 30.0, 70.0))
    points.loc[points.network == "GaterNet, λ = 1", IDEAL_MACS] = 24.0
    gaternet, aig = cost_sentences(points, "plain ResNet-20", IMAGES)
    assert gaternet.startswith("GaterNet, λ = 1 spent 30.00 M MACs per image, 25% fewer than the plain ResNet-20 "
                               "(40.00 M) (its open filters alone need 24.00 M: skipped mode computes them in blocks of 8)")
    assert "open filters" not in aig


def test_a_points_macs_are_what_skipped_mode_executes_with_the_ideal_beside_them():
    torch.manual_seed(0)
    data = synthetic_dataset(train_per_class=1, test_per_class=4)
    backbone = cifar_resnet(8)
    gaternet = DynamicNetwork(backbone, Gater.for_backbone(backbone, depth=8)).eval()
    with torch.no_grad():   # about half the filters open, so that padding them to blocks of 8 shows
        gaternet.decider.fc2.bias.normal_(0, 1)
    point = network_point(TrainedNetwork("GaterNet", "GaterNet", gaternet, 1), data)
    _, gates = predict_with_decisions(gaternet, data.test_images)
    assert point[MACS] == pytest.approx(spent_macs(gaternet, gates, executed=True).mean().item() / 1e6)
    assert point[IDEAL_MACS] == pytest.approx(spent_macs(gaternet, gates).mean().item() / 1e6)
    assert point[IDEAL_MACS] < point[MACS]
    aig_backbone = cifar_resnet(8)
    aig = DynamicNetwork(aig_backbone, AIGGates(aig_backbone)).eval()
    aig_point = network_point(TrainedNetwork("AIG", "AIG", aig, 1), data)
    assert aig_point[MACS] == aig_point[IDEAL_MACS]   # blocks run whole: executed is ideal
