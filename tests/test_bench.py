"""The skipping benchmark in its tiny configuration: its table is right (ideal speed-ups from
MACs, masked and skipped agree), not how fast anything is."""
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.deciders import random_decisions

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "skipping.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("skipping_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_benchmark_table_ideal_speedups_agreement_and_summary_line(bench, tmp_path, capsys):
    # on the CPU, where float32 agreement is tight (tests/test_devices.py runs it on CUDA too)
    assert bench.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--keep", "0.25", "0.5", "1.0"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"realized/ideal speed-up at keep 0\.5: batch1=\d+\.\d\d batch4=\d+\.\d\d", printed[-1])
    payload = json.loads((tmp_path / "skipping-quick.json").read_text())
    assert (tmp_path / "skipping-quick.png").stat().st_size > 0
    rows = {(r["case"], r["batch"]): r for r in payload["rows"]}
    assert set(rows) == {(f"random keep {k}", b) for k in ("0.25", "0.5", "1") for b in (1, 4)}
    cost = network_cost(cifar_resnet(8, width=8))
    for keep in (0.25, 0.5, 1.0):
        decisions = random_decisions(8, 3, keep, seed=0)   # the tiny run's 8 images and their decisions
        spent = cost.spent_macs(decisions)
        assert rows[(f"random keep {keep:g}", 1)]["ideal speed-up"] == pytest.approx(cost.total_macs / spent.mean().item())
        assert rows[(f"random keep {keep:g}", 4)]["ideal speed-up"] == pytest.approx(cost.total_macs / spent[:4].mean().item())
    assert rows[("random keep 1", 4)]["ideal speed-up"] == 1.0
    for row in payload["rows"]:
        assert row["max |masked - skipped|"] < 1e-4
        assert row["skipped speed-up"] == pytest.approx(row["plain ms"] / row["skipped ms"])
        assert row["realized / ideal"] == pytest.approx(row["skipped speed-up"] / row["ideal speed-up"])
        assert row["skipped / masked speed-up"] == pytest.approx(row["masked ms"] / row["skipped ms"])
        for mode in ("masked", "skipped"):
            assert row[f"{mode} speed-up low"] <= row[f"{mode} speed-up"] * (1 + 1e-9) <= row[f"{mode} speed-up high"] * (1 + 2e-9)
        # masked mode cannot be faster, nor skipping with nothing skipped (ideal 1): never read as a gain
        assert row["masked reading"] in {"slower", "no measurable difference", "noise: masked cannot beat plain"}
        assert row["skipped reading"] in {"faster", "slower", "no measurable difference", "noise: above the ideal from MACs"}
        assert row["plain CUDA graph ms"] != row["plain CUDA graph ms"]   # NaN: no CUDA graph on a CPU
        assert sum(map(float, row["blocks skip/all/gather"].split("/"))) == pytest.approx(3, abs=0.01)   # 3 blocks, 3 digits
    assert payload["skipping_policy"] == {"gather_at_most": 0.9, "gather_saving_at_least": 1,
                                          "plan_local_decisions": True, "slice_filters": True}
    # batch 4, all three blocks run by all four images at keep 1: no block skipped or gathered
    assert rows[("random keep 1", 4)]["blocks skip/all/gather"] == "0/3/0"
    assert all(rows[("random keep 1", b)]["skipped reading"] != "faster" for b in (1, 4))


def test_ways_of_averages_the_block_counts_over_the_batches(bench):
    assert bench.ways_of([["skip", "all"], ["gather", "all"]]) == "0.5/1/0.5"


def test_summary_line_reads_the_keep_rate_rows(bench):
    import pandas as pd

    table = pd.DataFrame({"case": ["random keep 0.5", "random keep 0.5", "random keep 1"],
                          "batch": [1, 256, 1], "realized / ideal": [0.874, 0.911, 0.5]})
    assert bench.summary_line(table) == "realized/ideal speed-up at keep 0.5: batch1=0.87 batch256=0.91"


