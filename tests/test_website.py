"""The course's website (make site): its links, the pages it stages, and the learner's edition,
which must hold no solution, hidden check or model answer."""
import json
import re
import shutil

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")

from dyninf.tools.classroom import HIDDEN_TEST_MARKERS, SOLUTION_MARKERS  # noqa: E402
from dyninf.tools.report import render_report  # noqa: E402
from dyninf.tools.runner import notebooks_in_order  # noqa: E402
from dyninf.tools.website import (NoCourseRunError, learner_notebook, localize_links, read_run,  # noqa: E402
                                  readme_section)

PAGES = {"README.md": "index.md", "results/README.md": "results/README.md",
         "notebooks/00_resnet_baseline.ipynb": "notebooks/00_resnet_baseline.ipynb"}


def test_links_point_at_the_sites_copies_and_files_it_does_not_hold_become_their_text():
    text = ("[results](results/README.md#test-times), [code](lib/dyninf/network/cost.py), "
            "[paper](https://arxiv.org/abs/1512.03385), [here](#a-section), ![plot](missing.png)")
    assert localize_links(text, "README.md", PAGES) == (
        "[results](results/README.md#test-times), code, [paper](https://arxiv.org/abs/1512.03385), "
        "[here](#a-section), ")
    # from results/README.md, the README is the home page, one folder up
    assert localize_links("[README](../README.md)", "results/README.md", PAGES) == "[README](../index.md)"
    assert localize_links("[00](../notebooks/00_resnet_baseline.ipynb)", "results/README.md", PAGES) == \
        "[00](../notebooks/00_resnet_baseline.ipynb)"


def test_a_readme_section_runs_to_the_next_heading_of_its_level():
    readme = "# T\n\n## A\n\none\n\n### A.1\n\ntwo\n\n## B\n\nthree\n"
    assert readme_section(readme, "A") == "\none\n\n### A.1\n\ntwo\n".strip("\n")
    assert readme_section(readme, "B") == "\nthree".strip("\n")
    with pytest.raises(ValueError, match="no section headed 'C'"):
        readme_section(readme, "C")


def _between(source: str, markers: tuple[str, str]) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip().startswith(markers[0]):
            inside = True
        elif line.strip().startswith(markers[1]):
            inside = False
        elif inside and len(line.strip()) > 12:
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("notebook", notebooks_in_order(), ids=lambda p: p.stem)
def test_the_learners_notebook_holds_no_solution_hidden_check_model_answer_or_library_answer(notebook):
    instructor = nbformat.read(notebook, as_version=4)
    for cell in instructor.cells:   # an executed copy's outputs, which a solution's output must not keep
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="answer: 42\n")]
    learner = learner_notebook(instructor)
    text = "\n".join(cell.source for cell in learner.cells)
    secrets = []
    for cell in instructor.cells:
        grading = cell.metadata.get("nbgrader", {})
        secrets += _between(cell.source, SOLUTION_MARKERS) + _between(cell.source, HIDDEN_TEST_MARKERS)
        if cell.cell_type == "markdown" and grading.get("solution"):   # a model answer
            secrets += [line.strip() for line in cell.source.splitlines() if len(line.strip()) > 12]
        if "student_copy" in cell.metadata:   # the library's implementation of a task's answer
            secrets += [line.strip() for line in cell.source.splitlines() if len(line.strip()) > 12
                        and line.strip() not in cell.metadata["student_copy"]["source"]]
    leaked = [line for line in secrets if line in text and line not in _task_statements(instructor)]
    assert secrets and not leaked, f"{notebook.name}: the learner's page shows {leaked[:3]}"
    for cell in learner.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            assert not cell.outputs, f"{notebook.name}: a graded cell keeps its output"
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text


def _task_statements(nb) -> set[str]:
    """Lines that the notebook also shows outside any answer (a task's statement may quote them)."""
    return {line.strip() for cell in nb.cells if not cell.metadata.get("nbgrader", {}).get("solution")
            and "student_copy" not in cell.metadata
            for line in re.split(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", cell.source, flags=re.S)[0].splitlines()}


def test_the_reports_page_links_the_notebook_pages_without_an_html_column():
    runs = [{"notebook": "00_resnet_baseline", "status": "ok", "seconds": 3.0, "executed": "notebooks/00.ipynb",
             "metrics": None}]
    page = render_report(runs, html_column=False)
    assert "| notebook | status | time | executed |\n" in page and "[ipynb](notebooks/00.ipynb) |\n" in page
    assert "html" not in page.lower().replace("executed", "")


def test_a_folder_without_a_course_run_is_one_error_naming_what_was_expected(tmp_path):
    with pytest.raises(NoCourseRunError, match="expected its course.json, which `make course`"):
        read_run(tmp_path)
    (tmp_path / "course.json").write_text(json.dumps({"profile": "tiny", "notebooks": []}))
    with pytest.raises(NoCourseRunError, match="records no notebook run"):
        read_run(tmp_path)


def test_both_editions_build_from_a_run_and_only_the_instructors_shows_solutions(tmp_path):
    pytest.importorskip("sphinx", reason="the site's packages are not installed (make site installs them)")
    from dyninf.tools.website import build_site

    run = tmp_path / "run"
    run.mkdir()
    notebooks = notebooks_in_order()
    for notebook in notebooks:
        shutil.copy(notebook, run / notebook.name)
    (run / "course.json").write_text(json.dumps({
        "profile": "tiny", "seed": 0, "device": "CPU (test)", "torch": "2", "finished": "2026-12-03T10:00:00+00:00",
        "commit": "abc1234", "notebooks": [{"notebook": n.stem, "status": "ok", "seconds": 1.0, "error": "",
                                            "device": "CPU (test)"} for n in notebooks]}))
    learner, instructor = build_site(run, tmp_path / "site")
    solution = _between(nbformat.read(notebooks[0], as_version=4).cells[
        next(i for i, c in enumerate(nbformat.read(notebooks[0], as_version=4).cells)
             if SOLUTION_MARKERS[0] in c.source)].source, SOLUTION_MARKERS)[0]

    def site_text(folder):
        return "\n".join(p.read_text(errors="ignore") for p in folder.rglob("*")
                         if p.is_file() and p.suffix in {".html", ".js", ".txt", ".ipynb"} and "_static" not in p.parts)
    assert solution not in site_text(learner) and solution in site_text(instructor)
    page = (learner / "notebooks" / "00_resnet_baseline.html").read_text()
    assert "commit <code" in page and "abc1234" in page and "CPU (test)" in page
    for folder in (learner, instructor):
        for html in folder.rglob("*.html"):
            assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html.read_text()), \
                f"{html} loads something from another host"
