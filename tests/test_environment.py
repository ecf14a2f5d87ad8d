"""The environment the tests run in is the pinned one (a moved dependency fails here first)."""
from importlib.metadata import version
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PINS = [line.split("#")[0].strip().split("==") for line in REQUIREMENTS.read_text().splitlines()
        if "==" in line.split("#")[0]]


@pytest.mark.pins
@pytest.mark.parametrize("name,pinned", PINS, ids=[name for name, _ in PINS])
def test_installed_version_is_the_pinned_one(name, pinned):
    assert version(name).split("+")[0] == pinned


def test_environment_yml_installs_the_same_pins():
    environment = (REQUIREMENTS.parent / "environment.yml").read_text()
    assert "-r requirements.txt" in environment and "python=3.11" in environment