def test_on_a_gpu_the_summary_line_adds_the_speed_up_over_the_cuda_graph(bench):
    import pandas as pd

    table = pd.DataFrame({"case": ["random keep 0.5"] * 2, "batch": [1, 256], "realized / ideal": [0.874, 0.3],
                          "speed-up over the CUDA graph": [0.24, 0.43]})
    assert bench.summary_line(table) == ("realized/ideal speed-up at keep 0.5: batch1=0.87 batch256=0.30; "
                                         "skipped over the CUDA-graph plain network: batch1=0.24 batch256=0.43")


def test_a_global_decider_is_timed_alone_beside_its_share_of_the_macs(bench):
    from dyninf.deciders import BlockDropPolicy
    from dyninf.network.dynamic import DynamicNetwork, spent_macs

    torch.manual_seed(0)
    backbone = cifar_resnet(8, width=8)
    net = DynamicNetwork(backbone, BlockDropPolicy(3, depth=8, width=4)).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        _, decisions = net(images, return_decisions=True)
    spent = spent_macs(net, decisions)
    policy_macs = net.decider.macs_and_params()[0]
    row = bench.time_case("policy", backbone, lambda x, d, mode, **record: net(x, mode=mode, **record), decisions, spent,
                          network_cost(backbone).total_macs, images, 4, 0.01, net.decider)
    assert row["decider % of MACs"] == pytest.approx(100 * policy_macs / spent.mean().item())
    assert 0 < row["decider % of time"] and row["max |masked - skipped|"] < 1e-4


def test_a_case_reads_its_speed_ups_from_the_rounds_it_was_timed_in(bench, monkeypatch):
    backbone = cifar_resnet(8, width=8).eval()
    images, decisions = torch.randn(4, 3, 32, 32), torch.tensor([[1.0, 0, 1]] * 4)
    seen = {}

    def rounds(plain, run, inputs, min_run_time, others):   # hand-made seconds per round
        seen["others"] = set(others)
        return {"plain": [1.0, 1.1, 1.0], "masked": [0.9, 1.2, 1.0], "skipped": [0.5, 0.6, 0.5],
                "plain, TorchScript": [0.6, 0.5, 0.7]}, 0.0

    monkeypatch.setattr(bench, "time_modes", rounds)
    cost = network_cost(backbone)
    spent = cost.spent_macs(decisions)
    row = bench.time_case("fixed", backbone, lambda x, d, mode, **record: backbone(x, decisions=d, mode=mode, **record), decisions,
                          spent, cost.total_macs, images, 4, 0.01)
    assert seen["others"] == {"plain, TorchScript"}   # no decider; on a CPU the static baseline is TorchScript
    assert (row["masked speed-up"], row["masked speed-up low"], row["masked speed-up high"]) == pytest.approx(
        (1 / 0.9, 1.1 / 1.2, 1 / 0.9))
    assert row["masked reading"] == "no measurable difference"
    assert (row["skipped speed-up"], row["skipped speed-up low"], row["skipped speed-up high"]) == pytest.approx(
        (2.0, 1.1 / 0.6, 2.0))
    ideal = cost.total_macs / spent.mean().item()
    assert row["ideal speed-up"] == pytest.approx(ideal) and row["realized / ideal"] == pytest.approx(2.0 / ideal)
    assert row["skipped reading"] == ("noise: above the ideal from MACs" if 1.1 / 0.6 > ideal else "faster")
    assert row["plain ms"] == pytest.approx(1e3) and row["skipped ms"] == pytest.approx(500)
    assert row["static baseline"] == "TorchScript" and row["plain static ms"] == pytest.approx(500)
    assert (row["skipped over static plain"], row["skipped over static plain low"], row["skipped over static plain high"]) == \
        pytest.approx((1.0, 0.5 / 0.6, 1.4))
    assert row["skipped over static plain reading"] == "no measurable difference"


