"""Each profile's recipes are typed and frozen, and a run's folder name says what was trained."""
from dataclasses import FrozenInstanceError, replace

import pytest

from dyninf.course.profiles import PROFILES, get_profile
from dyninf.course.recipes import RECIPES, RUN_SETTINGS, RunName, parse_run_name, recipes_of, run_name, stochastic_depth_recipe


def test_every_profile_has_its_recipes_and_tiny_trains_quicks():
    for name, profile in PROFILES.items():
        assert recipes_of(profile) is RECIPES["quick" if name == "tiny" else name]
    with pytest.raises(ValueError, match="no recipes for 'fastest'; there are recipes for quick, standard, paper"):
        recipes_of(replace(PROFILES["quick"], recipes="fastest"))


def test_a_recipe_cannot_be_changed_in_place():
    recipes = RECIPES["quick"]
    with pytest.raises(FrozenInstanceError):
        recipes.aig.targets = (0.9,)
    with pytest.raises(FrozenInstanceError):
        recipes.blockdrop = recipes.blockdrop


def test_stochastic_depth_trains_on_the_profile_schedule_except_in_paper():
    quick, paper = get_profile("quick", "cpu"), get_profile("paper", "cpu")
    assert stochastic_depth_recipe(quick) == quick.train
    assert stochastic_depth_recipe(paper) == replace(paper.train, epochs=500)   # the official code's


@pytest.mark.parametrize("method,depth,value,bottleneck,folder", [
    ("plain", 20, None, False, "resnet20"),
    ("plain", 164, None, True, "resnet164_bottleneck"),
    ("SD", 110, 0.5, False, "resnet110_sd_pL0.5"),
    ("AIG", 20, 0.7, False, "resnet20_aig_t0.7"),
    ("GaterNet", 164, 1.0, True, "resnet164_bottleneck_gaternet_l1"),
    ("GaterNet", 20, 0.0, False, "resnet20_gaternet_l0"),
    ("BlockDrop", 32, 10.0, False, "resnet32_blockdrop_g10"),
])
def test_a_run_name_is_built_and_parsed_back(method, depth, value, bottleneck, folder):
    assert run_name(method, depth, value, bottleneck) == folder
    assert parse_run_name(folder) == RunName(method, depth, bottleneck, value)


def test_folders_that_are_not_points_of_the_course_parse_to_nothing():
    for folder in ("resnet20_wider24", "resnet20_blockdrop_curriculum", "resnet20_aig_t", "resnet20_sd_pL0.5x",
                   "notes", "Resnet20"):
        assert parse_run_name(folder) is None, folder
    assert set(RUN_SETTINGS) == {"SD", "AIG", "GaterNet", "BlockDrop"}


def test_a_run_name_needs_a_known_method_and_its_setting():
    with pytest.raises(ValueError, match="unknown method 'Dropout'"):
        run_name("Dropout", 20, 0.5)
    with pytest.raises(ValueError, match="a run of AIG is named with its setting"):
        run_name("AIG", 20)
    with pytest.raises(ValueError, match="a run of plain is named without its setting"):
        run_name("plain", 20, 0.5)


def test_the_backbone_a_gaternet_recipe_gates_is_the_baseline_when_it_finetunes():
    assert RECIPES["quick"].gaternet.gated_backbone(20) == (20, False)          # finetunes the baseline
    assert RECIPES["paper"].gaternet.gated_backbone(110) == (164, True)         # the paper's ResNet-164
    from_scratch = replace(RECIPES["quick"].gaternet, finetune=False)
    assert from_scratch.gated_backbone(20) == (20, False)                       # the profile's depth
    named_but_finetuned = replace(RECIPES["quick"].gaternet, backbone_depth=56)
    assert named_but_finetuned.gated_backbone(20) == (20, False)                # the baseline wins
