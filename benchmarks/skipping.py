"""Does skipping work save time? Measured speed-up of masked and skipped execution over the plain
network, beside the ideal one from MACs, on the machine this runs on (`make bench`).

Cases: random per-image block decisions at several keep rates, and the decisions of every trained
decider found in ``runs/<profile>/`` (AIG, BlockDrop, GaterNet; stochastic depth runs every block
at test time, so it is timed with test-time dropping at its survival probabilities). For each
case and batch size, ``torch.utils.benchmark`` times the plain network, masked mode and skipped
mode in the same interleaved rounds: each speed-up comes with its range over the rounds and a
reading (faster, slower, no measurable difference, or a noise flag where it cannot be true).
Batch 1 cycles through several images, so that the time is an average over different decisions,
as the ideal speed-up is. A global decider (BlockDrop's policy, GaterNet's
gater) is also timed alone: its share of the time beside its share of the MACs says how much of
the gap to the ideal is the decider's (at batch 1 a small network costs far more time than its
MACs suggest: every operation has a fixed cost).

Two baselines: the plain network in eager mode (every ratio's denominator), and on a GPU the plain
network replayed as a CUDA graph, the best time a static network has there (a GPU runs these
small networks' kernels faster than the host can launch them; a graph launches them all at once).
Each row also says how skipped mode ran the blocks, per batch on average: skipped, run on the
whole batch, or gathered (``dyninf.network.skipping`` chooses the cheapest way per block).

    python benchmarks/skipping.py --profile quick          # the full benchmark (minutes)
    python benchmarks/skipping.py --depth 110              # random decisions on a ResNet-110
    python benchmarks/skipping.py --tiny --out /tmp/bench  # seconds: what the tests run

Writes ``<out>/skipping-<profile>.json`` and ``.png`` (``skipping-<profile>-resnet<depth>`` with
``--depth``), prints the table, and ends with one line ``realized/ideal speed-up at keep 0.5:
batch1=... batch256=...`` (on a GPU followed by the speed-up over the CUDA-graph plain network).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dyninf.network.backbones import cifar_resnet  # noqa: E402
from dyninf.data.batches import model_inputs  # noqa: E402
from dyninf.network.cost import network_cost  # noqa: E402
from dyninf.deciders import random_decisions  # noqa: E402
from dyninf.course.display import plot_speedups  # noqa: E402
from dyninf.network.dynamic import predict_with_decisions, spent_macs  # noqa: E402
from dyninf.utils.io import atomic_write_text  # noqa: E402
from dyninf.measure.latency import (BATCH_ONE_IMAGES, cuda_graph_replay, paired_speedup, speedup_reading,  # noqa: E402
                            time_modes, timing_slices)
from dyninf.utils.paths import build_dir  # noqa: E402
from dyninf.course.profiles import get_profile  # noqa: E402
from dyninf.utils.devices import device_name  # noqa: E402
from dyninf.network.skipping import WAYS, policy_for  # noqa: E402

KEEP_RATES = (0.25, 0.5, 0.75, 1.0)


def time_case(case: str, plain, run, decisions: torch.Tensor, spent: torch.Tensor, plain_macs: int,
              images: torch.Tensor, batch_size: int, min_run_time: float, decider=None) -> dict:
    """One row: ``run(images, decisions, mode=...)`` in both modes against ``plain(images)`` (and,
    on a GPU, against ``plain`` replayed as a CUDA graph), all in the same interleaved rounds: each
    mode's speed-up of the fastest rounds, its range over the rounds and its reading
    (``dyninf.measure.latency.speedup_reading``: a noise flag where masked beats plain or skipped beats
    the ideal); a global ``decider`` (policy, gater) timed alone beside its share of the MACs; and
    how skipped mode ran the blocks (``run(..., return_record=True)``: its record's ``ways``)."""
    parts = timing_slices(len(images), batch_size)
    inputs = [(images[p], decisions[p]) for p in parts]
    calls = {} if decider is None else {"decider": lambda x, d: decider(x)}
    if images.device.type == "cuda":
        calls["plain, CUDA graph"] = _graph_of(plain, images[parts[0]])
    rounds, difference = time_modes(plain, run, inputs, min_run_time, others=calls)
    timed = {name: min(seconds) for name, seconds in rounds.items()}
    spent_mean = torch.cat([spent[p] for p in parts]).mean().item()
    ideal = plain_macs / spent_mean
    masked = paired_speedup(rounds["plain"], rounds["masked"])
    skipped = paired_speedup(rounds["plain"], rounds["skipped"])
    graph = timed.get("plain, CUDA graph", float("nan"))
    ways = []
    with torch.no_grad():
        for item in inputs:
            ways.append(run(*item, mode="skipped", return_record=True)[1].ways)
    return {"case": case, "batch": batch_size, "plain ms": 1e3 * timed["plain"],
            "masked ms": 1e3 * timed["masked"], "skipped ms": 1e3 * timed["skipped"],
            "ideal speed-up": ideal, "masked speed-up": masked.value, "masked speed-up low": masked.low,
            "masked speed-up high": masked.high, "masked reading": speedup_reading(masked, masked=True),
            "skipped speed-up": skipped.value, "skipped speed-up low": skipped.low,
            "skipped speed-up high": skipped.high, "skipped reading": speedup_reading(skipped, ideal=ideal),
            "realized / ideal": skipped.value / ideal,
            "skipped / masked speed-up": timed["masked"] / timed["skipped"],
            "plain CUDA graph ms": 1e3 * graph, "speed-up over the CUDA graph": graph / timed["skipped"],
            "blocks skip/all/gather": ways_of(ways),
            "decider % of MACs": 100 * decider.macs_and_params()[0] / spent_mean if decider is not None else float("nan"),
            "decider % of time": 100 * timed["decider"] / timed["skipped"] if decider is not None else float("nan"),
            "max |masked - skipped|": difference}


_GRAPHS: dict = {}


def _graph_of(plain, example: torch.Tensor):
    """The plain network replayed as a CUDA graph, one per input shape (recorded once, reused)."""
    key = (id(plain), tuple(example.shape))
    if key not in _GRAPHS:
        _GRAPHS[key] = cuda_graph_replay(plain, example)
    replay = _GRAPHS[key]
    return lambda x, d: replay(x)


def ways_of(batches: list[list[str]]) -> str:
    """How skipped mode ran the blocks (each batch's ``ExecutionRecord.ways``), per batch on average:
    "skip/all/gather" block counts."""
    counts = [sum(ran.count(way) for ran in batches) / len(batches) for way in WAYS]
    return "/".join(f"{count:.3g}" for count in counts)


def random_cases(backbone, images, keep_rates, batch_sizes, min_run_time, seed=0) -> list[dict]:
    cost = network_cost(backbone)
    rows = []
    for keep in keep_rates:
        decisions = random_decisions(len(images), backbone.num_blocks, keep, seed).to(images.device)
        spent = cost.spent_macs(decisions)
        for batch_size in batch_sizes:
            rows.append(time_case(f"random keep {keep:g}", backbone,
                                  lambda x, d, mode, **record: backbone(x, decisions=d, mode=mode, **record),
                                  decisions, spent, cost.total_macs, images, batch_size, min_run_time))
    return rows


def trained_cases(profile, data, images, batch_sizes, min_run_time, policy=None) -> list[dict]:
    """The deciders of the profile that are already trained (nothing is trained here)."""
    from dyninf.course.points import trained_networks

    rows = []
    for trained in trained_networks(profile, data, ("SD", "AIG", "GaterNet", "BlockDrop")):
        method, name = trained.method, trained.name
        net = trained.net.to(images.device, memory_format=torch.channels_last)
        backbone = net.backbone
        backbone.skipping_policy = policy
        if method == "SD":   # every block runs at test time: time test-time dropping at its p_l
            survival = net.decider.survival.cpu()
            generator = torch.Generator().manual_seed(0)
            decisions = torch.bernoulli(survival.expand(len(images), -1), generator=generator).to(images.device)
            cost = network_cost(backbone)
            spent, plain_macs = cost.spent_macs(decisions), cost.total_macs
            run = lambda x, d, mode, b=backbone, **record: b(x, decisions=d, mode=mode, **record)  # noqa: E731
            name, decider = f"{name}, test-time drop", None
        else:   # the decider decides on the images themselves; its decisions give the ideal
            _, decisions = predict_with_decisions(net, data.test_images[:len(images)], device=images.device)
            decisions = decisions.to(images.device)
            spent, plain_macs = spent_macs(net, decisions), network_cost(backbone).total_macs
            run = lambda x, d, mode, net=net, **record: net(x, mode=mode, **record)  # noqa: E731
            decider = net.decider if net.decides_once else None   # runs once: time it alone as well
        for batch_size in batch_sizes:
            rows.append(time_case(name, backbone, run, decisions, spent, plain_macs, images, batch_size,
                                  min_run_time, decider))
    return rows


def summary_line(table: pd.DataFrame, keep: float = 0.5) -> str:
    """Realized / ideal speed-up of random decisions at ``keep``, per batch size; on a GPU also the
    skipped network's speed-up over the plain network replayed as a CUDA graph."""
    rows = table[table.case == f"random keep {keep:g}"].set_index("batch")
    line = f"realized/ideal speed-up at keep {keep:g}: " + " ".join(
        f"batch{batch}={ratio:.2f}" for batch, ratio in rows["realized / ideal"].items())
    graph = rows.get("speed-up over the CUDA graph")
    if graph is not None and graph.notna().any():
        line += "; skipped over the CUDA-graph plain network: " + " ".join(
            f"batch{batch}={ratio:.2f}" for batch, ratio in graph.items())
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--keep", type=float, nargs="+", default=list(KEEP_RATES))
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing")
    parser.add_argument("--out", type=Path, default=None, help="default: build/bench")
    parser.add_argument("--device", default=None, help="default: CUDA when present, else the CPU")
    parser.add_argument("--tiny", action="store_true",
                        help="a ResNet-8 on random images, batch sizes 1 and 4, no trained deciders")
    parser.add_argument("--depth", type=int, default=None,
                        help="random decisions only, on an untrained ResNet of this depth (the time of "
                             "random decisions does not depend on the weights): e.g. 110")
    parser.add_argument("--gather-at-most", type=float, default=None,
                        help="largest share of a batch that skipped mode gathers, any number of images "
                             "left out (default: the device's policy, dyninf.network.skipping.POLICIES)")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, device=args.device)
    device = profile.device
    out = args.out or build_dir() / "bench"
    name = profile.name
    policy = policy_for(device)
    if args.gather_at_most is not None:
        policy = dataclasses.replace(policy, gather_at_most=args.gather_at_most, gather_saving_at_least=1)
    if args.tiny or args.depth:
        torch.manual_seed(0)
        backbone = (cifar_resnet(8, width=8) if args.tiny else cifar_resnet(args.depth))
        backbone = backbone.to(device, memory_format=torch.channels_last).eval()
        backbone.skipping_policy = policy
        batch_sizes = args.batch_sizes or ([1, 4] if args.tiny else list(profile.latency_batch_sizes))
        count = max(max(batch_sizes), 8 if args.tiny else BATCH_ONE_IMAGES)
        images = torch.randn(count, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        min_run_time = min(args.min_run_time, 0.02) if args.tiny else args.min_run_time
        rows = random_cases(backbone, images, args.keep, batch_sizes, min_run_time)
        name = name if args.tiny else f"{name}-resnet{args.depth}"
    else:
        from dyninf.course.trained import train_baseline

        data = profile.load_data()
        backbone = train_baseline(profile, data, progress=False)[0].to(device, memory_format=torch.channels_last).eval()
        backbone.skipping_policy = policy
        batch_sizes = args.batch_sizes or list(profile.latency_batch_sizes)
        # channels-last, as the course trains and times its networks (faster on CPUs and GPUs)
        images = model_inputs(data.test_images[:max(max(batch_sizes), BATCH_ONE_IMAGES)], device)
        rows = random_cases(backbone, images, args.keep, batch_sizes, args.min_run_time)
        rows += trained_cases(profile, data, images, batch_sizes, args.min_run_time, policy)
    table = pd.DataFrame(rows)
    machine = device_name(device)
    print(f"skipping benchmark: profile {profile.name}, ResNet-{backbone.depth}, {machine}, torch {torch.__version__}, "
          f"{policy}")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"profile": profile.name, "device": machine, "torch": torch.__version__,
               "backbone_depth": backbone.depth, "skipping_policy": dataclasses.asdict(policy),
               "rows": table.to_dict(orient="records")}
    atomic_write_text(out / f"skipping-{name}.json", json.dumps(payload, indent=1))
    figure = plot_speedups(table, f"skipping on {machine}, ResNet-{backbone.depth}")
    figure.savefig(out / f"skipping-{name}.png", dpi=120)
    plt.close(figure)
    print(summary_line(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
