import pytest
import torch

from dyninf.profiles import PROFILES, get_profile


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'fast'; known profiles: quick, standard, paper"):
        get_profile("fast")


def test_profiles_and_device_override():
    quick = get_profile("quick", device="cpu")
    assert quick.device == torch.device("cpu") and quick.depth == 20 and quick.runs == "quick"
    assert quick.train_per_class is not None and quick.train.schedule == "onecycle"
    paper = get_profile("paper")
    assert paper.depth == 110 and paper.train.schedule == "step" and paper.train_per_class is None
    assert set(PROFILES) == {"quick", "standard", "paper"}
    assert all(p.needs for p in PROFILES.values())
