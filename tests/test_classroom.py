"""The classroom edition: graded tasks in the instructor's notebooks, student copies made by nbgrader
that hand out no answer, checks that a library-calling answer cannot pass, and grading a class."""
import ast
import csv
import re
import subprocess
import sys
import textwrap
from xml.etree import ElementTree

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")
pytest.importorskip("nbgrader", reason="nbgrader is not installed here")

from conftest import free_port, set_to_the_tiny_profile  # noqa: E402
from dyninf.tools.classroom import (HIDDEN_TEST_MARKERS, SOLUTION_MARKERS, STUDENT_COPY, as_handed_out,  # noqa: E402
                              generate_student_copies, grade, main)
from dyninf.tools.runner import CHECKED_OUTPUT_TAG, notebooks_in_order  # noqa: E402
from dyninf.utils.paths import course_root  # noqa: E402
from dyninf.tools.sandbox import confinement_problem  # noqa: E402
from dyninf.tools.grading import (GradingLimits, GradedNotebook, TaskScore, graded_cells, reason_of,  # noqa: E402
                            score_table)
from dyninf.course.tasks import LIBRARY_ANSWERS, library_object  # noqa: E402
from task_answers import DELEGATING, WRONG  # noqa: E402

NOTEBOOKS = notebooks_in_order()
STUB = "    # YOUR CODE HERE\n    raise NotImplementedError()\n"


@pytest.fixture(scope="module")
def nbgrader_root(tmp_path_factory):
    return tmp_path_factory.mktemp("classroom") / "nbgrader"


@pytest.fixture(scope="module")
def student_copies(nbgrader_root):
    out = nbgrader_root.with_name("student")
    return dict(zip([n.name for n in NOTEBOOKS], generate_student_copies(out, root=nbgrader_root)))


def _solution_names(nb) -> list[str]:
    """The functions and variables that a notebook's solution cells define."""
    return [name for cell in graded_cells(nb) if cell.kind == "solution"
            for name in re.findall(r"^(?:def )?(\w+)(?:\(| =)", nb.cells[cell.index].source, flags=re.M)]


def _between(text: str, markers: tuple[str, str]) -> list[str]:
    begin, end = map(re.escape, markers)
    return re.findall(rf"{begin}\n(.*?){end}", text, flags=re.S)


def _tasks(nb) -> list[tuple]:
    """(solution cell, its test cell) of every graded task of ``nb``, in order."""
    cells = graded_cells(nb)
    tests = {c.grade_id: c for c in cells if c.kind == "tests"}
    return [(c, tests[f"{c.grade_id}-tests"]) for c in cells if c.kind == "solution"]


TASKS = [(notebook, position, solution.grade_id) for notebook in NOTEBOOKS
         for position, (solution, _) in enumerate(_tasks(nbformat.read(notebook, as_version=4)))]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_three_graded_tasks_each_a_solution_then_its_tests(notebook):
    nb = nbformat.read(notebook, as_version=4)
    cells = graded_cells(nb)
    solutions = [c for c in cells if c.kind == "solution"]
    assert len(solutions) >= 3, f"{notebook.name}: {len(solutions)} graded tasks"
    for solution in solutions:
        tests = nb.cells[solution.index + 1]
        assert tests.metadata.nbgrader["grade_id"] == f"{solution.grade_id}-tests", solution.grade_id
        assert tests.metadata.nbgrader["points"] > 0 and tests.metadata.nbgrader["locked"]
        # visible checks for the student, hidden ones for grading
        visible = tests.source.split(HIDDEN_TEST_MARKERS[0])[0]
        assert "assert" in visible and _between(tests.source, HIDDEN_TEST_MARKERS), solution.grade_id
        assert _between(nb.cells[solution.index].source, SOLUTION_MARKERS), solution.grade_id
    answers = [c for c in cells if c.kind == "answer"]
    assert answers and all(c.points > 0 for c in answers), f"{notebook.name}: exercises answered in words"
    assert len({c.grade_id for c in cells}) == len(cells), "grade ids must be unique"


