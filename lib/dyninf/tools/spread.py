"""How far the course's numbers move between training seeds: the spread each notebook shows beside
its claims, and that the margins of its asserts are sized from.

Two machines give a quick run different numbers from the same seed (their floating-point rounding
differs, and training amplifies it); so do two seeds on one machine. The seeds are the spread we
can measure anywhere, so the course measures it once per profile and ships it:

    python -m dyninf.tools.spread --profile quick --seeds 0 1 2     # the course under each seed (~20 min a seed on 2 cores)

runs the notebooks under each seed (seed 0 reuses the course's own runs), collects every numeric
metric of their metrics JSONs but the timings (the machine's load moves those, not the seed), and
writes ``results/<profile>/seed-spread.json`` and ``.md``: each
metric's value per seed, mean, standard deviation, minimum and maximum, with the machine and date.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import date
from pathlib import Path

from dyninf.tools.report import table_cell
from dyninf.tools.runner import notebooks_in_order, run_course
from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import build_dir, course_root
from dyninf.course.profiles import Profile
from dyninf.utils.devices import device_name

SPREAD_FILE = "seed-spread.json"
# Notebook 05 only compares what 00-04 trained (its asserts are consistency checks of its own table)
SPREAD_NOTEBOOKS = ("00", "01", "02", "03", "04")


def spread_path(profile: str) -> Path:
    return course_root() / "results" / profile / SPREAD_FILE


TIMING_UNITS = ("s", "x", "ms/image")


def is_timing(metric: dict) -> bool:
    """Times and speed-ups move with the machine's load, not with the seed: `make bench` measures
    them, in one run, on one machine."""
    return metric.get("unit") in TIMING_UNITS or "time" in metric["name"]


def collect(metrics_dirs: dict[int, Path]) -> dict:
    """Per metric: its value under each seed (``metrics_dirs``: seed -> a course run's ``metrics/``)
    and their mean, sample standard deviation, minimum and maximum (numeric metrics only; timings
    left out, see ``is_timing``)."""
    values: dict[str, dict[int, float]] = {}
    machines, versions = set(), set()
    for seed, folder in sorted(metrics_dirs.items()):
        files = sorted(Path(folder).glob("*.json"))
        if not files:
            raise ValueError(f"no metrics JSON in {folder} (the course run of seed {seed})")
        for path in files:
            payload = json.loads(path.read_text())
            machines.add(payload["device"])
            versions.add(payload["torch"])
            for metric in payload["metrics"]:
                if isinstance(metric["value"], (int, float)) and not isinstance(metric["value"], bool) \
                        and not is_timing(metric):
                    values.setdefault(f"{payload['notebook']}: {metric['name']}", {})[seed] = float(metric["value"])
    metrics = {}
    for name, by_seed in values.items():
        numbers = list(by_seed.values())
        metrics[name] = {"values": {str(s): v for s, v in by_seed.items()}, "mean": statistics.fmean(numbers),
                         "sd": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
                         "min": min(numbers), "max": max(numbers)}
    return {"seeds": sorted(metrics_dirs), "device": ", ".join(sorted(machines)),
            "torch": ", ".join(sorted(versions)), "date": date.today().isoformat(), "metrics": metrics}


def spread_markdown(profile: str, spread: dict) -> str:
    lines = [f"# Seed spread, `{profile}` profile", "",
             f"Seeds {', '.join(map(str, spread['seeds']))} on {spread['device']}, torch {spread['torch']}, "
             f"{spread['date']}. Written by `python -m dyninf.tools.spread`; the notebooks show these beside their "
             f"claims.", "", "| metric | " + " | ".join(f"seed {s}" for s in spread["seeds"]) + " | mean | sd |",
             "|---|" + "---|" * (len(spread["seeds"]) + 2)]
    for name, m in spread["metrics"].items():
        cells = [f"{m['values'].get(str(s), float('nan')):.4g}" for s in spread["seeds"]]
        lines.append(f"| {table_cell(name)} | " + " | ".join(cells) + f" | {m['mean']:.4g} | {m['sd']:.3g} |")
    return "\n".join(lines) + "\n"


def measured_spread(profile: str, notebook: str, metric: str) -> dict | None:
    """The shipped spread of ``metric`` of ``notebook`` in ``profile`` (None when none was measured)."""
    path = spread_path(profile)
    if not path.exists():
        return None
    return json.loads(path.read_text())["metrics"].get(f"{notebook}: {metric}")


def spread_note(profile: Profile, notebook: str, metric: str, this_run: float, unit: str = "",
                digits: int = 2) -> str:
    """One line for a notebook: this run's value of ``metric`` (with its seed and machine) beside
    the shipped spread across seeds, which says where it was measured; or that none was measured."""
    here = f"this run (seed {profile.seed}, {device_name(profile.device)}): {this_run:.{digits}f}{unit}"
    found = measured_spread(profile.name, notebook, metric)
    if found is None:
        return f"{metric}: {here}; no seed spread measured for the {profile.name!r} profile"
    spread = json.loads(spread_path(profile.name).read_text())
    values = ", ".join(f"{v:.{digits}f}" for v in found["values"].values())
    text = (f"{metric}: {here}; seeds {', '.join(found['values'])} on {spread['device']} "
            f"(torch {spread['torch']}, {spread['date']}): {values}{unit} "
            f"(mean {found['mean']:.{digits}f}, sd {found['sd']:.{digits}f})")
    stored = found["values"].get(str(profile.seed))
    if stored is not None and round(stored, digits) != round(this_run, digits):
        text += (f"; seed {profile.seed} gave {stored:.{digits}f}{unit} there: a different machine, thread "
                 f"count or library version rounds differently, and training amplifies it")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=build_dir() / "spread", help="the course runs' outputs")
    parser.add_argument("--collect-only", action="store_true", help="collect runs already made under --out")
    args = parser.parse_args(argv)
    notebooks = [nb for nb in notebooks_in_order() if nb.name[:2] in SPREAD_NOTEBOOKS]
    folders = {seed: args.out / f"seed{seed}" for seed in args.seeds}
    failed = []
    if not args.collect_only:
        for seed, folder in folders.items():
            if not run_course(args.profile, folder, notebooks, seed, keep_going=True):
                failed.append(seed)
                print(f"[spread] a notebook failed under seed {seed}: see {folder}/REPORT.md", file=sys.stderr)
    spread = collect({seed: folder / "metrics" for seed, folder in folders.items()})
    path = spread_path(args.profile)
    atomic_write_text(path, json.dumps(spread, indent=1))
    atomic_write_text(path.with_suffix(".md"), spread_markdown(args.profile, spread))
    print(f"[spread] {len(spread['metrics'])} metrics over seeds {args.seeds}: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
