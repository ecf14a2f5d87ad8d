"""Run the course: execute every notebook in order with papermill, render HTML, write the report.

    python -m dyninf.tools.runner --profile quick --out build [notebooks/00_resnet_baseline.ipynb ...]

Writes ``<out>/<notebook>.ipynb`` (executed), ``<out>/<notebook>.html``,
``<out>/metrics/<notebook>.json``, ``<out>/REPORT.md`` and ``<out>/course.json`` (the run: profile,
seed, device, when, which commit; each notebook's status and time: what ``make site`` shows). Stops at the first notebook that fails
(later notebooks build on earlier ones), still writing the report, and exits non-zero.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from dyninf.utils.io import DiskFullError, atomic_write_text, folder_lock, reporting_full_disk
from dyninf.utils.paths import build_dir, course_commit, course_root, shown_path
from dyninf.course.profiles import PROFILES
from dyninf.tools.report import render_report, run_metrics


def notebooks_in_order() -> list[Path]:
    return sorted((course_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def execute_notebook(notebook: Path, out_dir: Path, profile: str = "quick",
                     log_output: bool = False, seed: int = 0) -> Path:
    """Execute ``notebook`` on a fresh kernel, in ``out_dir``, with ``profile`` and training
    ``seed``; the executed copy goes to ``out_dir`` and its metrics to
    ``out_dir/metrics/<name>.json``."""
    import papermill

    notebook = Path(notebook).resolve()
    out_dir = Path(out_dir).resolve()
    executed = out_dir / notebook.name
    with reporting_full_disk(executed):
        out_dir.mkdir(parents=True, exist_ok=True)
    # papermill saves the copy after every cell: into a temporary file, renamed into place once it
    # is whole (a full disk there must not leave a truncated notebook that is not JSON)
    running = out_dir / f".{notebook.stem}.running.ipynb"
    try:
        # The kernel runs in out_dir and writes its metrics relative to it, so that the executed
        # copy names no path of this machine (the notebooks find data and runs through dyninf.utils.paths).
        with _kernel_environment(DYNINF_PROGRESS="lines"), reporting_full_disk(executed):
            papermill.execute_notebook(
                str(notebook), str(running), cwd=str(out_dir), kernel_name="python3",
                parameters={"profile": profile, "seed": seed, "metrics_path": f"metrics/{notebook.stem}.json"},
                progress_bar=False, log_output=log_output)
    finally:   # a notebook that raised is kept, with its error; one that could not be written is not
        _keep_if_whole(running, executed, notebook)
    return executed


def _keep_if_whole(running: Path, executed: Path, notebook: Path) -> None:
    """The executed copy papermill wrote to ``running``, renamed to ``executed`` if it is a whole
    notebook; otherwise both are removed (no earlier run's copy is left to be taken for this one's)."""
    import nbformat

    try:
        nb = nbformat.read(running, as_version=4)
    except Exception:   # missing, truncated, not JSON: nothing to keep
        running.unlink(missing_ok=True)
        executed.unlink(missing_ok=True)
        return
    record = nb.metadata.get("papermill", {})
    # papermill records where it read and wrote the notebook as given (absolute); keep them
    # relative to the course, as the rest of the executed copy is
    record["input_path"], record["output_path"] = shown_path(notebook), executed.name
    try:
        atomic_write_text(executed, nbformat.writes(nb))
    finally:
        running.unlink(missing_ok=True)


@contextlib.contextmanager
def _kernel_environment(**variables: str):
    """Set environment variables for the kernels started inside (they inherit this process's).
    Written here because the library that does it, ``unittest.mock.patch.dict``, is a testing tool."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


CHECKED_OUTPUT_TAG = "nbval-check-output"   # cells whose output is deterministic: committed, and nbval compares it


def record_checked_outputs(executed: Path, notebook: Path) -> int:
    """Copy the outputs of ``notebook``'s cells tagged ``nbval-check-output`` from its executed copy
    ``executed`` into ``notebook`` itself (for when such an output changes on purpose); how many
    cells it recorded."""
    import nbformat

    source, ran = nbformat.read(notebook, as_version=4), nbformat.read(executed, as_version=4)
    executed_cells = {cell.source: cell for cell in ran.cells if cell.cell_type == "code"}
    recorded = 0
    for cell in source.cells:
        if CHECKED_OUTPUT_TAG in cell.metadata.get("tags", []):
            if cell.source not in executed_cells:
                raise ValueError(f"{executed} is not an executed copy of {notebook}: a checked cell is missing")
            # with its execution count: nbval refuses a cell that has outputs but never ran
            cell.outputs = executed_cells[cell.source].outputs
            cell.execution_count = executed_cells[cell.source].execution_count
            recorded += 1
    atomic_write_text(notebook, nbformat.writes(source) + "\n")
    return recorded


def render_html(executed: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    html = executed.with_suffix(".html")
    atomic_write_text(html, body)
    return html


def run_course(profile: str, out_dir: Path, notebooks: list[Path] | None = None, seed: int = 0,
               keep_going: bool = False) -> bool:
    """Execute ``notebooks`` (default: all, in order) with training ``seed``; write the report;
    True if all succeeded. A failed notebook stops the run unless ``keep_going`` (each notebook
    trains what it misses, so later ones can still run)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known profiles: {', '.join(PROFILES)}")
    notebooks = notebooks or notebooks_in_order()
    out_dir = Path(out_dir)
    runs, ok = [], True
    with folder_lock(out_dir, "running the course"):   # a second run into the same folder waits
        started = _now()
        try:
            for notebook in notebooks:
                print(f"[course] {notebook.name} ({profile} profile{f', seed {seed}' if seed else ''})", flush=True)
                run = _run_notebook(notebook, out_dir, profile, seed)
                runs.append(run)
                ok = ok and run["status"] == "ok"
                print(f"[course] {notebook.name}: {run['status']} in {run['seconds']:.0f} s", flush=True)
                if not ok and not keep_going:
                    break
        finally:   # also when a run is stopped: the report says what ran, never an earlier run's success
            _write_report(out_dir, profile, seed, runs, started)
    return ok


def _run_notebook(notebook: Path, out_dir: Path, profile: str, seed: int) -> dict:
    """Execute one notebook and render its HTML: its row of the report (status "FAILED" with the
    reason where either step failed)."""
    metrics_file = out_dir / "metrics" / f"{notebook.stem}.json"
    metrics_file.unlink(missing_ok=True)  # never report a previous run's numbers
    executed, html = out_dir / notebook.name, out_dir / f"{notebook.stem}.html"
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        execute_notebook(notebook, out_dir, profile, log_output=True, seed=seed)
    except Exception as failure:  # papermill's error carries the failing cell; report, then stop
        print(f"[course] {notebook.name} failed: {failure}", file=sys.stderr)
        status, error = "FAILED", _first_line(failure)
    seconds = time.perf_counter() - start
    html.unlink(missing_ok=True)   # an earlier run's page would show that run
    if executed.exists():
        try:
            render_html(executed)
        except Exception as failure:   # a full disk, or a copy nbconvert cannot read
            print(f"[course] {notebook.name}: no HTML: {failure}", file=sys.stderr)
            status, error = "FAILED", error or f"no HTML: {_first_line(failure)}"
    return {"notebook": notebook.stem, "status": status, "seconds": seconds, "error": error,
            "executed": executed.name, "html": html.name, "metrics": run_metrics(out_dir, notebook.stem, status)}


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_report(out_dir: Path, profile: str, seed: int, runs: list[dict], started: str) -> None:
    """REPORT.md and course.json for ``runs``; where they cannot be written (a full disk), the
    old ones are removed, so that none claims an earlier run's result, and the error says so."""
    report, summary_file = out_dir / "REPORT.md", out_dir / "course.json"
    summary = [{key: run[key] for key in ("notebook", "status", "seconds", "error")}
               | {"device": (run["metrics"] or {}).get("device")} for run in runs]
    # the device as the notebooks' kernels saw it (this process never chose one)
    devices = sorted({run["device"] for run in summary if run["device"]})
    torches = sorted({run["metrics"]["torch"] for run in runs if run["metrics"]})
    record = {"profile": profile, "seed": seed, "device": ", ".join(devices) or None,
              "torch": ", ".join(torches) or None, "started": started, "finished": _now(),
              "commit": course_commit(), "notebooks": summary}
    try:
        atomic_write_text(report, render_report(runs))
        atomic_write_text(summary_file, json.dumps(record, indent=1))
    except OSError:
        report.unlink(missing_ok=True)
        summary_file.unlink(missing_ok=True)
        raise
    print(f"[course] report: {report}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--out", type=Path, default=build_dir())
    parser.add_argument("--seed", type=int, default=0, help="training seed (0: the course's runs)")
    parser.add_argument("--record-checked-outputs", action="store_true",
                        help=f"then copy the outputs of the cells tagged {CHECKED_OUTPUT_TAG} into notebooks/")
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    notebooks = args.notebooks or notebooks_in_order()
    try:
        if not run_course(args.profile, args.out, notebooks, args.seed):
            return 1
    except DiskFullError as error:
        print(f"[course] {error.strerror}", file=sys.stderr)
        return 1
    if args.record_checked_outputs:
        for notebook in notebooks:
            recorded = record_checked_outputs(args.out / Path(notebook).name, Path(notebook))
            print(f"[course] {shown_path(notebook)}: recorded the output of {recorded} checked cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
