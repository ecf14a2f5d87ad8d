"""Grading a class's notebooks with nbgrader: submissions collected into its course folder,
autograded into one gradebook (each cell under a time limit), every failed task with its reason, a
notebook whose own cells raised reported as not run instead of scored, feedback per student and
notebook, the scores as CSV.

nbgrader works in a course folder of its own, ``build/nbgrader/`` (source/, release/, submitted/,
autograded/, feedback/, gradebook.db), where each notebook is an assignment named after it
(``00_resnet_baseline``); a submission is ``submitted/<student>/<assignment>/<notebook>.ipynb``,
as ``nbgrader collect`` lays it out.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from dyninf.tools.runner import notebooks_in_order
from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import build_dir, course_root
from dyninf.tools.sandbox import KERNEL_NAME, confinement_problem, use_kernel_specs_in, write_kernel_spec

TASK_SECONDS = 60       # a task's solution and check cells: they compute small cases in seconds
CELL_SECONDS = 1800     # the notebook's own cells: training a network where none is cached takes minutes
NOTEBOOK_SECONDS = 3600  # a whole notebook: the quick profile's run in minutes, trained networks loaded
MEMORY_GIB = 8          # a kernel's memory: a quick-profile notebook needs about 2 GiB
STUDENT_ID = re.compile(r"[A-Za-z0-9_-]+")
TIMED_OUT = "CellTimeoutError"
ARROW = re.compile(r"^\s*-+>\s*\d*\s*")   # how an IPython traceback marks the line that raised
NOTICE_ID = "did-not-run"   # the cell put at the top of an autograded notebook that did not run


def nbgrader_folder() -> Path:
    return build_dir() / "nbgrader"


def assignment_of(notebook: str | Path) -> str:
    """The nbgrader assignment a course notebook is: its name without ``.ipynb``."""
    return Path(notebook).stem


def course_notebook_names() -> dict[str, str]:
    """Assignment -> notebook file name, for every notebook of the course."""
    return {assignment_of(n): n.name for n in notebooks_in_order()}


def check_student_id(student: str) -> str:
    """``student``, if it is an id nbgrader can keep as a folder name (letters, digits, - and _)."""
    if not isinstance(student, str) or not STUDENT_ID.fullmatch(student):
        raise ValueError(f"a student id is letters, digits, '-' and '_' only; got {student!r}")
    return student


def check_notebook_file(path: Path) -> None:
    """``path`` is a Jupyter notebook (nbformat 4), or a ValueError saying what it is instead."""
    import nbformat

    try:
        nbformat.read(path, as_version=4)
    except Exception as error:   # not JSON, not a notebook, not text: nbformat's reasons vary
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a Jupyter notebook ({reason}); expected the .ipynb file Jupyter "
                         f"saved (File > Save), not a copy of its text or another file renamed") from None


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


class GradingLimits:
    """How long and how large a submission may run. nbclient's ``timeout_func``: a task's cells
    get ``task_seconds``, the others ``cell_seconds``, and none more than what is left of the
    notebook's ``notebook_seconds`` (counted from its start, ``start_notebook``, nbclient's
    ``on_notebook_start``). ``memory_gib``: the kernel's memory (0: no limit)."""

    def __init__(self, task_seconds: int = TASK_SECONDS, cell_seconds: int = CELL_SECONDS,
                 notebook_seconds: int = NOTEBOOK_SECONDS, memory_gib: float = MEMORY_GIB):
        for name, seconds in (("task_seconds", task_seconds), ("cell_seconds", cell_seconds),
                              ("notebook_seconds", notebook_seconds)):
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
                raise ValueError(f"{name} must be a whole number of seconds, at least 1; got {seconds!r}")
        if isinstance(memory_gib, bool) or not isinstance(memory_gib, (int, float)) or not 0 <= memory_gib < 2**20:
            raise ValueError(f"the memory limit (memory_gib, make's MEMORY_GIB) must be 0 (no limit) or more GiB; "
                             f"got {memory_gib:g}" if isinstance(memory_gib, (int, float)) else
                             f"the memory limit (memory_gib, make's MEMORY_GIB) must be a number of GiB; got {memory_gib!r}")
        self.task_seconds, self.cell_seconds, self.notebook_seconds = task_seconds, cell_seconds, notebook_seconds
        self.memory_gib = memory_gib
        self._deadline: float | None = None

    def __repr__(self) -> str:
        return (f"GradingLimits({self.task_seconds}, {self.cell_seconds}, {self.notebook_seconds}, "
                f"{self.memory_gib:g})")

    def __deepcopy__(self, memo) -> "GradingLimits":
        # traitlets copies configured values: nbclient's timeout_func and its on_notebook_start
        # hook must stay one object, so that a cell's limit sees when its notebook started
        return self

    def start_notebook(self, **_) -> None:
        self._deadline = time.monotonic() + self.notebook_seconds

    def __call__(self, cell) -> int:
        grading = cell.get("metadata", {}).get("nbgrader", {})
        seconds = self.task_seconds if grading.get("solution") or grading.get("grade") else self.cell_seconds
        if self._deadline is not None:
            seconds = min(seconds, max(1, math.ceil(self._deadline - time.monotonic())))
        return seconds

    def message(self) -> str:
        return (f"the cell ran past its time limit and was stopped ({self.task_seconds} s for a task's cells, "
                f"{self.cell_seconds} s for the others, {self.notebook_seconds} s for the whole notebook): "
                f"an endless loop?")


