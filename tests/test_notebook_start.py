"""The call every course notebook starts with: profile, seed, figure theme and data."""
import matplotlib.pyplot as plt
import pytest
import seaborn as sns
import torch

import dyninf.course.profiles as profiles_module
from dyninf.data.cifar import synthetic_dataset
from dyninf.course.notebook import start_notebook


def test_the_notebook_start_seeds_every_generator_with_the_profiles_seed(monkeypatch):
    monkeypatch.setattr(profiles_module, "load_cifar", lambda name: synthetic_dataset(train_per_class=40, test_per_class=10))
    profile, data = start_notebook("tiny", seed=3)
    drawn = torch.rand(4)
    assert profile.name == "tiny" and profile.seed == 3 and profile.runs == "tiny-seed3"
    assert torch.equal(data.test_labels, profile.load_data().test_labels)   # the profile's own subset
    torch.manual_seed(0)
    start_notebook("tiny", seed=3, load_data=False)
    assert torch.equal(torch.rand(4), drawn)                                # seeded again, the same draws
    start_notebook("tiny", seed=4, load_data=False)
    assert not torch.equal(torch.rand(4), drawn)


def test_the_notebook_start_sets_the_course_theme_and_can_leave_the_data_to_the_notebook():
    sns.reset_orig()
    assert not plt.rcParams["axes.grid"]
    profile, data = start_notebook("tiny", load_data=False)
    assert data is None and profile.seed == 0
    assert plt.rcParams["axes.grid"] and plt.rcParams["axes.facecolor"] == "white"   # seaborn's whitegrid
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        start_notebook("fast")
