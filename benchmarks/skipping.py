"""Does skipping work save time? Measured speed-up of masked and skipped execution over the plain
network, beside the ideal one from MACs, on the machine this runs on (`make bench`).

Cases: random per-image block decisions at several keep rates, and the decisions of every trained
decider found in ``runs/<profile>/`` (AIG, BlockDrop, GaterNet; stochastic depth runs every block
at test time, so it is timed with test-time dropping at its survival probabilities). For each
case and batch size, ``torch.utils.benchmark`` times the plain network, masked mode and skipped
mode in one run; batch 1 cycles through several images, so that the time is an average over
different decisions, as the ideal speed-up is. A global decider (BlockDrop's policy, GaterNet's
gater) is also timed alone: its share of the time beside its share of the MACs says how much of
the gap to the ideal is the decider's (at batch 1 a small network costs far more time than its
MACs suggest: every operation has a fixed cost).

    python benchmarks/skipping.py --profile quick          # the full benchmark (minutes)
    python benchmarks/skipping.py --tiny --out /tmp/bench  # seconds: what the tests run

Writes ``<out>/skipping-<profile>.json`` and ``.png``, prints the table, and ends with one line
``realized/ideal speed-up at keep 0.5: batch1=... batch256=...``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dyninf.backbones import cifar_resnet  # noqa: E402
from dyninf.batches import model_inputs  # noqa: E402
from dyninf.cost import network_cost  # noqa: E402
from dyninf.deciders import random_decisions  # noqa: E402
from dyninf.dynamic import predict_with_decisions, spent_macs  # noqa: E402
from dyninf.io import atomic_write_text  # noqa: E402
from dyninf.latency import BATCH_ONE_IMAGES, compare_modes, time_calls, timing_slices  # noqa: E402
from dyninf.paths import build_dir  # noqa: E402
from dyninf.profiles import get_profile  # noqa: E402
from dyninf.report import device_name  # noqa: E402

KEEP_RATES = (0.25, 0.5, 0.75, 1.0)


def time_case(case: str, plain, run, decisions: torch.Tensor, spent: torch.Tensor, plain_macs: int,
              images: torch.Tensor, batch_size: int, min_run_time: float, decider=None) -> dict:
    """One row: ``run(images, decisions, mode=...)`` in both modes against ``plain(images)``, and
    a global ``decider`` (policy, gater) timed alone, beside its share of the MACs."""
    parts = timing_slices(len(images), batch_size)
    inputs = [(images[p], decisions[p]) for p in parts]
    calls = {} if decider is None else {"decider": lambda x, d: decider(x)}
    timed = {**compare_modes(plain, run, inputs, min_run_time), **time_calls(calls, inputs, min_run_time)}
    spent_mean = torch.cat([spent[p] for p in parts]).mean().item()
    ideal = plain_macs / spent_mean
    speedup = timed["plain"] / timed["skipped"]
    return {"case": case, "batch": batch_size, "plain ms": 1e3 * timed["plain"],
            "masked ms": 1e3 * timed["masked"], "skipped ms": 1e3 * timed["skipped"],
            "ideal speed-up": ideal, "masked speed-up": timed["plain"] / timed["masked"],
            "skipped speed-up": speedup, "realized / ideal": speedup / ideal,
            "decider % of MACs": 100 * decider.macs_and_params()[0] / spent_mean if decider is not None else float("nan"),
            "decider % of time": 100 * timed["decider"] / timed["skipped"] if decider is not None else float("nan"),
            "max |masked - skipped|": timed["max |masked - skipped|"]}


def random_cases(backbone, images, keep_rates, batch_sizes, min_run_time, seed=0) -> list[dict]:
    cost = network_cost(backbone)
    rows = []
    for keep in keep_rates:
        decisions = random_decisions(len(images), backbone.num_blocks, keep, seed).to(images.device)
        spent = cost.spent_macs(decisions)
        for batch_size in batch_sizes:
            rows.append(time_case(f"random keep {keep:g}", backbone,
                                  lambda x, d, mode: backbone(x, decisions=d, mode=mode),
                                  decisions, spent, cost.total_macs, images, batch_size, min_run_time))
    return rows


def trained_cases(profile, data, images, batch_sizes, min_run_time) -> list[dict]:
    """The deciders of the profile that are already trained (nothing is trained here)."""
    from dyninf.frontier import trained_networks

    rows = []
    for trained in trained_networks(profile, data, ("SD", "AIG", "GaterNet", "BlockDrop")):
        method, name = trained.method, trained.name
        net = trained.net.to(images.device, memory_format=torch.channels_last)
        backbone = net.backbone
        if method == "SD":   # every block runs at test time: time test-time dropping at its p_l
            survival = net.decider.survival.cpu()
            generator = torch.Generator().manual_seed(0)
            decisions = torch.bernoulli(survival.expand(len(images), -1), generator=generator).to(images.device)
            cost = network_cost(backbone)
            spent, plain_macs = cost.spent_macs(decisions), cost.total_macs
            run = lambda x, d, mode, b=backbone: b(x, decisions=d, mode=mode)  # noqa: E731
            name, decider = f"{name}, test-time drop", None
        else:   # the decider decides on the images themselves; its decisions give the ideal
            _, decisions = predict_with_decisions(net, data.test_images[:len(images)], device=images.device)
            decisions = decisions.to(images.device)
            spent, plain_macs = spent_macs(net, decisions), network_cost(backbone).total_macs
            run = lambda x, d, mode, net=net: net(x, mode=mode)  # noqa: E731
            decider = net.decider if net.decides_once else None   # runs once: time it alone as well
        for batch_size in batch_sizes:
            rows.append(time_case(name, backbone, run, decisions, spent, plain_macs, images, batch_size,
                                  min_run_time, decider))
    return rows


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    """One panel per batch size: ideal and measured speed-up of each case as horizontal bars,
    realized / ideal written beside them."""
    batch_sizes = sorted(table.batch.unique())
    cases = list(dict.fromkeys(table.case))
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(6 * len(batch_sizes), 0.5 * len(cases) + 1.5),
                             sharey=True, squeeze=False)
    for ax, batch_size in zip(axes[0], batch_sizes):
        rows = table[table.batch == batch_size].set_index("case").reindex(cases)
        y = range(len(cases))
        ax.barh([i + 0.2 for i in y], rows["ideal speed-up"], height=0.4, color="lightgray", label="ideal (MACs)")
        ax.barh([i - 0.2 for i in y], rows["skipped speed-up"], height=0.4, color="tab:purple",
                label="skipped, measured")
        for i, (measured, ratio) in enumerate(zip(rows["skipped speed-up"], rows["realized / ideal"])):
            ax.text(measured + 0.05, i - 0.2, f"{ratio:.2f}", va="center", fontsize=8)
        ax.axvline(1, color="k", lw=1)
        ax.set(title=f"batch {batch_size} (numbers: realized / ideal)", xlabel="speed-up over the plain network")
        ax.set_yticks(list(y), cases)
    axes[0][0].invert_yaxis()   # the axes share y: inverting one inverts all
    axes[0][0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_line(table: pd.DataFrame, keep: float = 0.5) -> str:
    rows = table[table.case == f"random keep {keep:g}"].set_index("batch")["realized / ideal"]
    values = " ".join(f"batch{batch}={ratio:.2f}" for batch, ratio in rows.items())
    return f"realized/ideal speed-up at keep {keep:g}: {values}"


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
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, device=args.device)
    device = profile.device
    out = args.out or build_dir() / "bench"
    if args.tiny:
        torch.manual_seed(0)
        backbone = cifar_resnet(8, width=8).to(device, memory_format=torch.channels_last).eval()
        images = torch.randn(8, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        batch_sizes = args.batch_sizes or [1, 4]
        min_run_time = min(args.min_run_time, 0.02)
        rows = random_cases(backbone, images, args.keep, batch_sizes, min_run_time)
    else:
        from dyninf.trained import train_baseline

        data = profile.load_data()
        backbone = train_baseline(profile, data, progress=False)[0].to(device, memory_format=torch.channels_last).eval()
        batch_sizes = args.batch_sizes or list(profile.latency_batch_sizes)
        # channels-last, as the course trains and times its networks (faster on CPUs and GPUs)
        images = model_inputs(data.test_images[:max(max(batch_sizes), BATCH_ONE_IMAGES)], device)
        rows = random_cases(backbone, images, args.keep, batch_sizes, args.min_run_time)
        rows += trained_cases(profile, data, images, batch_sizes, args.min_run_time)
    table = pd.DataFrame(rows)
    machine = device_name(device)
    print(f"skipping benchmark: profile {profile.name}, ResNet-{backbone.depth}, {machine}, torch {torch.__version__}")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"profile": profile.name, "device": machine, "torch": torch.__version__,
               "backbone_depth": backbone.depth, "rows": table.to_dict(orient="records")}
    atomic_write_text(out / f"skipping-{profile.name}.json", json.dumps(payload, indent=1))
    plot(table, out / f"skipping-{profile.name}.png", f"skipping on {machine}")
    print(summary_line(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
