"""`make gpu-check`: its parts by hand, and the whole command as a dry run on this CPU."""
import subprocess
import sys
import tarfile

import pytest

import dyninf.tools.gpu_check as gpu_check
from dyninf.utils.paths import course_root


def test_pinned_versions_report_found_differing_and_missing_packages(tmp_path):
    from importlib.metadata import version

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# a comment\npytest=={version('pytest')}   # why\ntorch==0.0.1\n"
                            "no-such-package-here==1.0\nnumpy\n")
    torch_found = version("torch").split("+")[0]   # a CUDA build's local label (+cu130) is not part of the pin
    assert gpu_check.pinned_versions(requirements) == [
        ("pytest", version("pytest"), version("pytest")), ("torch", "0.0.1", torch_found),
        ("no-such-package-here", "1.0", "missing")]


def test_counts_from_a_junit_report(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text('<testsuites><testsuite tests="7" failures="1" errors="0" skipped="2"/>'
                      '<testsuite tests="3" failures="0" errors="1" skipped="0"/></testsuites>')
    assert gpu_check.test_counts(report) == {"tests": 10, "failures": 1, "errors": 1, "skipped": 2}


def test_the_summary_says_what_failed_and_which_packages_differ():
    env = {"device": "NVIDIA H100", "python": "3.12.3", "torch": "2.11.0", "cuda": "13.0",
           "packages": [("torch", "2.14.1", "2.11.0"), ("numpy", "2.4.6", "2.4.6")]}
    steps = [gpu_check.Step("unit tests", "ok", 61, ["250 tests"]), gpu_check.Step("quick course", "FAILED", 200, [])]
    notebooks = [{"notebook": "00_resnet_baseline", "status": "ok", "seconds": 40.2},
                 {"notebook": "01_stochastic_depth", "status": "FAILED", "seconds": 12}]
    text = gpu_check.render_summary(env, steps, notebooks, dry_run=False, seconds=300)
    assert text.startswith("# gpu-check: FAILED\n") and "NVIDIA H100" in text and "CUDA 13.0" in text
    assert "| quick course | FAILED | 200 s |" in text and "| 01_stochastic_depth | FAILED | 12 s |" in text
    assert "1 of 2 at the pinned versions; differing (found, pinned): torch 2.11.0 (2.14.1)." in text


def test_a_missing_notebook_package_fails_the_course_step_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "_importable", lambda name: name != "papermill")
    step, notebooks = gpu_check.course(tmp_path, dry_run=True)
    assert step.status == "FAILED" and notebooks == [] and "papermill missing" in step.details[0]


def test_a_folder_that_is_not_a_previous_check_is_not_cleared(tmp_path):
    (tmp_path / "thesis.tex").write_text("keep me")
    with pytest.raises(SystemExit, match="not a gpu-check's"):
        gpu_check.fresh_folder(tmp_path)
    assert (tmp_path / "thesis.tex").exists()


@pytest.mark.notebook
def test_the_dry_run_passes_on_a_cpu_and_archives_what_it_produced(tmp_path):
    out = tmp_path / "gpu-check"
    (out / "stale").mkdir(parents=True)
    (out / "environment.json").write_text("{}")   # a previous check's folder: cleared first
    # through the Makefile, as a GPU runner calls it (with this test run's Python)
    finished = subprocess.run(["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}",
                               f"PY={sys.executable}", "GPU_CHECK_ARGS=--dry-run", f"GPU_CHECK_OUT={out}"],
                              cwd=course_root(), capture_output=True, text=True, timeout=1500)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    summary = (out / "SUMMARY.md").read_text()
    assert summary.startswith("# gpu-check: passed (dry run)")
    assert "| unit tests | ok |" in summary and "skipped (`-m \"cuda\"`)" in summary
    assert "| standard dry run | ok | " in summary and "11 trainings of the standard recipes" in summary
    assert "| tiny course | ok | " in summary and "1 of 1 notebooks ran (dry run: notebook 00 only) |" in summary
    assert "| 00_resnet_baseline | ok |" in summary and "realized/ideal speed-up at keep 0.5: batch1=" in summary
    assert not (out / "stale").exists()
    with tarfile.open(tmp_path / "gpu-check.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"gpu-check/SUMMARY.md", "gpu-check/course/00_resnet_baseline.ipynb", "gpu-check/course/REPORT.md",
            "gpu-check/bench/skipping-quick.json", "gpu-check/unit-tests.log"} <= names


def test_a_local_version_label_is_not_a_different_version(tmp_path, monkeypatch):
    # A CUDA build of PyTorch reports 2.14.1+cu130: that is the pinned 2.14.1, not a mismatch.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.14.1\n")
    monkeypatch.setattr(gpu_check, "version", lambda name: "2.14.1+cu130")
    assert gpu_check.pinned_versions(requirements) == [("torch", "2.14.1", "2.14.1")]
