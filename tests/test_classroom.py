"""The classroom edition: graded tasks in the instructor's notebooks, student copies made by nbgrader."""
import re
import subprocess
import sys
from xml.etree import ElementTree

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")
pytest.importorskip("nbgrader", reason="nbgrader is not installed here")

from conftest import set_to_the_tiny_profile  # noqa: E402
from dyninf.classroom import (HIDDEN_TEST_MARKERS, SOLUTION_MARKERS, TaskScore, generate_student_copies,  # noqa: E402
                              graded_cells, grade, main, score_table)
from dyninf.course import CHECKED_OUTPUT_TAG, notebooks_in_order  # noqa: E402

NOTEBOOKS = notebooks_in_order()


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
    # every cell that is not graded is handed out as the instructor wrote it
    assert len(student.cells) == len(instructor.cells)
    graded = {c.index for c in graded_cells(instructor)}
    for index, (mine, theirs) in enumerate(zip(instructor.cells, student.cells)):
        if index not in graded:
            assert mine.source == theirs.source, f"{notebook.name}: cell {index} changed"


def _handed_out_in_the_tiny_profile(notebook, student_copy, folder):
    """The student copy as handed out, set to the tiny profile, with the outputs that the
    instructor's copy commits for its checked cells (nbgrader clears every output)."""
    instructor, student = nbformat.read(notebook, as_version=4), nbformat.read(student_copy, as_version=4)
    for theirs, handed_out in zip(instructor.cells, student.cells):
        if CHECKED_OUTPUT_TAG in theirs.metadata.get("tags", []):
            handed_out.outputs, handed_out.execution_count = theirs.outputs, theirs.execution_count
    set_to_the_tiny_profile(student)
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
        code_cells = [i for i, cell in enumerate(instructor.cells) if cell.cell_type == "code"]
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


def test_the_score_table_totals_the_autograded_tasks_and_counts_the_answers_left():
    scores = [TaskScore("00-conv-macs-tests", 2, 2, False), TaskScore("00-option-a-shortcut-tests", 0, 2, False),
              TaskScore("00-exercise-1", 0, 1, True), TaskScore("00-exercise-2", 0, 1, True, answered=False)]
    table = score_table(scores)
    assert "| 00-conv-macs-tests | 2 | 2 | passed |" in table
    assert "| 00-option-a-shortcut-tests | 0 | 2 | failed |" in table
    assert "| 00-exercise-1 |  | 1 | to grade by hand |" in table
    assert "| 00-exercise-2 | 0 | 1 | no answer |" in table
    assert "| **autograded total** | **2** | **4** | 1 answers to grade by hand |" in table


def test_grading_something_that_is_not_a_course_notebook_says_what_it_expected(tmp_path, capsys):
    with pytest.raises(ValueError, match="a student copy of one of the course's notebooks"):
        grade(tmp_path / "homework.ipynb", root=tmp_path)
    assert main(["grade", str(tmp_path / "00_resnet_baseline.ipynb"), "--folder", str(tmp_path)]) == 2
    assert "no notebook at" in capsys.readouterr().err


@pytest.mark.notebook
def test_grading_a_copy_with_one_task_done_scores_that_task_and_fails_the_others(student_copies, nbgrader_root,
                                                                                  tmp_path, capsys):
    # make grade's command, on notebook 00 as a student hands it in: task 1 written, the rest blank
    # (in the tiny profile, which a student may set in the parameters cell: nbgrader keeps that cell)
    notebook = NOTEBOOKS[0]
    instructor = nbformat.read(notebook, as_version=4)
    handed_in = nbformat.read(_handed_out_in_the_tiny_profile(notebook, student_copies[notebook.name], tmp_path),
                              as_version=4)
    task = next(c for c in graded_cells(instructor) if c.kind == "solution")
    answer = _between(instructor.cells[task.index].source, SOLUTION_MARKERS)[0]
    stub = "    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert stub in handed_in.cells[task.index].source + "\n"
    handed_in.cells[task.index].source = (handed_in.cells[task.index].source + "\n").replace(stub, answer)
    nbformat.write(handed_in, tmp_path / notebook.name)

    assert main(["grade", str(tmp_path / notebook.name), "--student", "ada", "--folder", str(nbgrader_root)]) == 1
    table = capsys.readouterr().out
    tests = [c for c in graded_cells(instructor) if c.kind == "tests"]
    assert f"| {tests[0].grade_id} | {tests[0].points:g} | {tests[0].points:g} | passed |" in table
    for other in tests[1:]:
        assert f"| {other.grade_id} | 0 | {other.points:g} | failed |" in table
    for answer in (c for c in graded_cells(instructor) if c.kind == "answer"):   # left blank: 0, nothing to grade
        assert f"| {answer.grade_id} | 0 | {answer.points:g} | no answer |" in table
    assert "| 0 answers to grade by hand |" in table
    assert (nbgrader_root / "autograded" / "ada" / "course" / notebook.name).is_file()
