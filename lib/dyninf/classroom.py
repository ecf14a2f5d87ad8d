"""The classroom edition: student copies of the notebooks, and grading them, with nbgrader.

    python -m dyninf.classroom student                       # build/student/<notebook>.ipynb
    python -m dyninf.classroom grade path/to/filled.ipynb    # autograde it; a score per task

The notebooks in ``notebooks/`` are nbgrader's source notebooks: a graded task is a solution cell
(the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``) followed by a locked test
cell (visible checks, then hidden ones between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS``); an open exercise's answer is a markdown cell graded by hand. nbgrader
works in a course folder of its own, ``build/nbgrader/`` (source/, release/, submitted/,
autograded/, gradebook.db), where all six notebooks are one assignment, ``course``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from dyninf.course import notebooks_in_order
from dyninf.paths import build_dir, shown_path

ASSIGNMENT = "course"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TEST_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def nbgrader_folder() -> Path:
    return build_dir() / "nbgrader"


@dataclass(frozen=True)
class GradedCell:
    index: int          # position in the notebook
    grade_id: str
    kind: str           # "solution" (code the student writes), "tests" (autograded), "answer" (by hand)
    points: float


def graded_cells(notebook) -> list[GradedCell]:
    """The cells of ``notebook`` (a path or an nbformat notebook) that nbgrader grades or that hold
    a student's answer, in order."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4) if isinstance(notebook, (str, Path)) else notebook
    cells = []
    for index, cell in enumerate(nb.cells):
        grading = cell.metadata.get("nbgrader", {})
        if grading.get("solution") or grading.get("grade"):
            kind = ("answer" if cell.cell_type == "markdown" else "solution") if grading.get("solution") else "tests"
            cells.append(GradedCell(index, grading["grade_id"], kind, float(grading.get("points", 0))))
    return cells


