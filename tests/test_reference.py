"""Reference results: a finished course run kept under results/, and the check of every kept file."""
import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

import dyninf.tools.reference as reference
from dyninf.tools.reference import RUN_KEYS, export_reference, reference_problems

ROOT = Path(__file__).resolve().parents[1]


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _finished_course(build: Path, status=("ok", "ok")) -> Path:
    """A make-course folder as `dyninf.tools.runner` leaves it: two notebooks, one with two figures."""
    names = ["00_first", "01_second"]
    (build / "metrics").mkdir(parents=True)
    for name, figures in zip(names, ([_png("red"), _png("blue")], [])):
        outputs = [{"output_type": "display_data", "data": {"image/png": base64.b64encode(png).decode()}}
                   for png in figures] + [{"output_type": "stream", "text": "no figure"}]
        (build / f"{name}.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))
        (build / "metrics" / f"{name}.json").write_text(json.dumps(
            {"notebook": name, "profile": "standard", "device": "NVIDIA H100", "torch": "2.11.0", "metrics": []}))
    (build / "REPORT.md").write_text("# report\n")
    (build / "course.json").write_text(json.dumps({"profile": "standard", "seed": 0, "notebooks": [
        {"notebook": name, "status": state, "seconds": 60.0} for name, state in zip(names, status)]}))
    return build


def test_a_finished_run_is_kept_with_its_figures_metrics_and_where_it_ran(tmp_path):
    out = tmp_path / "results" / "standard"
    out.mkdir(parents=True)
    (out / "stale.json").write_text("{}")     # an earlier reference is replaced as a whole
    written = export_reference(_finished_course(tmp_path / "build"), out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "README.md", "REPORT.md", "course.json", "figures/00_first-1.png", "figures/00_first-2.png",
        "metrics/00_first.json", "metrics/01_second.json", "run.json"]
    assert (out / "figures" / "00_first-2.png").read_bytes() == _png("blue")
    run = json.loads((out / "run.json").read_text())
    assert set(RUN_KEYS) <= set(run) and run["device"] == ["NVIDIA H100"] and run["profile"] == "standard"
    assert "2.0 minutes in all" in (out / "README.md").read_text()
    assert reference_problems(out, mentions="") == []
    assert [p.name for p in out.parent.iterdir()] == ["standard"]   # no staging folder left


def test_only_a_complete_run_within_the_size_limit_is_kept(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no complete course run.*01_second"):
        export_reference(_finished_course(tmp_path / "failed", ("ok", "FAILED")), tmp_path / "out")
    monkeypatch.setattr(reference, "MAX_FIGURE_BYTES", 10)
    with pytest.raises(ValueError, match="figures take"):
        export_reference(_finished_course(tmp_path / "big"), tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="course's record"):
        export_reference(tmp_path / "nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_nobody_names_or_that_does_not_parse_is_a_problem(tmp_path):
    folder = tmp_path / "gpu"
    folder.mkdir()
    (folder / "README.md").write_text("| `named.json` | ... |\n")
    (folder / "named.json").write_text("{not json")
    (folder / "orphan.txt").write_text("text")
    (folder / "figure.png").write_bytes(b"not a png")
    problems = reference_problems(folder, mentions="see gpu/figure.png")
    assert len(problems) == 3    # in file-name order
    assert problems[0].startswith("gpu/figure.png: cannot be read")
    assert problems[1].startswith("gpu/named.json: cannot be read (JSONDecodeError")
    assert problems[2] == "gpu/orphan.txt: named by neither the folder's README nor the course"


def test_every_kept_result_is_named_and_parses():
    # what points readers to the kept results: both READMEs (results/README.md describes them) and the notebooks
    mentions = (ROOT / "README.md").read_text() + (ROOT / "results" / "README.md").read_text() + "".join(
        path.read_text() for path in (ROOT / "notebooks").glob("*.ipynb"))
    folders = sorted(path for path in (ROOT / "results").iterdir() if path.is_dir())
    assert folders, "results/ holds the kept results"
    for folder in folders:
        assert reference_problems(folder, mentions) == [], folder.name
