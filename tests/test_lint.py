"""The library's, the tests' and the notebooks' code pass the linter (pyflakes' checks through ruff,
which reads the notebooks' code cells): an unused import, an undefined name or a placeholder-less
f-string in a notebook fails here, not in front of a class."""
import subprocess
import sys

import nbformat

from dyninf.utils.paths import course_root


def test_library_tests_benchmark_and_notebooks_pass_the_linter():
    checked = ["lib", "tests", "benchmarks", "notebooks"]
    finished = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                               *checked], cwd=course_root(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr


def test_the_linter_reads_the_notebooks(tmp_path):
    # a notebook with an unused import is reported: the check above does look inside notebooks
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nprint(1)")])
    nbformat.write(nb, tmp_path / "lesson.ipynb")
    finished = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                               "--config", str(course_root() / "pyproject.toml"), "lesson.ipynb"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1 and "F401" in finished.stdout, finished.stdout + finished.stderr