def _api(root: Path):
    """nbgrader's API on the course folder ``root``."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    # nbgrader runs the ``alembic`` command of its environment, which is not on PATH when this
    # Python is called by its path (.venv/bin/python, as make does)
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    config = Config()
    config.CourseDirectory.root = str(root)
    # a notebook trains networks in cells that run for minutes where nothing is cached yet
    # (nbgrader's default stops a cell after 30 s)
    config.Execute.timeout = None
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def _check(result: dict, what: str) -> None:
    if not result.get("success"):
        raise RuntimeError(f"nbgrader could not {what}:\n{result.get('error', '')}\n{result.get('log', '')}")


def generate_student_copies(out: Path | None = None, notebooks: list[Path] | None = None,
                            root: Path | None = None) -> list[Path]:
    """Student copies of ``notebooks`` (default: all) in ``out`` (default: build/student/), made by
    nbgrader in its course folder ``root`` (default: build/nbgrader/): solutions replaced by
    ``raise NotImplementedError()``, hidden tests and answers removed, outputs cleared. Also
    records the assignment in nbgrader's gradebook, which grading needs."""
    out = Path(out) if out else build_dir() / "student"
    notebooks = [Path(n) for n in (notebooks or notebooks_in_order())]
    root = Path(root) if root else nbgrader_folder()
    source = root / "source" / ASSIGNMENT
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for notebook in notebooks:
        shutil.copy2(notebook, source / notebook.name)
    _check(_api(root).generate_assignment(ASSIGNMENT, force=True), "generate the student copies")
    # into a staging folder first, so that ``out`` never holds a half-written set
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for notebook in notebooks:
        shutil.copy2(root / "release" / ASSIGNMENT / notebook.name, staging / notebook.name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return [out / notebook.name for notebook in notebooks]


@dataclass(frozen=True)
class TaskScore:
    task: str
    score: float
    max_score: float
    by_hand: bool       # an answer in words, graded by the teacher
    answered: bool = True   # False: an answer in words left as handed out (nbgrader scores it 0)

    @property
    def status(self) -> str:
        if self.by_hand:
            return "to grade by hand" if self.answered else "no answer"
        return "passed" if self.score == self.max_score else "failed"


def grade(notebook: Path, student: str = "student", root: Path | None = None) -> list[TaskScore]:
    """Autograde ``notebook``, a filled-in student copy of one of the course's notebooks (same
    file name), as ``student``'s, in nbgrader's course folder ``root`` (default: build/nbgrader/,
    where the copies were made; made first if they were not): nbgrader runs it from top to bottom
    on a fresh kernel with the hidden tests put back, and scores each graded task."""
    from nbgrader.api import Gradebook

    notebook = Path(notebook)
    known = {n.name for n in notebooks_in_order()}
    if notebook.suffix != ".ipynb" or notebook.name not in known:
        raise ValueError(f"expected a student copy of one of the course's notebooks ({', '.join(sorted(known))}), "
                         f"named as it was handed out; got {notebook}")
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    root = Path(root) if root else nbgrader_folder()
    if not (root / "gradebook.db").is_file() or not (root / "release" / ASSIGNMENT / notebook.name).is_file():
        generate_student_copies(root / "handed-out", root=root)
    submission = root / "submitted" / student / ASSIGNMENT
    shutil.rmtree(submission, ignore_errors=True)   # grade this notebook only
    submission.mkdir(parents=True)
    shutil.copy2(notebook, submission / notebook.name)
    _check(_api(root).autograde(ASSIGNMENT, student, force=True), f"autograde {notebook}")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        graded = gradebook.find_submission_notebook(notebook.stem, ASSIGNMENT, student)
        order = {cell.grade_id: cell.index for cell in graded_cells(root / "source" / ASSIGNMENT / notebook.name)}
        scores = [TaskScore(g.name, float(g.score or 0), float(g.max_score), g.cell_type == "markdown",
                            answered=g.cell_type != "markdown" or bool(g.needs_manual_grade))
                  for g in graded.grades]
    return sorted(scores, key=lambda s: order.get(s.task, len(order)))


def score_table(scores: list[TaskScore]) -> str:
    lines = ["| task | score | of | status |", "|---|---:|---:|---|"]
    lines += [f"| {s.task} | {'' if s.status == 'to grade by hand' else f'{s.score:g}'} | {s.max_score:g} | "
              f"{s.status} |" for s in scores]
    automatic = [s for s in scores if not s.by_hand]
    lines.append(f"| **autograded total** | **{sum(s.score for s in automatic):g}** | "
                 f"**{sum(s.max_score for s in automatic):g}** | "
                 f"{sum(s.status == 'to grade by hand' for s in scores)} answers to grade by hand |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="student copies of the notebooks, made by nbgrader")
    student.add_argument("--out", type=Path, default=build_dir() / "student")
    student.add_argument("--folder", type=Path, default=nbgrader_folder(), help="nbgrader's course folder")
    graded = commands.add_parser("grade", help="autograde one filled-in student notebook")
    graded.add_argument("notebook", type=Path)
    graded.add_argument("--student", default="student", help="the student's id in nbgrader's gradebook")
    graded.add_argument("--folder", type=Path, default=nbgrader_folder(), help="nbgrader's course folder")
    args = parser.parse_args(argv)
    logging.getLogger("traitlets").setLevel(logging.WARNING)   # nbgrader logs every file it converts
    if args.command == "student":
        for path in generate_student_copies(args.out, root=args.folder):
            print(f"[student] {shown_path(path)}")
        return 0
    try:
        scores = grade(args.notebook, args.student, args.folder)
    except (ValueError, FileNotFoundError) as error:
        print(f"make grade: {error}", file=sys.stderr)
        return 2
    print(f"{args.notebook.name}, graded as {args.student!r}:\n")
    print(score_table(scores))
    print(f"\nthe graded notebook, with each check's output: "
          f"{shown_path(args.folder / 'autograded' / args.student / ASSIGNMENT / args.notebook.name)}")
    return 0 if all(s.status != "failed" for s in scores) else 1


if __name__ == "__main__":
    sys.exit(main())