def nbgrader_api(root: Path, limits: GradingLimits | None = None):
    """nbgrader's API on the course folder ``root``, its cells run under ``limits``."""
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
    for name, value in execute_settings(root, limits or GradingLimits()).items():
        setattr(config.Execute, name, value)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def execute_settings(root: Path, limits: GradingLimits) -> dict:
    """How nbgrader runs a submission (its ``Execute`` settings), here and in the course folder's
    nbgrader_config.py: on the confined kernel (``dyninf.tools.sandbox``), whose spec is written into
    ``root``, each cell under ``limits``, stopped with the reason when it runs past them."""
    root = Path(root).resolve()
    hidden = [] if root.is_relative_to(course_root()) else [root]   # the checkout is hidden whole
    write_kernel_spec(root, limits.memory_gib, hidden)
    use_kernel_specs_in(root)
    return {"kernel_name": KERNEL_NAME, "timeout_func": limits, "on_notebook_start": limits.start_notebook,
            "interrupt_on_timeout": True,
            "error_on_timeout": {"ename": TIMED_OUT, "evalue": limits.message(),
                                 "traceback": [f"{TIMED_OUT}: {limits.message()}"]},
            # the kernel's own log (that it talks over TCP on 127.0.0.1 without encryption) is no
            # news to the instructor; a student's warnings still reach the cell's output
            "extra_arguments": ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]}


class GradingError(RuntimeError):
    """nbgrader could not do what was asked (not a student's mistake)."""


def check_result(result: dict, what: str) -> None:
    if not result.get("success"):
        raise GradingError(f"nbgrader could not {what}:\n{result.get('error', '')}\n{result.get('log', '')}")


def quiet_nbgrader() -> None:
    """nbgrader logs every file it converts; its database layer warns about its own queries."""
    logging.getLogger("traitlets").setLevel(logging.WARNING)
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)


# --- collecting ---------------------------------------------------------------------------------

def collect(handed_in: Path, root: Path | None = None) -> list[Path]:
    """Copy a class's handed-in notebooks into nbgrader's ``submitted/``: ``handed_in`` holds one
    folder per student (named by the student's id), with the notebooks in it, or in
    ``<assignment>/`` folders as ``nbgrader collect`` or ``zip_collect`` leave them. Files that are
    not notebooks of the course are a clear error, before anything is copied."""
    root = Path(root) if root else nbgrader_folder()
    handed_in = Path(handed_in)
    if not handed_in.is_dir():
        raise FileNotFoundError(f"expected a folder with one folder per student; there is no folder {handed_in}")
    names = course_notebook_names()
    copies = []
    for student_folder in sorted(p for p in handed_in.iterdir() if p.is_dir()):
        student = check_student_id(student_folder.name)
        for path in sorted(student_folder.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            if path.name not in names.values():
                raise ValueError(f"{path}: expected a course notebook named as handed out "
                                 f"({', '.join(sorted(names.values()))})")
            check_notebook_file(path)
            copies.append((path, root / "submitted" / student / assignment_of(path) / path.name))
    if not copies:
        raise ValueError(f"no course notebooks in {handed_in} (expected {handed_in}/<student>/<notebook>.ipynb)")
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)   # copied now: newer than a grading of an earlier copy, so graded again
    return [target for _, target in copies]


