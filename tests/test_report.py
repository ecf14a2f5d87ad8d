import json

import pytest

from dyninf.tools.runner import run_course
from dyninf.tools.report import Metric, metrics_markdown, render_report, save_metrics


def test_save_metrics_writes_the_notebooks_numbers(tmp_path):
    path = save_metrics("00_x", "quick", "cpu", [Metric("accuracy", 64.0, 91.25, "%", "He et al.")],
                        tmp_path / "m" / "00_x.json")
    payload = json.loads(path.read_text())
    assert payload["notebook"] == "00_x" and payload["profile"] == "quick"
    assert payload["device"].startswith("CPU")
    assert payload["metrics"] == [{"name": "accuracy", "value": 64.0, "published": 91.25,
                                   "unit": "%", "note": "He et al."}]


def test_metrics_table_formats_and_escapes():
    table = metrics_markdown([Metric("MACs", 40_551_040, 41e6), Metric("a | b", 0.000123, None, "", "x|y")])
    lines = table.splitlines()
    assert lines[2] == "| MACs | 40.55M | 41M |  |  |"
    assert lines[3] == "| a \\| b | 0.000123 | – |  | x\\|y |"


def test_report_lists_each_notebook_with_its_numbers_and_links():
    metrics = {"notebook": "00_a", "profile": "quick", "device": "CPU (x86_64, 2 threads)",
               "torch": "2.14.1", "metrics": [{"name": "accuracy", "value": 64.0, "published": 91.25,
                                               "unit": "%", "note": "paper"}]}
    report = render_report([
        {"notebook": "00_a", "status": "ok", "seconds": 120.0, "executed": "00_a.ipynb",
         "html": "00_a.html", "metrics": metrics},
        {"notebook": "01_b", "status": "FAILED", "seconds": 6.0, "executed": "01_b.ipynb",
         "html": "01_b.html", "metrics": None},
    ])
    assert "Profile: quick. Device: CPU (x86_64, 2 threads). Total time: 2.1 min." in report
    assert "| 00_a | ok | 120 s | [ipynb](00_a.ipynb) | [html](00_a.html) |" in report
    assert "| accuracy | 64.00 | 91.25 | % | paper |" in report
    assert "## 01_b" in report and "did not finish" in report


def test_course_runner_rejects_an_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match="known profiles: quick, standard, paper"):
        run_course("fast", tmp_path)


def test_speedup_metrics_take_the_rows_of_one_mode():
    import pandas as pd

    from dyninf.tools.report import speedup_metrics

    latency = pd.DataFrame([
        {"batch": 1, "mode": "X masked", "speed-up": 0.5, "ideal speed-up": 2.0, "realized / ideal": 0.25},
        {"batch": 1, "mode": "X skipped", "speed-up": 1.23456, "ideal speed-up": 2.0, "realized / ideal": 0.61728},
        {"batch": 256, "mode": "X skipped", "speed-up": 1.5, "ideal speed-up": 2.0, "realized / ideal": 0.75},
    ])
    metrics = speedup_metrics(latency, "X skipped")
    assert [(m.name, m.value, m.unit) for m in metrics] == [("X skipped speed-up, batch 1", 1.235, "x"),
                                                            ("X skipped speed-up, batch 256", 1.5, "x")]
    assert metrics[0].note == "ideal 2.00x; realized/ideal 0.62"


def test_a_runs_metrics_are_read_only_for_a_notebook_that_passed_and_wrote_them(tmp_path):
    from dyninf.tools.report import run_metrics

    save_metrics("00_resnet_baseline", "tiny", "cpu", [Metric("test accuracy", 0.5, None, "")],
                 path=tmp_path / "metrics" / "00_resnet_baseline.json")
    read = run_metrics(tmp_path, "00_resnet_baseline", "ok")
    assert read["profile"] == "tiny" and read["metrics"][0]["value"] == 0.5
    assert run_metrics(tmp_path, "00_resnet_baseline", "FAILED") is None   # a failed run's numbers are not this run's
    assert run_metrics(tmp_path, "01_stochastic_depth", "ok") is None
