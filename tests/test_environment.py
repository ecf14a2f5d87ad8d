"""The environment the tests run in is the pinned one (a moved dependency fails here first)."""
from pathlib import Path

import pytest

from dyninf.gpu_check import pinned_versions

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PINS = pinned_versions(REQUIREMENTS)   # (name, pinned, found without its local label)


@pytest.mark.pins
@pytest.mark.parametrize("name,pinned,found", PINS, ids=[name for name, _, _ in PINS])
def test_installed_version_is_the_pinned_one(name, pinned, found):
    assert found == pinned


def test_environment_yml_installs_the_same_pins():
    environment = (REQUIREMENTS.parent / "environment.yml").read_text()
    assert "-r requirements.txt" in environment and "python=3.11" in environment
