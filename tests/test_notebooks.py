"""The notebooks, executed end to end as a reader would run them (quick profile)."""
import json
from pathlib import Path

import pytest

# A GPU image may lack the notebook runner (README, "On a GPU", carries it as wheels): without it
# these tests are skipped there instead of stopping the whole collection. CI installs it.
nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")

from dyninf.tools.grading import graded_cells  # noqa: E402
from dyninf.tools.runner import CHECKED_OUTPUT_TAG, execute_notebook, notebooks_in_order, run_course  # noqa: E402
from dyninf.utils.paths import course_root  # noqa: E402

NOTEBOOKS = notebooks_in_order()


def test_the_course_has_its_notebooks():
    assert [nb.name for nb in NOTEBOOKS][:1] == ["00_resnet_baseline.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_a_parameters_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECKED_OUTPUT_TAG not in cell.metadata.get("tags", []):
            assert not cell.outputs and cell.execution_count is None, f"outputs in: {cell.source[:60]}"
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and 'profile = "quick"' in parameters[0].source and "seed = 0" in parameters[0].source
    assert "quick" in nb.cells[0].source and "standard" in nb.cells[0].source  # says what each needs


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_goals_and_times_and_ends_with_a_summary(notebook):
    nb = nbformat.read(notebook, as_version=4)
    opening, closing = nb.cells[0].source, nb.cells[-1].source
    for part in ("**Learning goals.**", "**Prerequisites.**", "](https://arxiv.org/abs/", "| measured time |",
                 "2-core AMD EPYC"):
        assert part in opening, f"{notebook.name} opens without {part!r}"
    assert nb.cells[-1].cell_type == "markdown" and closing.startswith("## Summary"), notebook.name


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_mechanisms_are_shown_from_the_library_and_every_cost_plot_is_followed_by_a_notice(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    if not notebook.name.startswith("05"):   # 00-04 teach a mechanism; 05 compares them
        assert any("show_source(" in source for source in code), f"{notebook.name} shows no library source"
    for cell, following in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code" and "plot_accuracy_against_macs(" in cell.source:
            assert following.cell_type == "markdown" and following.source.startswith("**Notice:**"), notebook.name


def _no_residue_of_the_machine(executed, notebook, *paths) -> None:
    """What an executed copy must not show: progress-bar residue, warnings on stderr, absolute paths
    of the machine that ran it."""
    text = nbformat.writes(executed)
    for path in {str(p) for p in paths}:
        assert path not in text, f"{notebook.name}: the executed copy names {path}"
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), cell.source[:60]
            if output.output_type == "stream":
                assert output.name == "stdout", f"{notebook.name}: stderr in {cell.source[:60]!r}: {output.text[:200]}"
                assert "%|" not in output.text, f"{notebook.name}: progress-bar residue: {output.text[:200]}"


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_the_quick_profile(notebook, tmp_path, monkeypatch):
    # The same path as `make course`: papermill on a fresh kernel, HTML, metrics, report; under
    # MPLBACKEND=Agg, as many CI machines set it: the notebook must still show its figures.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert run_course("quick", tmp_path, [notebook])
    assert (tmp_path / notebook.name).exists() and (tmp_path / f"{notebook.stem}.html").exists()
    executed = nbformat.read(tmp_path / notebook.name, as_version=4)
    figures = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, "the executed notebook shows no figures"
    # the checkout and the output folder without their leading "/": a relative path that climbs out
    # to them names them as well
    _no_residue_of_the_machine(executed, notebook, Path.home(),
                               *(p.relative_to(p.anchor) for p in (course_root(), tmp_path)))
    assert executed.metadata.papermill.input_path == f"notebooks/{notebook.name}"
    # the instructor's copy passes every graded task's checks, hidden ones included
    checks = [executed.cells[c.index] for c in graded_cells(executed) if c.kind == "tests"]
    assert len(checks) >= 3 and all(cell.execution_count for cell in checks), notebook.name
    metrics = json.loads((tmp_path / "metrics" / f"{notebook.stem}.json").read_text())
    assert metrics["profile"] == "quick" and metrics["metrics"]
    assert "| ok |" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.notebook
def test_an_unknown_profile_stops_the_notebook_with_a_clear_error(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="unknown profile 'fastest'"):
        execute_notebook(NOTEBOOKS[0], tmp_path, "fastest")
