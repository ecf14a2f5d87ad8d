"""A course run kept with the course as reference results, and the check that every file kept
under ``results/`` is named somewhere and can be read.

    python -m dyninf.tools.reference --build build/standard --out results/standard

copies from a finished ``make course`` folder the report, each notebook's status and time, its
metrics and every figure its executed notebook shows (PNG, a few MB in all; never a checkpoint),
and writes ``run.json`` (device, versions, date, commit) and a README that names every file.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import platform
import shutil
import sys
from pathlib import Path

from PIL import Image

from dyninf.utils.paths import course_commit

MAX_FIGURE_BYTES = 5_000_000   # all figures together: reference results stay small enough to commit
RUN_KEYS = ("profile", "seed", "device", "torch", "python", "date", "commit")


def export_reference(build: Path, out: Path) -> list[Path]:
    """Copy the finished course run in ``build`` to ``out`` (replaced as a whole); the files written."""
    build, out = Path(build), Path(out)
    course = _read_json(build / "course.json", "the course's record (make course writes it)")
    failed = [run["notebook"] for run in course["notebooks"] if run["status"] != "ok"]
    if failed or not course["notebooks"]:
        raise ValueError(f"{build} holds no complete course run (failed: {', '.join(failed) or 'none run'}); "
                         f"only a run in which every notebook passed can be a reference")
    metrics = [_read_json(build / "metrics" / f"{run['notebook']}.json", f"{run['notebook']}'s metrics")
               for run in course["notebooks"]]
    figures = {f"figures/{run['notebook']}-{index}.png": png for run in course["notebooks"]
               for index, png in enumerate(_figures(build / f"{run['notebook']}.ipynb"), start=1)}
    size = sum(len(png) for png in figures.values())
    if size > MAX_FIGURE_BYTES:
        raise ValueError(f"the figures take {size / 1e6:.1f} MB, over the {MAX_FIGURE_BYTES / 1e6:g} MB "
                         f"that reference results may take")
    run = {"profile": course["profile"], "seed": course["seed"],
           "device": sorted({m["device"] for m in metrics}), "torch": sorted({m["torch"] for m in metrics}),
           "python": platform.python_version(),
           # the run's own record where it has one (runs before it recorded them: the file's date)
           "date": course.get("finished", "")[:10]
           or datetime.date.fromtimestamp((build / "course.json").stat().st_mtime).isoformat(),
           "commit": course.get("commit") or course_commit()}
    staging = out.with_name(out.name + ".partial")   # nothing half-written where a reader looks
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "metrics").mkdir(parents=True)
    (staging / "figures").mkdir()
    shutil.copy(build / "REPORT.md", staging / "REPORT.md")
    shutil.copy(build / "course.json", staging / "course.json")
    for entry in course["notebooks"]:
        shutil.copy(build / "metrics" / f"{entry['notebook']}.json", staging / "metrics" / f"{entry['notebook']}.json")
    for name, png in figures.items():
        (staging / name).write_bytes(png)
    (staging / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    (staging / "README.md").write_text(_index(run, course, sorted(figures)))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return sorted(path for path in out.rglob("*") if path.is_file())


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{what} is missing: {path}")
    return json.loads(path.read_text())


def _figures(executed: Path) -> list[bytes]:
    """The PNG images an executed notebook's outputs show, in order."""
    notebook = json.loads(executed.read_text())
    return [base64.b64decode(output["data"]["image/png"]) for cell in notebook["cells"]
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]


def _index(run: dict, course: dict, figures: list[str]) -> str:
    minutes = sum(entry["seconds"] for entry in course["notebooks"]) / 60
    lines = [f"# The `{run['profile']}` profile, one complete run",
             "",
             f"Device: {', '.join(run['device'])}; PyTorch {', '.join(run['torch'])}, Python {run['python']}; "
             f"seed {run['seed']}; {run['date']}; commit {run['commit']}. Every notebook ran, in "
             f"{minutes:.1f} minutes in all. Written by `python -m dyninf.tools.reference`.",
             "",
             "| file | what |", "|---|---|",
             "| `REPORT.md` | each notebook's key numbers beside the published ones |",
             "| `course.json` | each notebook's status and seconds |",
             "| `run.json` | device, versions, date and commit of this run |"]
    lines += [f"| `metrics/{entry['notebook']}.json` | {entry['notebook']}'s metrics |" for entry in course["notebooks"]]
    lines += [f"| `{name}` | a figure of {name.split('/')[1].rsplit('-', 1)[0]}, in the order the notebook shows it |"
              for name in figures]
    return "\n".join(lines) + "\n"


def reference_problems(folder: Path, mentions: str) -> list[str]:
    """What is wrong with a folder of kept results: a file that neither ``mentions`` (the text that
    points readers to it: the course's READMEs, the notebooks) nor the folder's own README names, or
    one that does not parse (JSON, PNG, text)."""
    folder = Path(folder)
    index = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
    problems = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        inside = path.relative_to(folder).as_posix()
        from_root = f"{folder.name}/{inside}"
        if inside != "README.md" and inside not in index and from_root not in mentions:
            problems.append(f"{from_root}: named by neither the folder's README nor the course")
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.verify()
            else:
                path.read_text()
        except Exception as error:   # any unreadable file is the problem reported
            problems.append(f"{from_root}: cannot be read ({type(error).__name__}: {error})")
    if (folder / "run.json").exists():
        missing = set(RUN_KEYS) - set(json.loads((folder / "run.json").read_text()))
        if missing:
            problems.append(f"{folder.name}/run.json lacks {sorted(missing)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, required=True, help="a finished `make course` folder")
    parser.add_argument("--out", type=Path, required=True, help="e.g. results/standard")
    args = parser.parse_args(argv)
    written = export_reference(args.build, args.out)
    print(f"[reference] {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
