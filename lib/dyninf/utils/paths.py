"""Where the course keeps data sets, trained runs and built artefacts."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def course_root() -> Path:
    """The course checkout: ``$DYNINF_HOME``, else the repository this package lives in, else cwd."""
    if "DYNINF_HOME" in os.environ:
        return Path(os.environ["DYNINF_HOME"]).resolve()
    repo = Path(__file__).resolve().parents[3]  # lib/dyninf/utils/paths.py -> repository root
    if (repo / "pyproject.toml").is_file() and (repo / "notebooks").is_dir():
        return repo
    return Path.cwd()


def data_dir() -> Path:
    return course_root() / "data"


def runs_dir() -> Path:
    return course_root() / "runs"


def build_dir() -> Path:
    return course_root() / "build"


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as the course shows it: relative to the course checkout when inside it, so that
    executed notebooks and logs carry no machine's absolute paths."""
    path = Path(path).resolve()
    try:
        return path.relative_to(course_root()).as_posix()
    except ValueError:
        return path.name


def course_commit() -> str:
    """The commit of the course checkout, as ``git describe --always --dirty`` names it (``-dirty``:
    tracked files differ from it); ``unknown (not a git checkout)`` elsewhere (an unpacked archive)."""
    try:
        found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=course_root(),
                               capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return found.stdout.strip()
