import pytest
import torch

from dyninf.course.profiles import PROFILES, get_profile


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'fast'; known profiles: quick, standard, paper, tiny"):
        get_profile("fast")


def test_profiles_and_device_override():
    quick = get_profile("quick", device="cpu")
    assert quick.device == torch.device("cpu") and quick.depth == 20 and quick.runs == "quick"
    assert quick.train_per_class is not None and quick.train.schedule == "onecycle"
    paper = get_profile("paper")
    assert paper.depth == 110 and paper.train.schedule == "step" and paper.train_per_class is None
    assert set(PROFILES) == {"quick", "standard", "paper", "tiny"}
    assert all(p.needs for p in PROFILES.values())
    assert all(p.recipes == p.name and p.checks_claims for name, p in PROFILES.items() if name != "tiny")


def test_tiny_runs_quicks_recipes_on_a_few_images_in_runs_of_its_own_without_checking_claims():
    tiny, quick = get_profile("tiny"), get_profile("quick")
    assert tiny.recipes == "quick" and tiny.depth == quick.depth and not tiny.checks_claims
    assert tiny.train_per_class * 10 <= 100 and tiny.train_config().epochs == 1
    assert tiny.runs == "tiny" and quick.dry_run().runs == "quick-dry-run"   # a dry run: quick's own recipes, cut short
    assert tiny.with_seed(3).runs == "tiny-seed3"


def test_another_data_set_keeps_its_runs_apart_and_loads_that_data_set(monkeypatch):
    import dyninf.course.profiles as profiles_module
    from dyninf.data.cifar import synthetic_dataset

    paper = get_profile("paper")
    on_cifar100 = paper.for_dataset("cifar100")
    assert (paper.runs, on_cifar100.runs) == ("paper", "paper-cifar100")
    assert on_cifar100.for_dataset("cifar10").runs == "paper"
    asked = []
    monkeypatch.setattr(profiles_module, "load_cifar",
                        lambda name: asked.append(name) or synthetic_dataset(4, 2, num_classes=100))
    quick100 = get_profile("quick").for_dataset("cifar100")
    with pytest.raises(ValueError, match="fewer than the 1200 per class"):   # quick: 1000 + 200 held out
        quick100.load_data()
    assert asked == ["cifar100"]
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        paper.for_dataset("mnist")


def test_another_seed_keeps_the_data_and_recipes_and_its_runs_apart():
    quick, seeded = get_profile("quick"), get_profile("quick", seed=2)
    assert (quick.seed, seeded.seed) == (0, 2) and seeded.train.seed == 2
    assert (quick.runs, seeded.runs) == ("quick", "quick-seed2")
    assert seeded.for_dataset("cifar100").runs == "quick-cifar100-seed2"
    assert seeded.data_seed == quick.data_seed == 0     # the same subset: only training draws differ
    assert seeded.with_seed(0) == quick and seeded.train.epochs == quick.train.epochs
    with pytest.raises(ValueError, match="a seed must be an integer >= 0"):
        quick.with_seed(-1)