def test_every_graded_task_names_its_library_answers_and_its_hidden_checks_disable_them():
    tasks = [grade_id for _, _, grade_id in TASKS]
    assert sorted(tasks) == sorted(LIBRARY_ANSWERS), "one entry per graded task, no more"
    for notebook in NOTEBOOKS:
        nb = nbformat.read(notebook, as_version=4)
        for solution, tests in _tasks(nb):
            hidden = _between(nb.cells[tests.index].source, HIDDEN_TEST_MARKERS)[0]
            assert f'with library_answers_disabled("{solution.grade_id}"):' in hidden, solution.grade_id
            for dotted in LIBRARY_ANSWERS[solution.grade_id]:
                assert callable(library_object(dotted)), dotted


@pytest.mark.parametrize("notebook, position, task", TASKS, ids=[t[2] for t in TASKS])
def test_each_task_passes_its_model_solution_and_fails_a_blank_a_library_calling_and_a_wrong_answer(
        notebook, position, task, student_copies):
    # The solution cell and its checks (hidden ones included), run as grading runs them, after the
    # model solutions of the notebook's earlier tasks (a task may use one: Improved SemHash uses the
    # saturating sigmoid), with the notebook's libraries imported. Nothing else of the notebook is
    # needed: the rest of it does not use what a student writes (below).
    instructor = nbformat.read(notebook, as_version=4)
    handed_out = nbformat.read(student_copies[notebook.name], as_version=4)
    tasks = _tasks(instructor)
    solution, tests = tasks[position]

    def outcome(answer: str) -> str:
        namespace: dict = {}
        exec("import numpy as np\nimport pandas as pd\nimport torch\n", namespace)
        for earlier, _ in tasks[:position]:
            exec(instructor.cells[earlier.index].source, namespace)
        try:
            exec(answer, namespace)
            exec(instructor.cells[tests.index].source, namespace)
        except Exception as error:   # what grading reports as the reason
            return f"{type(error).__name__}: {error}"
        return "passed"

    assert outcome(instructor.cells[solution.index].source) == "passed", "the model solution"
    blank = handed_out.cells[solution.index].source
    assert "raise NotImplementedError()" in blank and outcome(blank) != "passed", "the copy as handed out"
    for answer in DELEGATING[task]:
        assert outcome(answer) != "passed", f"an answer that calls the library passed:\n{answer}"
    assert any(outcome(answer).startswith("LibraryAnswerCalled") for answer in DELEGATING[task]) or \
        task == "02-gumbel-gate", "the library's answer was reached, and refused"   # AIGGates draws its own noise
    for answer in WRONG[task]:
        assert outcome(answer) != "passed", f"a wrong answer passed:\n{answer}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_rest_of_the_notebook_does_not_use_what_a_student_writes(notebook):
    # A student's unfinished task must fail its own cells only: nothing outside the graded cells
    # may use a name that a solution cell defines.
    nb = nbformat.read(notebook, as_version=4)
    graded = {c.index for c in graded_cells(nb)}
    defined = set(_solution_names(nb))
    assert defined
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and index not in graded:
            used = defined & set(re.findall(r"\w+", cell.source))
            assert not used, f"{notebook.name}: cell {index} uses {used}, which the student writes"


def _answers() -> dict:
    """Every graded task's library answers, as objects, with the task's id."""
    return {library_object(dotted): task for task, names in LIBRARY_ANSWERS.items() for dotted in names}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_student_copy_shows_and_imports_no_library_answer_and_says_it_is_the_students(notebook, student_copies):
    import importlib

    answers = _answers()
    qualified = {a.__qualname__ for a in answers}
    student = nbformat.read(student_copies[notebook.name], as_version=4)
    for number, cell in enumerate(student.cells):
        assert STUDENT_COPY not in cell.metadata
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(re.sub(r"^[%!].*$", "", cell.source, flags=re.M))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dyninf"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    imported = getattr(module, alias.name)
                    task = next((task for answer, task in answers.items() if answer is imported), None)
                    assert task is None, f"{notebook.name}, cell {number} imports {alias.name}, the answer to {task}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("show_source", "source_markdown"):
                for argument in map(ast.unparse, node.args):
                    shown = [q for q in qualified if argument == q or argument.endswith("." + q)]
                    assert not shown, f"{notebook.name}, cell {number} shows the library's {argument}"
    assert student.cells[1].source.startswith("> **Your copy.**")
    instructor = nbformat.read(notebook, as_version=4)
    assert instructor.cells[1].source.startswith("> **The instructor's copy, with the answers.**")


