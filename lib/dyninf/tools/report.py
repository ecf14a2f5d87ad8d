"""Each notebook's key numbers (a metrics JSON per notebook) and the course report built from them.

A notebook ends with ``save_metrics``; ``python -m dyninf.tools.runner`` then writes ``build/REPORT.md``:
per notebook, its numbers in this run beside the published ones, the profile, the device, the
time it took and links to the executed notebook and its HTML.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dyninf.utils.devices import device_name
from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import build_dir

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Metric:
    name: str
    value: float | int | str
    published: float | int | str | None = None
    unit: str = ""
    note: str = ""          # the setting or source behind the published figure


def speedup_metrics(latency: "pd.DataFrame", mode: str) -> list[Metric]:
    """One metric per batch size for the rows of ``mode`` in a ``latency.speedup_table``: the
    measured speed-up, with the ideal one, realized / ideal, the range over the timing rounds and
    the reading beside it (the last two where the table has them: older tables lack them)."""
    rows = latency[latency["mode"] == mode]
    metrics = []
    for _, row in rows.iterrows():
        note = f"ideal {row['ideal speed-up']:.2f}x; realized/ideal {row['realized / ideal']:.2f}"
        if {"speed-up low", "speed-up high", "reading"} <= set(row.index):
            note += f"; rounds {row['speed-up low']:.2f}-{row['speed-up high']:.2f}x: {row['reading']}"
        metrics.append(Metric(f"{mode} speed-up, batch {row['batch']}", round(row["speed-up"], 3), None, "x", note))
    return metrics


def metrics_path(notebook: str) -> Path:
    return build_dir() / "metrics" / f"{notebook}.json"


def save_metrics(notebook: str, profile: str, device: torch.device | str, metrics: list[Metric],
                 path: str | os.PathLike | None = None) -> Path:
    """Write a notebook's metrics JSON (to ``build/metrics/<notebook>.json`` unless ``path``)."""
    path = Path(path) if path else metrics_path(notebook)
    payload = {"notebook": notebook, "profile": profile, "device": device_name(device),
               "torch": torch.__version__, "metrics": [asdict(m) for m in metrics]}
    atomic_write_text(path, json.dumps(payload, indent=1))
    return path


def run_metrics(folder: str | os.PathLike, notebook: str, status: str) -> dict | None:
    """The metrics JSON that ``notebook`` wrote in a course run into ``folder`` (``folder/metrics/``);
    None where it failed (its numbers would not be this run's) or wrote none."""
    path = Path(folder) / "metrics" / f"{notebook}.json"
    return json.loads(path.read_text()) if status == "ok" and path.is_file() else None


def _format(value) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, (int, float)) and abs(value) >= 1e5:
        return f"{value / 1e6:.4g}M"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def table_cell(text) -> str:
    return str(text).replace("|", "\\|")  # a bare | would end the Markdown table cell


def metrics_markdown(metrics: list[Metric | dict]) -> str:
    """A Markdown table of metrics: this run beside the published figure and its setting."""
    lines = ["| metric | this run | published | unit | setting of the published figure |",
             "|---|---|---|---|---|"]
    for metric in metrics:
        m = asdict(metric) if isinstance(metric, Metric) else metric
        lines.append(f"| {table_cell(m['name'])} | {_format(m['value'])} | {_format(m['published'])} | "
                     f"{table_cell(m['unit'])} | {table_cell(m['note'])} |")
    return "\n".join(lines)


def render_report(runs: list[dict], html_column: bool = True) -> str:
    """Markdown for ``runs``: dicts with ``notebook``, ``seconds``, ``status``, ``executed``,
    ``html`` (paths relative to the report; not needed without ``html_column``, as on the course's
    website, where the executed notebook is a page), ``metrics`` (a metrics JSON's content or None)
    and, where it failed, ``error`` (why, in one line)."""
    lines = ["# Adaptive Inference: course report", ""]
    profiles = sorted({r["metrics"]["profile"] for r in runs if r.get("metrics")})
    devices = sorted({r["metrics"]["device"] for r in runs if r.get("metrics")})
    lines += [f"Profile: {', '.join(profiles) or '–'}. Device: {', '.join(devices) or '–'}. "
              f"Total time: {sum(r['seconds'] for r in runs) / 60:.1f} min.", "",
              "| notebook | status | time | executed |" + (" HTML |" if html_column else ""),
              "|---|---|---|---|" + ("---|" if html_column else "")]
    executed = "ipynb" if html_column else "page"   # on the website the link opens the notebook's page
    for r in runs:
        lines.append(f"| {r['notebook']} | {r['status']} | {r['seconds']:.0f} s | [{executed}]({r['executed']}) |"
                     + (f" [html]({r['html']}) |" if html_column else ""))
    for r in runs:
        lines += ["", f"## {r['notebook']}", ""]
        if not r.get("metrics"):
            reason = f": {r['error']}" if r.get("error") else ""
            lines.append(f"No metrics were written (the notebook did not finish{reason}).")
            continue
        m = r["metrics"]
        lines += [f"Profile `{m['profile']}` on {m['device']}, torch {m['torch']}, "
                  f"{r['seconds']:.0f} s.", "", metrics_markdown(m["metrics"])]
    return "\n".join(lines) + "\n"
