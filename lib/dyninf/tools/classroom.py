"""The classroom edition: student copies of the notebooks that hand out no answer, and grading them
with nbgrader (``dyninf.tools.grading``).

    python -m dyninf.tools.classroom student                  # build/student/<notebook>.ipynb, to hand out
    python -m dyninf.tools.classroom collect HANDED_IN        # HANDED_IN/<student>/<notebook>.ipynb -> submitted/
    python -m dyninf.tools.classroom autograde                # every submission: scores, reasons, feedback, CSV
    python -m dyninf.tools.classroom grade path/to/filled.ipynb [--student ID]   # one notebook, its score per task
    python -m dyninf.tools.classroom export                   # nbgrader's grades.csv, with the scores given by hand

Exit status: 0 when grading worked, whatever the scores; 1 when a notebook could not be graded (it
did not run, or nbgrader failed); 2 for a wrong argument (a file that is not a course notebook, a
student id that is not letters, digits, - and _).

The notebooks in ``notebooks/`` are the instructor's copies and nbgrader's source notebooks: a
graded task is a solution cell (the solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION``) followed by a locked test cell (visible checks, then hidden ones between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``); an open exercise's answer is a markdown
cell graded by hand. A cell whose metadata has ``student_copy`` (its ``cell_type`` and ``source``)
is handed out as that says: where the instructor's copy shows the library's implementation of what
a task asks for, the student's copy says so instead.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

from dyninf.tools.runner import notebooks_in_order
from dyninf.tools.grading import (CELL_SECONDS, MEMORY_GIB, NOTEBOOK_SECONDS, TASK_SECONDS, GradingError, GradingLimits,
                            assignment_of, autograde, check_notebook_file, check_result, check_student_id,
                            class_table, collect, export_grades, nbgrader_api, nbgrader_folder, quiet_nbgrader,
                            score_table, write_task_scores)
from dyninf.utils.io import DiskFullError
from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import build_dir, shown_path

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TEST_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
STUDENT_COPY = "student_copy"   # cell metadata: how the cell is handed out


def as_handed_out(nb):
    """The instructor's notebook ``nb`` (nbformat) with every cell that has a student version
    replaced by it: what nbgrader makes the student copy from."""
    import nbformat

    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        student = cell.metadata.pop(STUDENT_COPY, None)
        if student is None:
            continue
        make = nbformat.v4.new_code_cell if student["cell_type"] == "code" else nbformat.v4.new_markdown_cell
        replacement = make(student["source"])
        replacement["id"] = cell.get("id", replacement["id"])
        nb.cells[index] = replacement
    return nb


def _write_nbgrader_config(root: Path, limits: GradingLimits) -> None:
    """So that nbgrader's own commands and the formgrader, started in ``root``, find the course."""
    atomic_write_text(root / "nbgrader_config.py", "\n".join([
        "# Written by `make student` (dyninf.tools.classroom): nbgrader's commands and the formgrader, run in",
        "# this folder, grade the course here, running each cell as `make autograde` does (dyninf must be",
        "# importable: the course's .venv).",
        "import os",
        "",
        "from dyninf.tools.grading import GradingLimits, execute_settings",
        "",
        "c = get_config()  # noqa: F821",
        "c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))",
        'c.CourseDirectory.course_id = "adaptive-inference"',
        f"for name, value in execute_settings(c.CourseDirectory.root, {limits!r}).items():",
        "    setattr(c.Execute, name, value)",
        ""]))