def test_the_instructors_copies_show_the_library_answers_only_in_cells_with_a_student_version():
    # the other way round: whatever shows the library's answers is handed out as something else
    qualified = {a.__qualname__ for a in _answers()}
    for notebook in NOTEBOOKS:
        nb = nbformat.read(notebook, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and "show_source(" in cell.source and \
                    any(re.search(rf"\b{re.escape(q)}\b", cell.source) for q in qualified):
                assert STUDENT_COPY in cell.metadata, f"{notebook.name}, cell {index}"


def test_a_cell_is_handed_out_as_its_student_version_says():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("show_source(answer)"),
                                         nbformat.v4.new_markdown_cell("kept")])
    nb.cells[0].metadata[STUDENT_COPY] = {"cell_type": "markdown", "source": "*(shown in the instructor's copy)*"}
    handed_out = as_handed_out(nb)
    assert [(c.cell_type, c.source) for c in handed_out.cells] == [
        ("markdown", "*(shown in the instructor's copy)*"), ("markdown", "kept")]
    assert handed_out.cells[0].id == nb.cells[0].id and STUDENT_COPY in nb.cells[0].metadata   # the original stays


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_student_copy_holds_no_solution_and_no_hidden_test(notebook, student_copies):
    instructor = nbformat.read(notebook, as_version=4)
    student = nbformat.read(student_copies[notebook.name], as_version=4)
    for cell in graded_cells(instructor):
        source, handed_out = instructor.cells[cell.index].source, student.cells[cell.index].source
        hidden = _between(source, SOLUTION_MARKERS) + _between(source, HIDDEN_TEST_MARKERS)
        if cell.kind == "answer":
            hidden.append(source)
        for region in hidden:
            for line in filter(None, (line.strip() for line in region.splitlines())):
                assert line not in handed_out, f"{notebook.name}, {cell.grade_id}: {line!r} handed out"
        if cell.kind == "solution":
            assert "raise NotImplementedError()" in handed_out, cell.grade_id
    assert all(not cell.get("outputs") for cell in student.cells), "outputs are cleared"
    # every cell that is not graded is handed out as the instructor wrote it, or as its student version says
    assert len(student.cells) == len(instructor.cells)
    graded = {c.index for c in graded_cells(instructor)}
    for index, (mine, theirs) in enumerate(zip(instructor.cells, student.cells)):
        if index not in graded:
            expected = mine.metadata.get(STUDENT_COPY, {"cell_type": mine.cell_type, "source": mine.source})
            assert (theirs.cell_type, theirs.source) == (expected["cell_type"], expected["source"]), \
                f"{notebook.name}: cell {index} changed"


def _handed_out_in_the_tiny_profile(notebook, student_copy, folder):
    """The student copy as handed out, set to the tiny profile, with the outputs that the
    instructor's copy commits for its checked cells (nbgrader clears every output)."""
    instructor, student = nbformat.read(notebook, as_version=4), nbformat.read(student_copy, as_version=4)
    for theirs, handed_out in zip(instructor.cells, student.cells):
        if CHECKED_OUTPUT_TAG in theirs.metadata.get("tags", []):
            handed_out.outputs, handed_out.execution_count = theirs.outputs, theirs.execution_count
    set_to_the_tiny_profile(student)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(student, folder / notebook.name)
    return folder / notebook.name


