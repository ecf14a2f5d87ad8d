"""`make gpu-check`: the course checked on a machine with a GPU, in one command.

    python -m dyninf.tools.gpu_check --out build/gpu-check             # on a GPU: the whole check
    python -m dyninf.tools.gpu_check --dry-run --out /tmp/gpu-check    # on a CPU: the same steps, cut short

Steps, each logged to ``<out>/<step>.log`` and timed:

1. the environment: device, Python, PyTorch, CUDA, and every package of requirements.txt with the
   version found beside the pinned one (reported, not enforced: a GPU runner's image has its own
   PyTorch; the pin test stays in `make test`);
2. the unit tests, the CUDA ones included (``-m "not notebook and not pins"``; dry run: only the
   ``cuda`` tests, which a CPU skips);
3. the standard profile's recipes, each for one epoch on 2 images per class (the same in a dry run);
4. the quick course on the GPU, every notebook (dry run: notebook 00 in the tiny profile);
5. `make bench`, then its random decisions on a ResNet-110 (dry run: its tiny configuration).

Then ``<out>/SUMMARY.md`` (one page: device, versions, per-step and per-notebook status and time,
the benchmark's summary line) and ``<out>.tar.gz`` with everything the steps wrote. Exit status 0
only if every step passed. Runs in whatever environment it is started in: no install step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import build_dir, course_root
from dyninf.utils.devices import device_name

NOTEBOOK_PACKAGES = ("papermill", "nbconvert", "ipykernel", "nbformat")   # the course step needs these
BENCH_SUMMARY = re.compile(r"^realized/ideal speed-up .*$", re.MULTILINE)


@dataclass
class Step:
    name: str
    status: str = "not run"     # "ok", "FAILED", "not run"
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


def pinned_versions(requirements: Path) -> list[tuple[str, str, str]]:
    """(package, pinned version, version found here or "missing") for each pin of requirements.txt;
    the found version without its local label (``2.14.1+cu130`` is the pinned ``2.14.1``)."""
    rows = []
    for line in requirements.read_text().splitlines():
        spec = line.split("#")[0].strip()
        if "==" not in spec:
            continue
        name, pinned = (part.strip() for part in spec.split("==", 1))
        try:
            found = version(name).split("+")[0]
        except PackageNotFoundError:
            found = "missing"
        rows.append((name, pinned, found))
    return rows


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"device": device_name("cuda" if cuda else "cpu") + ("" if cuda else ", no CUDA"),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "cuda_available": cuda,
            "packages": pinned_versions(course_root() / "requirements.txt")}


def run_logged(command: list[str], log: Path, timeout: float | None = None,
               env: dict[str, str] | None = None) -> int:
    """Run ``command`` in the course folder with its output in ``log``; its exit status
    (124 if it ran past ``timeout`` seconds)."""
    with open(log, "w") as handle:
        try:
            return subprocess.run(command, cwd=course_root(), stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout, env=env).returncode
        except subprocess.TimeoutExpired:
            handle.write(f"\n[gpu-check] stopped after {timeout:.0f} s\n")
            return 124


def test_counts(junit_xml: Path) -> dict[str, int]:
    """Tests, failures, errors and skipped from a JUnit XML report (pytest's ``--junitxml``)."""
    root = ElementTree.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {key: sum(int(suite.get(key, 0)) for suite in suites)
            for key in ("tests", "failures", "errors", "skipped")}


def unit_tests(out: Path, dry_run: bool) -> Step:
    step = Step("unit tests")
    junit = out / "unit-tests.xml"
    selection = "cuda" if dry_run else "not notebook and not pins"
    # Several workers where pytest-xdist is installed (GPU images often have it) and the machine has
    # the cores: the unit tests are many small CPU-bound runs; each worker gets its share of threads.
    workers = min(4, (os.cpu_count() or 1) // 4) if _importable("xdist") and not dry_run else 0
    parallel = ["-n", str(workers)] if workers > 1 else []
    env = dict(os.environ, OMP_NUM_THREADS=str((os.cpu_count() or 1) // workers)) if parallel else None
    status = run_logged([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", selection,
                         *parallel, f"--junitxml={junit}", "tests"], out / "unit-tests.log", env=env)
    if junit.exists():
        counts = test_counts(junit)
        step.details.append(f"{counts['tests']} tests: {counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} "
                            f"passed, {counts['failures']} failed, {counts['errors']} errors, "
                            f"{counts['skipped']} skipped (`-m \"{selection}\"`)")
    step.status = "ok" if status == 0 else "FAILED"
    return step


def course(out: Path, dry_run: bool) -> tuple[Step, list[dict]]:
    # a dry run checks that the step works, not the course: notebook 00 on a few images
    profile, notebooks = ("tiny", ["notebooks/00_resnet_baseline.ipynb"]) if dry_run else ("quick", [])
    step = Step(f"{profile} course")
    missing = [name for name in NOTEBOOK_PACKAGES if not _importable(name)]
    if missing:
        step.status = "FAILED"
        step.details.append(f"cannot run notebooks: {', '.join(missing)} missing from this environment "
                            f"(carry them as wheels, see README.md)")
        return step, []
    status = run_logged([sys.executable, "-m", "dyninf.tools.runner", "--profile", profile, "--out", str(out / "course"),
                         *notebooks], out / "course.log")
    summary = out / "course" / "course.json"
    runs = json.loads(summary.read_text())["notebooks"] if summary.exists() else []
    step.status = "ok" if status == 0 and runs and all(r["status"] == "ok" for r in runs) else "FAILED"
    step.details.append(f"{sum(r['status'] == 'ok' for r in runs)} of {len(runs)} notebooks ran"
                        + (" (dry run: notebook 00 only)" if dry_run else ""))
    return step, runs


def standard_dry_run(out: Path, dry_run: bool) -> Step:
    """Every training of the standard profile on 2 images per class, one epoch each, on this
    device: its recipes' code paths (batch 512, bf16 on CUDA) checked before `make gpu-standard`
    spends minutes on them. The same in a dry run."""
    step = Step("standard dry run")
    status = run_logged([sys.executable, "-m", "dyninf.course.trainings", "--profile", "standard", "--train",
                         "--dry-run"], out / "standard-dry-run.log")
    step.status = "ok" if status == 0 else "FAILED"
    log = (out / "standard-dry-run.log").read_text()
    step.details.append(f"{log.count('[trainings] ')} trainings of the standard recipes, one epoch each")
    return step


def bench(out: Path, dry_run: bool) -> Step:
    """`make bench` on the quick profile's networks, then random decisions on a ResNet-110 (where
    a GPU's launch overhead weighs most); each summary line in the details."""
    step = Step("make bench")
    runs = [["--tiny"]] if dry_run else [["--min-run-time", "0.2"],
                                         ["--depth", "110", "--keep", "0.5", "1", "--min-run-time", "0.2"]]
    log = out / "bench.log"
    statuses = []
    for options in runs:
        with open(log, "a") as handle:
            handle.write(f"\n[gpu-check] benchmarks/skipping.py {' '.join(options)}\n")
        part = out / "bench-part.log"
        statuses.append(run_logged([sys.executable, "benchmarks/skipping.py", "--profile", "quick",
                                    "--out", str(out / "bench"), *options], part))
        with open(log, "a") as handle:
            handle.write(part.read_text() if part.exists() else "")
        part.unlink(missing_ok=True)
    found = BENCH_SUMMARY.findall(log.read_text()) if log.exists() else []
    step.details += [f"{' '.join(options)}: {line}" for options, line in zip(runs, found)] or ["no summary line"]
    step.status = "ok" if all(status == 0 for status in statuses) and len(found) == len(runs) else "FAILED"
    return step


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def render_summary(env: dict, steps: list[Step], notebooks: list[dict], dry_run: bool, seconds: float) -> str:
    passed = all(step.status == "ok" for step in steps)
    lines = [f"# gpu-check: {'passed' if passed else 'FAILED'}{' (dry run)' if dry_run else ''}", "",
             f"Device: {env['device']}. Python {env['python']}, PyTorch {env['torch']}"
             f"{', CUDA ' + env['cuda'] if env['cuda'] else ''}. Total time: {seconds / 60:.1f} min.", "",
             "| step | status | time | details |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} s | {'; '.join(s.details)} |" for s in steps]
    if notebooks:
        lines += ["", "| notebook | status | time |", "|---|---|---|"]
        lines += [f"| {r['notebook']} | {r['status']} | {r['seconds']:.0f} s |" for r in notebooks]
    differing = [(n, p, f) for n, p, f in env["packages"] if f != p]
    lines += ["", "Packages: " + (f"all {len(env['packages'])} at the pinned versions." if not differing else
                                 f"{len(env['packages']) - len(differing)} of {len(env['packages'])} at the pinned "
                                 f"versions; differing (found, pinned): "
                                 + ", ".join(f"{n} {f} ({p})" for n, p, f in differing) + ".")]
    lines += ["", "Logs, executed notebooks, metrics, REPORT.md and the benchmark's JSON and plot: "
                  "the archive beside this folder."]
    return "\n".join(lines) + "\n"


def archive(out: Path) -> Path:
    path = out.with_name(out.name + ".tar.gz")
    partial = path.with_name(f".{path.name}.partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(out, arcname=out.name)
    os.replace(partial, path)
    return path


def fresh_folder(out: Path) -> None:
    """``out`` empty: a previous check's folder is cleared (its numbers must not mix with these);
    any other folder with files in it is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "environment.json").exists():
            raise SystemExit(f"{out} holds files that are not a gpu-check's; choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_check(out: Path, dry_run: bool = False) -> bool:
    start = time.perf_counter()
    fresh_folder(out)
    env = environment()
    atomic_write_text(out / "environment.json", json.dumps(env, indent=1))
    print(f"[gpu-check] {env['device']}, PyTorch {env['torch']}{' (dry run)' if dry_run else ''}", flush=True)
    if not env["cuda_available"] and not dry_run:
        print("[gpu-check] no CUDA device here; continuing (the CUDA tests will be skipped)", flush=True)
    steps, notebooks = [], []
    for name, run in (("unit tests", unit_tests), ("standard dry run", standard_dry_run),
                      ("course", course), ("make bench", bench)):
        print(f"[gpu-check] {name} ...", flush=True)
        began = time.perf_counter()
        result = run(out, dry_run)
        step, notebooks = result if isinstance(result, tuple) else (result, notebooks)
        step.seconds = time.perf_counter() - began
        steps.append(step)
        print(f"[gpu-check] {name}: {step.status} in {step.seconds:.0f} s; {'; '.join(step.details)}", flush=True)
    summary = render_summary(env, steps, notebooks, dry_run, time.perf_counter() - start)
    atomic_write_text(out / "SUMMARY.md", summary)
    print(summary)
    print(f"[gpu-check] archive: {archive(out)}")
    return all(step.status == "ok" for step in steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=build_dir() / "gpu-check")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step cut short (CUDA tests, notebook 00 in the tiny profile, the tiny benchmark): for a CPU")
    args = parser.parse_args(argv)
    return 0 if run_check(args.out.resolve(), args.dry_run) else 1


if __name__ == "__main__":
    sys.exit(main())