def test_the_figure_draws_the_rounds_range_as_an_error_bar_where_the_table_has_it():
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.container import ErrorbarContainer

    from dyninf.course.display import plot_speedups

    table = pd.DataFrame([{"case": "a", "batch": 1, "ideal speed-up": 2.0, "skipped speed-up": 1.5,
                           "skipped speed-up low": 1.25, "skipped speed-up high": 1.75, "realized / ideal": 0.75,
                           "plain ms": 2.0, "plain CUDA graph ms": float("nan")}])
    for frame, bars in ((table, 1), (table.drop(columns=["skipped speed-up low", "skipped speed-up high"]), 0)):
        figure = plot_speedups(frame, "title")
        errorbars = [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]
        assert len(errorbars) == bars
        if bars:
            segments = errorbars[0].lines[2][0].get_segments()
            assert [tuple(point[0] for point in segment) for segment in segments] == [(1.25, 1.75)]
        plt.close(figure)


def test_the_goals_are_read_from_the_rows_with_their_spread(bench):
    import pandas as pd

    def row(case, batch, speedup, low, high, ideal, reading, decider=(float("nan"), float("nan")), static=(1.0, 0.9, 1.1)):
        return {"case": case, "batch": batch, "skipped speed-up": speedup, "skipped speed-up low": low,
                "skipped speed-up high": high, "ideal speed-up": ideal, "realized / ideal": speedup / ideal,
                "skipped reading": reading, "decider % of time": decider[0], "decider % of MACs": decider[1],
                "decider % of time low": 0.9 * decider[0], "decider % of time high": 1.1 * decider[0],
                "skipped over static plain": static[0], "skipped over static plain low": static[1],
                "skipped over static plain high": static[2]}

    table = pd.DataFrame([row("random keep 1", 1, 0.96, 0.9, 1.02, 1.0, "no measurable difference"),
                          row("random keep 0.5", 1, 1.8, 1.7, 1.9, 1.9, "faster", static=(1.2, 1.1, 1.3)),
                          row("AIG", 1, 0.95, 0.9, 1.01, 1.3, "no measurable difference"),
                          row("BlockDrop", 1, 0.8, 0.7, 0.85, 1.1, "slower", decider=(20.0, 8.0)),
                          row("GaterNet", 1, 0.9, 0.8, 0.95, 0.95, "slower", decider=(11.0, 8.0)),
                          row("AIG", 256, 0.9, 0.85, 0.95, 1.3, "slower"),
                          row("random keep 1", 256, 1.0, 0.97, 1.03, 1.0, "no measurable difference")])
    goals = bench.goal_rows(table).set_index(["goal", "case", "batch"])
    met = goals["met"].to_dict()
    assert met == {("nothing to skip: skipped / plain", "random keep 1", 1): False,         # 0.96 < 0.97
                   ("keep 0.5: realized / ideal", "random keep 0.5", 1): True,              # 1.8 / 1.9
                   ("stretch, keep 0.5: skipped / static plain", "random keep 0.5", 1): True,
                   ("trained, ideal > 1: skipped / plain", "AIG", 1): True,                  # within the spread
                   ("trained, ideal > 1: skipped / plain", "BlockDrop", 1): False,           # measurably slower
                   ("decider: % of time / % of MACs", "BlockDrop", 1): False,               # 2.5
                   ("decider: % of time / % of MACs", "GaterNet", 1): True,                 # 1.375; its ideal is below 1
                   ("largest batch: not slower than plain", "AIG", 256): False,
                   ("largest batch: not slower than plain", "random keep 1", 256): True}
    share = goals.loc[("decider: % of time / % of MACs", "BlockDrop", 1)]
    assert (share["measured"], share["rounds low"], share["rounds high"]) == pytest.approx((2.5, 2.25, 2.75))
    keep = goals.loc[("keep 0.5: realized / ideal", "random keep 0.5", 1)]
    assert (keep["measured"], keep["rounds low"], keep["rounds high"]) == pytest.approx((1.8 / 1.9, 1.7 / 1.9, 1.0))