@pytest.mark.notebook
def test_each_student_copy_run_as_handed_out_fails_exactly_its_graded_cells_and_prints_the_checked_outputs(
        student_copies, tmp_path):
    # nbval runs each student copy from top to bottom (tiny profile): every graded test cell must
    # fail (a blank answer never scores), every other cell must run (a student who has not started
    # can still run the notebook), and each cell tagged nbval-check-output must print what the
    # instructor's copy commits (nbval-lax compares those cells only).
    for notebook in NOTEBOOKS:
        _handed_out_in_the_tiny_profile(notebook, student_copies[notebook.name], tmp_path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")   # not this repository's test configuration
    report = tmp_path / "nbval.xml"
    finished = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                               f"--junitxml={report}", *(n.name for n in NOTEBOOKS)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert report.exists(), finished.stdout[-3000:] + finished.stderr[-3000:]
    results = {(case.get("classname"), case.get("name")): [child.get("message", "") for child in case]
               for case in ElementTree.parse(report).iter("testcase")}
    checked_anywhere = set()
    for notebook in NOTEBOOKS:
        instructor = nbformat.read(notebook, as_version=4)
        handed_out = nbformat.read(student_copies[notebook.name], as_version=4)
        # nbval numbers the code cells of the copy it runs (a cell the instructor's copy has as
        # code may be handed out as text)
        code_cells = [i for i, cell in enumerate(handed_out.cells) if cell.cell_type == "code"]
        kinds = {c.index: c.kind for c in graded_cells(instructor)}
        checked = {i for i in code_cells if CHECKED_OUTPUT_TAG in instructor.cells[i].metadata.get("tags", [])}
        failed = {index for number, index in enumerate(code_cells)
                  if results.get((notebook.name, f"Cell {number}"), ["not run"])}
        tests = {i for i, kind in kinds.items() if kind == "tests"}
        # a solution cell may fail as well: its stub raises where the task sets a variable
        solutions = {i for i, kind in kinds.items() if kind == "solution"}
        assert tests <= failed, f"{notebook.name}: graded tests that passed blank: {sorted(tests - failed)}"
        assert failed <= tests | solutions, (f"{notebook.name}: cells that failed although they hold no task: "
                                             f"{sorted(failed - tests - solutions)}\n{finished.stdout[-3000:]}")
        checked_anywhere.update(f"{notebook.name}, cell {i}" for i in checked)
    assert len(checked_anywhere) >= 4, checked_anywhere   # e.g. notebook 00's parameter and MACs table


def test_the_score_table_totals_the_autograded_tasks_gives_each_failure_its_reason_and_counts_the_answers_left():
    scores = [TaskScore("00-conv-macs-tests", 2, 2, False),
              TaskScore("00-option-a-shortcut-tests", 0, 2, False, reason="the check: AssertionError: zeros"),
              TaskScore("00-exercise-1", 0, 1, True), TaskScore("00-exercise-2", 0, 1, True, answered=False)]
    table = score_table(scores)
    assert "| 00-conv-macs-tests | 2 | 2 | passed |" in table
    assert "| 00-option-a-shortcut-tests | 0 | 2 | failed: the check: AssertionError: zeros |" in table
    assert "| 00-exercise-1 |  | 1 | to grade by hand |" in table
    assert "| 00-exercise-2 | 0 | 1 | no answer |" in table
    assert "| **autograded total** | **2** | **4** | 1 answers to grade by hand |" in table
    assert GradedNotebook("ada", "00.ipynb", scores, did_not_run="code cell 2: ValueError").autograded_score == 0


def test_a_failed_cell_is_explained_in_one_line():
    assert reason_of({"ename": "AssertionError", "evalue": "d = 1: ReLU(s + F)"}) == "AssertionError: d = 1: ReLU(s + F)"
    bare = {"ename": "AssertionError", "evalue": "", "traceback": [
        "\x1b[0;31m----> 3\x1b[0m \x1b[38;5;28;01massert\x1b[39;00m conv_macs(2, 3, 1, 1, 1) == 6", "AssertionError: "]}
    assert reason_of(bare) == "AssertionError at assert conv_macs(2, 3, 1, 1, 1) == 6"
    assert reason_of({"ename": "NotImplementedError", "evalue": ""}).startswith("not written yet")
    assert reason_of({"ename": "CellTimeoutError", "evalue": GradingLimits(5, 9).message()}).startswith(
        "the cell ran past its time limit and was stopped (5 s for a task's cells, 9 s")
    assert reason_of({"ename": "TypeError", "evalue": "bad operand"}) == "TypeError: bad operand"


def test_time_limits_are_whole_seconds_a_tasks_cells_get_their_own_and_no_cell_outlasts_the_notebooks(monkeypatch):
    limits = GradingLimits(7, 900, 1000)
    assert limits({"metadata": {"nbgrader": {"solution": True}}}) == 7
    assert limits({"metadata": {"nbgrader": {"grade": True}}}) == 7
    assert limits({"metadata": {}}) == 900
    now = [100.0]
    monkeypatch.setattr("dyninf.tools.grading.time.monotonic", lambda: now[0])
    limits.start_notebook(notebook=None)   # nbclient's on_notebook_start
    now[0] += 400.5
    assert limits({"metadata": {}}) == 600 and limits({"metadata": {"nbgrader": {"grade": True}}}) == 7
    now[0] += 600
    assert limits({"metadata": {}}) == 1   # the notebook's time is spent: every later cell stops at once
    assert "1000 s for the whole notebook" in limits.message()
    for wrong in (0, -1, 2.5, "60", True):
        with pytest.raises(ValueError, match="task_seconds must be a whole number of seconds"):
            GradingLimits(wrong, 900)
    with pytest.raises(ValueError, match="notebook_seconds must be"):
        GradingLimits(7, 900, 0)
    with pytest.raises(ValueError, match=r"memory limit \(memory_gib, make's MEMORY_GIB\) must be 0 \(no limit\) or more GiB; got -1$"):
        GradingLimits(memory_gib=-1)


def test_the_notebooks_time_limit_holds_as_nbgrader_configures_it(tmp_path):
    # traitlets copies the values it configures: the limit nbclient asks each cell and the hook
    # that tells it the notebook started must still be one clock
    from nbgrader.preprocessors import Execute
    from traitlets.config import Config

    from dyninf.tools.grading import execute_settings

    config = Config()
    for name, value in execute_settings(tmp_path, GradingLimits(7, 900, 50)).items():
        setattr(config.Execute, name, value)
    execute = Execute(config=config)
    assert execute.timeout_func({"metadata": {}}) == 900
    execute.on_notebook_start(notebook=None)
    assert execute.timeout_func({"metadata": {}}) == 50
    assert execute.kernel_name == "dyninf-sandbox" and (tmp_path / "kernels" / "dyninf-sandbox" / "kernel.json").is_file()


def test_grading_something_that_is_not_a_course_notebook_or_a_student_id_that_is_no_name_says_what_it_expected(
        tmp_path, capsys):
    with pytest.raises(ValueError, match="a student copy of one of the course's notebooks"):
        grade(tmp_path / "homework.ipynb", root=tmp_path)
    assert main(["grade", str(tmp_path / "00_resnet_baseline.ipynb"), "--folder", str(tmp_path)]) == 2
    assert "no notebook at" in capsys.readouterr().err
    (tmp_path / "00_resnet_baseline.ipynb").write_text("{}")
    for student in ("../../victim", "a b", "", "ada/01"):
        assert main(["grade", str(tmp_path / "00_resnet_baseline.ipynb"), "--student", student,
                     "--folder", str(tmp_path / "nbgrader")]) == 2
        assert "a student id is letters, digits, '-' and '_' only" in capsys.readouterr().err
    assert not (tmp_path / "nbgrader").exists(), "nothing was written before the id was checked"
    (tmp_path / "00_resnet_baseline.ipynb").write_text("print('my answers')\n")   # a text file, renamed
    assert main(["grade", str(tmp_path / "00_resnet_baseline.ipynb"), "--folder", str(tmp_path / "nbgrader")]) == 2
    err = capsys.readouterr().err
    assert "00_resnet_baseline.ipynb is not a Jupyter notebook (" in err and len(err.splitlines()) == 1, err
    (tmp_path / "handed-in" / "bo").mkdir(parents=True)
    (tmp_path / "00_resnet_baseline.ipynb").rename(tmp_path / "handed-in" / "bo" / "00_resnet_baseline.ipynb")
    assert main(["collect", str(tmp_path / "handed-in"), "--folder", str(tmp_path / "nbgrader")]) == 2
    assert "is not a Jupyter notebook" in capsys.readouterr().err
    assert not (tmp_path / "nbgrader").exists()
    (tmp_path / "handed-in" / "bo" / "00_resnet_baseline.ipynb").unlink()
    handed_in = tmp_path / "handed-in"
    (handed_in / "ada").mkdir(parents=True)
    (handed_in / "ada" / "homework.ipynb").write_text("{}")
    assert main(["collect", str(handed_in), "--folder", str(tmp_path / "nbgrader")]) == 2
    assert "expected a course notebook named as handed out" in capsys.readouterr().err


def _answered(handed_out, instructor, answers: dict) -> None:
    """``handed_out`` with the solution cells of the tasks in ``answers`` (grade id -> the whole
    cell, or "model" for the instructor's solution) replaced."""
    for solution, _ in _tasks(instructor):
        if solution.grade_id in answers:
            answer = answers[solution.grade_id]
            handed_out.cells[solution.index].source = (instructor.cells[solution.index].source
                                                       if answer == "model" else answer)


@pytest.mark.notebook
def test_a_class_grades_into_one_gradebook_with_reasons_time_limits_feedback_and_csv(student_copies, nbgrader_root,
                                                                                      tmp_path, capfd):
    # Three students hand in notebooks 00 and 01 (tiny profile, as a student may set it): ada with
    # the model solutions, bo with answers that only call the library, cy with a task that loops
    # forever, a wrong one and a blank one in 00, and a misspelt profile in 01, so that 01 never runs.
    handed_in = tmp_path / "handed-in"
    first, second = NOTEBOOKS[0], NOTEBOOKS[1]
    # eve hands in 00 only: her first task looks for the instructor's notebooks and nbgrader's
    # source (the hidden tests), and tries to write beside the course; her second asks for more
    # memory than the kernel has
    confined = not confinement_problem()
    escaped = course_root().parent / f"escaped-{tmp_path.name}.txt"
    hostile = textwrap.dedent(f"""
        import glob, pathlib
        from dyninf.utils.paths import course_root
        seen = [path for pattern in ("notebooks/*.ipynb", ".git/*", "build/**/*.ipynb")
                for path in glob.glob(str(course_root() / pattern), recursive=True)]
        seen += glob.glob({str(nbgrader_root)!r} + "/source/**/*.ipynb", recursive=True)
        try:   # where the checkout lies under /tmp this may land in the sandbox's own /tmp: never outside
            pathlib.Path({str(escaped)!r}).write_text("out")
        except OSError:
            pass
        raise AssertionError(f"saw {{seen}}")
    """)
    for student in ("ada", "bo", "cy", "eve"):
        for notebook in (first, second) if student != "eve" else (first,) if confined else ():
            path = _handed_out_in_the_tiny_profile(notebook, student_copies[notebook.name], handed_in / student)
            instructor, copy = nbformat.read(notebook, as_version=4), nbformat.read(path, as_version=4)
            tasks = [solution.grade_id for solution, _ in _tasks(instructor)]
            if student == "ada":
                _answered(copy, instructor, dict.fromkeys(tasks, "model"))
            elif student == "bo":
                _answered(copy, instructor, {task: DELEGATING[task][0] for task in tasks})
            elif student == "eve":
                _answered(copy, instructor, {tasks[0]: hostile, tasks[1]: "block = bytearray(5 * 2**30)\n"})
            elif notebook == first:
                looping = (copy.cells[_tasks(instructor)[0][0].index].source + "\n").replace(
                    STUB, "    while True:\n        pass\n")
                assert "while True" in looping
                _answered(copy, instructor, {tasks[0]: looping, tasks[1]: WRONG[tasks[1]][0]})
            else:
                parameters = next(c for c in copy.cells if "parameters" in c.metadata.get("tags", []))
                parameters.source = parameters.source.replace('profile = "tiny"', 'profile = "quik"')
            nbformat.write(copy, path)

    assert main(["collect", str(handed_in), "--folder", str(nbgrader_root)]) == 0
    assert main(["autograde", "--folder", str(nbgrader_root), "--task-timeout", "15",
                 "--memory-gib", "4"]) == 1   # cy's 01 did not run
    out, err = capfd.readouterr()
    assert str(tmp_path) not in out + err and "Warning" not in out + err and "warn" not in err.lower(), out + err
    rows = list(csv.DictReader((nbgrader_root / "task-scores.csv").open()))
    by = {(r["student"], r["notebook"], r["task"]): r for r in rows}
    for notebook in (first, second):
        tests = [t.grade_id for _, t in _tasks(nbformat.read(notebook, as_version=4))]
        for task in tests:
            assert by[("ada", notebook.name, task)]["status"] == "passed", by[("ada", notebook.name, task)]
            bo = by[("bo", notebook.name, task)]
            assert (bo["status"], bo["score"]) == ("failed", "0"), bo
        assert any("called the library's" in by[("bo", notebook.name, task)]["reason"] for task in tests)
    cy = [by[("cy", first.name, t.grade_id)] for _, t in _tasks(nbformat.read(first, as_version=4))]
    assert [r["status"] for r in cy] == ["failed"] * 3
    assert "ran past its time limit and was stopped (15 s" in cy[0]["reason"], cy[0]
    assert cy[1]["reason"].startswith("AssertionError: ") and cy[2]["reason"].startswith("not written yet"), cy
    if confined:
        eve = [by[("eve", first.name, t.grade_id)] for _, t in _tasks(nbformat.read(first, as_version=4))]
        assert eve[0]["reason"] == "AssertionError: saw []", "graded code saw no answer and wrote nothing outside"
        assert not escaped.exists()
        assert eve[1]["reason"] == "MemoryError: the cell asked for more memory than the grading kernel may use"
    did_not_run = by[("cy", second.name, "")]
    assert did_not_run["status"] == "did not run" and "unknown profile 'quik'" in did_not_run["reason"]
    assert "| cy | 01_stochastic_depth.ipynb | 0 |" in out and "did not run (code cell" in out
    assert f"1 of {6 + confined} notebooks did not run and were not graded (exit status 1)" in out

    feedback = {(p.parts[-3], p.parts[-2]): p.read_text() for p in (nbgrader_root / "feedback").rglob("*.html")}
    assert len(feedback) == 6 + confined
    assert "ran past its time limit" in feedback[("cy", first.stem)]
    assert "KeyboardInterrupt" not in feedback[("cy", first.stem)], "the time-out says why, not the interrupt"
    for html in feedback.values():
        assert str(course_root()) not in html and "site-packages" not in html, "no path of the grading machine"
    assert "Not graded: this notebook did not run." in feedback[("cy", second.stem)]
    grades = {(r["student_id"], r["assignment"]): r for r in csv.DictReader((nbgrader_root / "grades.csv").open())}
    assert float(grades[("ada", first.stem)]["raw_score"]) == sum(
        t.points for _, t in _tasks(nbformat.read(first, as_version=4)))
    assert float(grades[("cy", second.stem)]["raw_score"]) == 0, "a notebook that did not run scores nothing"

    # regrading one notebook of one student keeps everything else of the gradebook
    capfd.readouterr()
    assert main(["grade", str(handed_in / "bo" / first.name), "--student", "bo", "--folder", str(nbgrader_root)]) == 0
    assert "| **autograded total** | **0** |" in capfd.readouterr().out
    assert main(["autograde", "--folder", str(nbgrader_root)]) == 1   # nothing changed: read back, not rerun
    out = capfd.readouterr().out
    assert "autograding" not in out and out.count("| ada |") == 2 and "| bo | 00_resnet_baseline.ipynb | 0 |" in out


def test_the_formgrader_started_in_the_course_folder_finds_its_gradebook(student_copies, nbgrader_root):
    # what `make formgrader` starts: nbgrader's formgrader, in the course folder, finds the
    # gradebook through the nbgrader_config.py that `make student` writes there
    import json
    import time
    import urllib.request

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--ip=127.0.0.1", f"--port={port}",
                               "--IdentityProvider.token=grading", "--no-browser", "--allow-root"],
                              cwd=nbgrader_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, assignments = time.monotonic() + 60, None
        while assignments is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/formgrader/api/assignments?token=grading",
                                            timeout=5) as reply:
                    assignments = json.load(reply)
            except OSError:
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert assignments is not None, "the formgrader did not answer within a minute"
    assert {a["name"] for a in assignments} == {n.stem for n in NOTEBOOKS}