# --- reading what autograding did ---------------------------------------------------------------

def _clean(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def error_of(cell) -> dict | None:
    """A cell's error output, if it raised; a cell stopped at its time limit has two (the
    interrupt's KeyboardInterrupt, then the time-out), and the time-out says why."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return next((o for o in errors if o.get("ename") == TIMED_OUT), errors[0] if errors else None)


def reason_of(error: dict) -> str:
    """Why a cell failed, in one line: the assertion's message, or the exception's last line."""
    name, value = error.get("ename", ""), _clean(error.get("evalue", "")).strip()
    if name == TIMED_OUT:
        return value or "the cell ran past its time limit and was stopped"
    if name == "NotImplementedError":
        return "not written yet (the cell still raises NotImplementedError)"
    if name == "LibraryAnswerCalled":
        return value
    if name == "MemoryError":   # graded kernels run under a memory limit (GradingLimits.memory_gib)
        return "MemoryError: the cell asked for more memory than the grading kernel may use"
    if name == "AssertionError" and not value:
        # the failing line: the last line the traceback marks with an arrow
        marked = [ARROW.sub("", line) for frame in error.get("traceback", []) for line in _clean(frame).splitlines()
                  if ARROW.match(line)]
        return f"AssertionError at {marked[-1]}" if marked else "AssertionError"
    return f"{name}: {value}" if value else name


@dataclass(frozen=True)
class TaskScore:
    task: str
    score: float
    max_score: float
    by_hand: bool       # an answer in words, graded by the teacher
    answered: bool = True   # False: an answer in words left as handed out (nbgrader scores it 0)
    reason: str = ""    # why an autograded task failed

    @property
    def status(self) -> str:
        if self.by_hand:
            return "to grade by hand" if self.answered else "no answer"
        return "passed" if self.score == self.max_score else "failed"


@dataclass
class GradedNotebook:
    student: str
    notebook: str           # file name
    scores: list[TaskScore] = field(default_factory=list)
    did_not_run: str = ""   # the first error of a cell that holds no task, where one raised

    @property
    def graded(self) -> bool:
        return not self.did_not_run

    @property
    def autograded_score(self) -> float:
        return sum(s.score for s in self.scores if not s.by_hand) if self.graded else 0.0

    @property
    def autograded_points(self) -> float:
        return sum(s.max_score for s in self.scores if not s.by_hand)


def first_error_outside_tasks(nb) -> str:
    """The first error of a cell that holds no graded task (the notebook's own code), as
    'cell N: reason', or '' when every such cell ran."""
    graded = {c.index for c in graded_cells(nb)}
    for index, cell in enumerate(nb.cells):
        error = error_of(cell) if cell.cell_type == "code" and index not in graded else None
        if error:
            return f"code cell {sum(c.cell_type == 'code' for c in nb.cells[:index + 1])}: {reason_of(error)}"
    return ""


def task_reasons(nb) -> dict[str, str]:
    """For each test cell's grade id: why it failed, from the first error of the task's solution
    cell and its checks."""
    cells = graded_cells(nb)
    by_index = {c.index: c for c in cells}
    reasons = {}
    for cell in cells:
        if cell.kind != "tests":
            continue
        solution = by_index.get(cell.index - 1)
        task = ([cell.index - 1] if solution and solution.kind == "solution" else []) + [cell.index]
        error = next((e for e in map(error_of, (nb.cells[i] for i in task)) if e), None)
        if error:
            reasons[cell.grade_id] = reason_of(error)
    return reasons


# --- autograding --------------------------------------------------------------------------------

def submissions(root: Path) -> list[tuple[str, str]]:
    """(student, assignment) of every submission in ``root/submitted/`` of a course notebook."""
    names = course_notebook_names()
    found = []
    for student_folder in sorted((root / "submitted").glob("*")):
        for assignment_folder in sorted(student_folder.glob("*")):
            if assignment_folder.name in names and (assignment_folder / names[assignment_folder.name]).is_file():
                found.append((check_student_id(student_folder.name), assignment_folder.name))
    return found


def _graded_path(root: Path, student: str, assignment: str) -> Path:
    return root / "autograded" / student / assignment / course_notebook_names()[assignment]


def _read_back(root: Path, student: str, assignment: str, just_graded: bool) -> GradedNotebook:
    """What autograding ``student``'s ``assignment`` gave: scores with reasons, or that it did not
    run. ``just_graded``: then a notebook that did not run has its autograded scores set to 0 in
    the gradebook, and a notice at its top saying why (which its feedback shows)."""
    import nbformat
    from nbgrader.api import Gradebook

    path = _graded_path(root, student, assignment)
    nb = nbformat.read(path, as_version=4)
    if nb.cells and nb.cells[0].get("id") == NOTICE_ID:   # read back after the notice was added
        nb.cells = nb.cells[1:]
    result = GradedNotebook(student, path.name, did_not_run=first_error_outside_tasks(nb))
    reasons = task_reasons(nb)
    order = {c.grade_id: c.index for c in graded_cells(nb)}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for grade in gradebook.find_submission_notebook(assignment, assignment, student).grades:
            by_hand = grade.cell_type == "markdown"
            if just_graded and result.did_not_run and not by_hand:
                grade.auto_score = 0
            result.scores.append(TaskScore(grade.name, float(grade.score or 0), float(grade.max_score), by_hand,
                                           answered=not by_hand or bool(grade.needs_manual_grade),
                                           reason="" if by_hand else reasons.get(grade.name, "")))
        gradebook.db.commit()
    result.scores.sort(key=lambda s: order.get(s.task, len(order)))
    if just_graded:
        _tidy_errors(nb)
        if result.did_not_run:
            notice = nbformat.v4.new_markdown_cell(
                f"**Not graded: this notebook did not run.** Its {result.did_not_run} (a cell that holds no "
                "task), so none of its tasks earns points. Look at the parameters cell first (a misspelt "
                "`profile` stops the notebook in its setup cell), then run it from the top on a fresh kernel "
                "to see what stops it.")
            notice["id"] = NOTICE_ID
            nb.cells.insert(0, notice)
        atomic_write_text(path, nbformat.writes(nb))
    return result


def _tidy_errors(nb) -> None:
    """The errors as the student reads them in the feedback: a stopped cell's time-out without the
    interrupt that stopped it, a refused library call in one line, paths of this machine
    shortened (the course's relative to it, installed packages' to their package)."""
    import site

    prefixes = sorted({*site.getsitepackages(), site.getusersitepackages()}, key=len, reverse=True)
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if any(o.get("ename") == TIMED_OUT for o in errors):
            cell.outputs = [o for o in cell.outputs if o.get("ename") != "KeyboardInterrupt"]
        for output in errors:
            if output.get("ename") == "LibraryAnswerCalled":
                output.traceback = [f"LibraryAnswerCalled: {output.get('evalue', '')}"]
            lines = []
            for line in output.get("traceback", []):
                for prefix in prefixes:
                    line = line.replace(prefix + os.sep, "")
                lines.append(line.replace(str(course_root()) + os.sep, ""))
            output.traceback = lines


def autograde(root: Path | None = None, students: list[str] | None = None, assignments: list[str] | None = None,
              again: bool = False, limits: GradingLimits | None = None, feedback: bool = True,
              progress=None) -> list[GradedNotebook]:
    """Autograde every submission in ``root/submitted/`` (or those of ``students`` and
    ``assignments``) into the one gradebook, keeping what was graded before. A submission already
    graded and unchanged since is only read back, unless ``again``. With ``feedback``, nbgrader's
    feedback HTML for each, in ``feedback/<student>/<assignment>/``."""
    root = Path(root) if root else nbgrader_folder()
    quiet_nbgrader()
    limits = limits or GradingLimits()
    for student in students or []:
        check_student_id(student)
    names = course_notebook_names()
    for assignment in assignments or []:
        if assignment not in names:
            raise ValueError(f"unknown notebook {assignment!r}; expected one of {', '.join(names)}")
    if not (root / "gradebook.db").is_file() or not (root / "release").is_dir():
        raise GradingError(f"no student copies made in {root} yet: run `make student` (python -m "
                           "dyninf.tools.classroom student) first")
    api = nbgrader_api(root, limits)
    problem = confinement_problem()
    if problem and os.environ.get("DYNINF_REQUIRE_SANDBOX"):
        raise GradingError(f"DYNINF_REQUIRE_SANDBOX is set, and student code cannot be confined here: {problem}")
    if problem:
        print(f"warning: students' code runs unconfined, with your rights: {problem}", file=sys.stderr)
    results = []
    for student, assignment in submissions(root):
        if (students and student not in students) or (assignments and assignment not in assignments):
            continue
        submitted = root / "submitted" / student / assignment / names[assignment]
        graded = _graded_path(root, student, assignment)
        if again or not graded.is_file() or graded.stat().st_mtime < submitted.stat().st_mtime:
            if progress:
                progress(f"autograding {student}'s {names[assignment]}")
            check_result(api.autograde(assignment, student, force=True), f"autograde {student}'s {names[assignment]}")
            result = _read_back(root, student, assignment, just_graded=True)
            if feedback:
                check_result(api.generate_feedback(assignment, student, force=True),
                             f"write the feedback on {student}'s {names[assignment]}")
        else:
            result = _read_back(root, student, assignment, just_graded=False)
        results.append(result)
    return results


# --- reports ------------------------------------------------------------------------------------

def score_table(scores: list[TaskScore]) -> str:
    """One notebook's tasks: score, points, status and, for a failed task, why."""
    lines = ["| task | score | of | status |", "|---|---:|---:|---|"]
    for s in scores:
        status = f"{s.status}: {s.reason}" if s.status == "failed" and s.reason else s.status
        shown = "" if s.status == "to grade by hand" else f"{s.score:g}"
        lines.append(f"| {s.task} | {shown} | {s.max_score:g} | {status.replace('|', '/')} |")
    automatic = [s for s in scores if not s.by_hand]
    lines.append(f"| **autograded total** | **{sum(s.score for s in automatic):g}** | "
                 f"**{sum(s.max_score for s in automatic):g}** | "
                 f"{sum(s.status == 'to grade by hand' for s in scores)} answers to grade by hand |")
    return "\n".join(lines)


def class_table(results: list[GradedNotebook]) -> str:
    """The class at a glance: one line per student and notebook."""
    lines = ["| student | notebook | autograded | of | to grade by hand | status |", "|---|---|---:|---:|---:|---|"]
    for r in results:
        failed = [s.task for s in r.scores if s.status == "failed"]
        status = (f"did not run ({r.did_not_run})" if r.did_not_run else
                  f"failed: {', '.join(failed)}" if failed else "all autograded tasks passed")
        lines.append(f"| {r.student} | {r.notebook} | {r.autograded_score:g} | {r.autograded_points:g} | "
                     f"{sum(s.status == 'to grade by hand' for s in r.scores)} | {status.replace('|', '/')} |")
    return "\n".join(lines)


TASK_COLUMNS = ("student", "notebook", "task", "score", "of", "status", "reason")


def write_task_scores(results: list[GradedNotebook], path: Path) -> Path:
    """Every task of every graded notebook as a CSV row (a notebook that did not run: one row,
    status 'did not run', its first error as the reason)."""
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TASK_COLUMNS)
    for r in results:
        if r.did_not_run:
            writer.writerow([r.student, r.notebook, "", 0, f"{r.autograded_points:g}", "did not run", r.did_not_run])
            continue
        for s in r.scores:
            writer.writerow([r.student, r.notebook, s.task, "" if s.status == "to grade by hand" else f"{s.score:g}",
                             f"{s.max_score:g}", s.status, s.reason])
    atomic_write_text(path, text.getvalue())
    return path


def export_grades(root: Path | None = None, path: Path | None = None) -> Path:
    """nbgrader's CSV export of the gradebook (a row per student and assignment: score, of, ...),
    with the scores given by hand in the formgrader included."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins.export import CsvExportPlugin

    root = Path(root) if root else nbgrader_folder()
    path = Path(path) if path else root / "grades.csv"
    quiet_nbgrader()
    partial = path.with_name(f".{path.name}.partial")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        CsvExportPlugin(to=str(partial)).export(gradebook)
    partial.replace(path)
    return path
