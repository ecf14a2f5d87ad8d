"""The notebooks, executed end to end as a reader would run them (quick profile)."""
import json

import nbformat
import pytest

from dyninf.course import execute_notebook, notebooks_in_order, run_course

NOTEBOOKS = notebooks_in_order()
KEEP_OUTPUT_TAG = "nbval-check-output"  # cells whose deterministic output is committed on purpose


def test_the_course_has_its_notebooks():
    assert [nb.name for nb in NOTEBOOKS][:1] == ["00_resnet_baseline.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_a_parameters_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and KEEP_OUTPUT_TAG not in cell.metadata.get("tags", []):
            assert not cell.outputs and cell.execution_count is None, f"outputs in: {cell.source[:60]}"
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and 'profile = "quick"' in parameters[0].source and "seed = 0" in parameters[0].source
    assert "quick" in nb.cells[0].source and "standard" in nb.cells[0].source  # says what each needs


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
    metrics = json.loads((tmp_path / "metrics" / f"{notebook.stem}.json").read_text())
    assert metrics["profile"] == "quick" and metrics["metrics"]
    assert "| ok |" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.notebook
def test_an_unknown_profile_stops_the_notebook_with_a_clear_error(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="unknown profile 'fastest'"):
        execute_notebook(NOTEBOOKS[0], tmp_path, "fastest")