def test_the_make_targets_pass_the_time_limits_and_the_student_id_on():
    def planned(*args):
        return subprocess.run(["make", "-n", *args], cwd=course_root(), capture_output=True, text=True, check=True).stdout

    first_time = planned("autograde", "TASK_TIMEOUT=30")
    assert "-m dyninf.tools.classroom autograde --task-timeout 30 --cell-timeout 1800" in first_time
    assert "--again" not in first_time
    assert ("-m dyninf.tools.classroom autograde --task-timeout 60 --cell-timeout 1800 --notebook-timeout 3600 "
            "--memory-gib 8 --again") in planned("autograde", "AGAIN=1")
    assert "--notebook-timeout 900 --memory-gib 2" in planned("autograde", "NOTEBOOK_TIMEOUT=900", "MEMORY_GIB=2")
    assert ('-m dyninf.tools.classroom grade "x/00_resnet_baseline.ipynb" --student "ada" --task-timeout 60 '
            '--cell-timeout 600') in planned("grade", "NB=x/00_resnet_baseline.ipynb", "STUDENT=ada", "CELL_TIMEOUT=600")
    assert '-m dyninf.tools.classroom collect "handed-in"' in planned("collect", "HANDED_IN=handed-in")
    assert "-m dyninf.tools.classroom export" in planned("export")