def generate_student_copies(out: Path | None = None, notebooks: list[Path] | None = None,
                            root: Path | None = None) -> list[Path]:
    """Student copies of ``notebooks`` (default: all) in ``out`` (default: build/student/), made by
    nbgrader in its course folder ``root`` (default: build/nbgrader/), one assignment per notebook:
    each cell handed out as its student version says, solutions replaced by
    ``raise NotImplementedError()``, hidden tests and answers removed, outputs cleared. Also
    records the assignments in nbgrader's gradebook, which grading needs."""
    import nbformat

    out = Path(out) if out else build_dir() / "student"
    notebooks = [Path(n) for n in (notebooks or notebooks_in_order())]
    root = Path(root) if root else nbgrader_folder()
    root.mkdir(parents=True, exist_ok=True)
    _write_nbgrader_config(root, GradingLimits())
    quiet_nbgrader()
    api = nbgrader_api(root)
    for notebook in notebooks:
        source = root / "source" / assignment_of(notebook)
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        nbformat.write(as_handed_out(nbformat.read(notebook, as_version=4)), source / notebook.name)
        check_result(api.generate_assignment(assignment_of(notebook), force=True),
                     f"make the student copy of {notebook.name}")
    # into a staging folder first, so that ``out`` never holds a half-written set
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for notebook in notebooks:
        shutil.copy2(root / "release" / assignment_of(notebook) / notebook.name, staging / notebook.name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return [out / notebook.name for notebook in notebooks]


def grade(notebook: Path, student: str = "student", root: Path | None = None,
          limits: GradingLimits | None = None):
    """Autograde ``notebook``, a filled-in student copy of one of the course's notebooks (same
    file name), as ``student``'s, in nbgrader's course folder ``root`` (default: build/nbgrader/,
    where the copies were made; made first if they were not): nbgrader runs it from top to bottom
    on a fresh kernel with the hidden tests put back, and scores each graded task. What the
    gradebook holds for other notebooks and students stays."""
    notebook = Path(notebook)
    known = {n.name for n in notebooks_in_order()}
    if notebook.suffix != ".ipynb" or notebook.name not in known:
        raise ValueError(f"expected a student copy of one of the course's notebooks ({', '.join(sorted(known))}), "
                         f"named as it was handed out; got {notebook}")
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    check_student_id(student)
    check_notebook_file(notebook)
    root = Path(root) if root else nbgrader_folder()
    assignment = assignment_of(notebook)
    if not (root / "gradebook.db").is_file() or not (root / "release" / assignment / notebook.name).is_file():
        generate_student_copies(root / "handed-out", root=root)
    submission = root / "submitted" / student / assignment
    shutil.rmtree(submission, ignore_errors=True)
    submission.mkdir(parents=True)
    shutil.copy2(notebook, submission / notebook.name)
    results = autograde(root, [student], [assignment], again=True, limits=limits)
    return results[0]


def _limits(args) -> GradingLimits:
    return GradingLimits(args.task_timeout, args.cell_timeout, args.notebook_timeout, args.memory_gib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help_):
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--folder", type=Path, default=nbgrader_folder(), help="nbgrader's course folder")
        return sub

    def with_limits(sub):
        sub.add_argument("--task-timeout", type=int, default=TASK_SECONDS,
                         help=f"seconds a task's cell may run before it is stopped (default {TASK_SECONDS})")
        sub.add_argument("--cell-timeout", type=int, default=CELL_SECONDS,
                         help=f"seconds any other cell may run (default {CELL_SECONDS}: a training)")
        sub.add_argument("--notebook-timeout", type=int, default=NOTEBOOK_SECONDS,
                         help=f"seconds a whole notebook may run (default {NOTEBOOK_SECONDS})")
        sub.add_argument("--memory-gib", type=float, default=MEMORY_GIB,
                         help=f"GiB of memory the notebook's kernel may use (default {MEMORY_GIB}; 0: no limit)")
        return sub

    student = command("student", "student copies of the notebooks, made by nbgrader")
    student.add_argument("--out", type=Path, default=build_dir() / "student")
    gathered = command("collect", "copy HANDED_IN/<student>/<notebook>.ipynb into nbgrader's submitted/")
    gathered.add_argument("handed_in", type=Path)
    every = with_limits(command("autograde", "autograde every submission: scores, reasons, feedback, CSV"))
    every.add_argument("--again", action="store_true", help="regrade submissions graded before")
    one = with_limits(command("grade", "autograde one filled-in student notebook"))
    one.add_argument("notebook", type=Path)
    one.add_argument("--student", default="student", help="the student's id in nbgrader's gradebook")
    command("export", "nbgrader's CSV of the gradebook, with the scores given by hand")
    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            for path in generate_student_copies(args.out, root=args.folder):
                print(f"[student] {shown_path(path)}")
            return 0
        if args.command == "collect":
            copies = collect(args.handed_in, args.folder)
            print(f"{len(copies)} notebooks copied into {shown_path(args.folder / 'submitted')}/<student>/<notebook>/")
            return 0
        if args.command == "export":
            print(f"grades: {shown_path(export_grades(args.folder))}")
            return 0
        if args.command == "grade":
            result = grade(args.notebook, args.student, args.folder, _limits(args))
            print(f"{args.notebook.name}, graded as {args.student!r}:\n")
            if result.did_not_run:
                print(f"did not run, so not scored: its {result.did_not_run}")
            else:
                print(score_table(result.scores))
            feedback = args.folder / "feedback" / args.student / assignment_of(args.notebook)
            print(f"\nthe graded notebook, with each check's output: "
                  f"{shown_path(args.folder / 'autograded' / args.student / assignment_of(args.notebook))}/"
                  f"\nfeedback for the student: {shown_path(feedback)}/")
            return 1 if result.did_not_run else 0
        results = autograde(args.folder, again=args.again, limits=_limits(args),
                            progress=lambda line: print(line, flush=True))
        if not results:
            print(f"no submissions in {shown_path(args.folder / 'submitted')}/ (make collect HANDED_IN=...)")
            return 0
        print("\n" + class_table(results))
        tasks = write_task_scores(results, args.folder / "task-scores.csv")
        grades = export_grades(args.folder)
        print(f"\nevery task's score and reason: {shown_path(tasks)}\nnbgrader's grades: {shown_path(grades)}"
              f"\nfeedback: {shown_path(args.folder / 'feedback')}/<student>/<notebook>/")
        not_run = sum(bool(r.did_not_run) for r in results)
        if not_run:
            print(f"\n{not_run} of {len(results)} notebooks did not run and were not graded (exit status 1)")
        return 1 if not_run else 0
    except (ValueError, FileNotFoundError) as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return 2
    except (GradingError, DiskFullError) as error:
        print(f"{args.command}: {error.strerror if isinstance(error, DiskFullError) else error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
