"""The environment the tests run in is the pinned one (a moved dependency fails here first)."""
import subprocess
import tomllib
from pathlib import Path

import pytest

from dyninf.tools.gpu_check import pinned_versions

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PINS = pinned_versions(REQUIREMENTS)   # (name, pinned, found without its local label)


@pytest.mark.pins
@pytest.mark.parametrize("name,pinned,found", PINS, ids=[name for name, _, _ in PINS])
def test_installed_version_is_the_pinned_one(name, pinned, found):
    assert found == pinned


def test_environment_yml_installs_the_same_pins():
    environment = (REQUIREMENTS.parent / "environment.yml").read_text()
    assert "-r requirements.txt" in environment and "python=3.11" in environment


def _install_commands(tmp_path, *variables: str) -> subprocess.CompletedProcess:
    """What `make install` would run for a fresh venv in ``tmp_path`` (make -n: printed, not run)."""
    return subprocess.run(["make", "--no-print-directory", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}",
                           *variables], cwd=REQUIREMENTS.parent, capture_output=True, text=True, timeout=60)


def test_make_install_installs_the_pins_with_uv_and_with_pip_on_request(tmp_path):
    uv = _install_commands(tmp_path)
    assert uv.returncode == 0, uv.stderr
    assert "uv pip install" in uv.stdout and "--compile-bytecode -r requirements.txt" in uv.stdout
    pip = _install_commands(tmp_path, "INSTALLER=pip")
    assert pip.returncode == 0, pip.stderr
    assert "-m pip install -r requirements.txt" in pip.stdout and "uv" not in pip.stdout
    other = _install_commands(tmp_path, "INSTALLER=conda")
    assert other.returncode != 0 and "INSTALLER must be uv or pip, got 'conda'" in other.stderr


def test_make_mutation_runs_the_pinned_mutmut_on_a_copy_where_lib_is_src(tmp_path):
    finished = subprocess.run(["make", "--no-print-directory", "-n", "-B", "mutation", f"VENV={tmp_path / 'venv'}"],
                              cwd=REQUIREMENTS.parent, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    commands = finished.stdout
    assert "uv pip install" in commands and "-q mutmut==" in commands
    assert "git archive HEAD | tar -x -C build/mutation" in commands and "mv build/mutation/lib build/mutation/src" in commands
    assert "OMP_NUM_THREADS=1" in commands and "mutmut run --max-children 2" in commands
    config = tomllib.loads((REQUIREMENTS.parent / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["source_paths"] == ["src/"]
    assert config["only_mutate"] == ["src/dyninf/deciders/*", "src/dyninf/network/cost.py"]
    assert all((REQUIREMENTS.parent / path).is_file() for path in config["pytest_add_cli_args_test_selection"])
