"""The seed spread: collected from course runs by hand, written, and read back by the notebooks."""
import json
import re

import pytest

from dyninf.utils.paths import course_root
from dyninf.course.profiles import get_profile
from dyninf.utils.devices import device_name
from dyninf.tools.spread import collect, measured_spread, spread_markdown, spread_note, spread_path


def _metrics(folder, notebook, values, device="CPU (x86_64, 2 threads)"):
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": notebook, "profile": "quick", "device": device, "torch": "2.14.1",
               "metrics": [{"name": name, "value": value, "unit": "s" if "seconds" in name else ""}
                           for name, value in values.items()]}
    (folder / f"{notebook}.json").write_text(json.dumps(payload))


def test_collect_summarises_every_numeric_metric_over_the_seeds(tmp_path):
    for seed, accuracy in [(0, 64.0), (1, 66.0), (2, 68.0)]:
        _metrics(tmp_path / f"s{seed}", "00_x", {"accuracy": accuracy, "label": "text", "flag": True,
                                                  "epoch seconds": 20.0 + seed, "training time ratio": 0.8,
                                                  **({"only seed 0": 1.5} if seed == 0 else {})})
    spread = collect({seed: tmp_path / f"s{seed}" for seed in (0, 1, 2)})
    accuracy = spread["metrics"]["00_x: accuracy"]
    assert accuracy["values"] == {"0": 64.0, "1": 66.0, "2": 68.0}
    assert (accuracy["mean"], accuracy["sd"], accuracy["min"], accuracy["max"]) == (66.0, 2.0, 64.0, 68.0)
    # text, booleans and timings (the machine's load moves those) left out
    assert set(spread["metrics"]) == {"00_x: accuracy", "00_x: only seed 0"}
    assert spread["metrics"]["00_x: only seed 0"]["sd"] == 0.0 and spread["seeds"] == [0, 1, 2]
    table = spread_markdown("quick", spread)
    assert "| 00_x: accuracy | 64 | 66 | 68 | 66 | 2 |" in table and "| 00_x: only seed 0 | 1.5 | nan | nan |" in table
    with pytest.raises(ValueError, match="no metrics JSON in .* seed 5"):
        collect({5: tmp_path / "missing"})


def test_notebooks_show_this_run_beside_the_shipped_spread_and_where_it_was_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNINF_HOME", str(tmp_path))
    profile = get_profile("quick", device="cpu")
    here = f"this run (seed 0, {device_name('cpu')})"
    assert measured_spread("quick", "00_x", "accuracy") is None
    assert spread_note(profile, "00_x", "accuracy", 65.0) == \
        f"accuracy: {here}: 65.00; no seed spread measured for the 'quick' profile"
    for seed, accuracy in [(0, 64.0), (1, 66.5)]:
        _metrics(tmp_path / f"s{seed}", "00_x", {"accuracy": accuracy})
    spread_path("quick").parent.mkdir(parents=True)
    spread = collect({0: tmp_path / "s0", 1: tmp_path / "s1"})
    spread_path("quick").write_text(json.dumps(spread))
    where = f"seeds 0, 1 on {spread['device']} (torch {spread['torch']}, {spread['date']})"
    assert spread_note(profile, "00_x", "accuracy", 64.0, "%", digits=1) == \
        f"accuracy: {here}: 64.0%; {where}: 64.0, 66.5% (mean 65.2, sd 1.8)"
    # the same seed elsewhere gave another number: said, with why
    assert spread_note(profile, "00_x", "accuracy", 64.5, "%", digits=1).endswith(
        "; seed 0 gave 64.0% there: a different machine, thread count or library version rounds differently, "
        "and training amplifies it")
    assert "gave" not in spread_note(profile.with_seed(5), "00_x", "accuracy", 64.5, "%", digits=1)


def test_every_spread_a_notebook_shows_is_in_the_shipped_file():
    shipped = json.loads(spread_path("quick").read_text())
    assert shipped["seeds"] == [0, 1, 2]
    calls = re.compile(r'spread_note\(P, "([^"]+)", f?"([^"]+)"')
    depth = get_profile("quick").depth
    asked = [(notebook, metric.replace("{P.depth}", str(depth)))
             for path in sorted((course_root() / "notebooks").glob("*.ipynb"))
             for notebook, metric in calls.findall(path.read_text().replace('\\"', '"'))]
    assert len(asked) >= 10
    for notebook, metric in asked:
        found = shipped["metrics"].get(f"{notebook}: {metric}")
        assert found is not None and len(found["values"]) == 3, (notebook, metric)


def test_a_metric_named_with_a_bar_stays_in_its_cell_of_the_spread_table():
    spread = {"seeds": [0, 1], "device": "CPU", "torch": "2", "date": "2026-12-04", "metrics": {
        "02: largest |rate - t|": {"values": {"0": 0.1, "1": 0.3}, "mean": 0.2, "sd": 0.14}}}
    row = spread_markdown("quick", spread).splitlines()[-1]
    assert row == "| 02: largest \\|rate - t\\| | 0.1 | 0.3 | 0.2 | 0.14 |"
