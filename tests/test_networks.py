"""The cached training entry points, on synthetic data in a temporary course folder."""
from dataclasses import replace

import pytest
import torch

import dyninf.training.loop as train_module
from dyninf.data.cifar import synthetic_dataset
from dyninf.network.dynamic import predict_with_decisions, spent_macs
from dyninf.course.trained import (CALIBRATION_IMAGES, calibration_images, run_dir, train_aig, train_baseline,
                             train_gaternet, train_stochastic_depth)
from dyninf.course.profiles import get_profile


@pytest.fixture
def course(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNINF_HOME", str(tmp_path))
    quick = get_profile("quick", device="cpu")
    short = replace(quick, train=replace(quick.train, epochs=2))   # keeps the name, so AIG's schedule
    return short, synthetic_dataset(train_per_class=26, test_per_class=4)


def test_baseline_is_trained_once_then_loaded(course, monkeypatch):
    profile, data = course
    net, history = train_baseline(profile, data, progress=False)
    assert len(history) == profile.train.epochs
    assert (run_dir(profile, "resnet20") / "checkpoint.pt").exists()
    monkeypatch.setattr(train_module, "_train_one_epoch", lambda *a: pytest.fail("retrained"))
    again, same = train_baseline(profile, data, progress=False)
    assert same.equals(history)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_stochastic_depth_and_aig_runs_are_cached_under_their_names(course):
    profile, data = course
    sd, sd_history = train_stochastic_depth(profile, data, p_last=0.5, progress=False)
    assert (run_dir(profile, "resnet20_sd_pL0.5") / "history.json").exists()
    assert not sd.training and sd.decider(0, torch.zeros(3, 16, 4, 4)) is None   # eval: plain net
    aig, aig_history = train_aig(profile, data, target=0.5, progress=False)
    # gates start open for about 87% of the images, far from t = 0.5: the weighted loss is positive
    assert "target_loss" in aig_history.columns and (aig_history.target_loss > 0).all()
    assert (run_dir(profile, "resnet20") / "checkpoint.pt").exists()        # finetuned from it
    assert (run_dir(profile, "resnet20_aig_t0.5") / "checkpoint.pt").exists()
    assert all(gate.threshold.item() != 0 for gate in aig.decider.gates.values())   # calibrated
    uncalibrated, _ = train_aig(profile, data, target=0.5, progress=False, calibrate=False)
    assert all(gate.threshold.item() == 0 for gate in uncalibrated.decider.gates.values())
    with pytest.raises(ValueError, match="target rate"):
        train_aig(profile, data, target=1.5, progress=False)


def test_calibration_images_are_the_held_out_ones_else_a_fixed_sample_of_training_images():
    whole = synthetic_dataset(300, 2)
    held = whole.subset(100, None, held_out_per_class=20)
    assert calibration_images(held) is held.held_out_images
    sample = calibration_images(whole)
    assert len(sample) == CALIBRATION_IMAGES and torch.equal(sample, calibration_images(whole))


def test_gaternet_runs_are_cached_under_their_l1_weight(course):
    profile, data = course
    net, history = train_gaternet(profile, data, sparsity_weight=0.5, progress=False)
    assert "sparsity_loss" in history.columns and (history.sparsity_loss > 0).all()
    assert (run_dir(profile, "resnet20_gaternet_l0.5") / "checkpoint.pt").exists()
    assert net.decider.num_gates == net.backbone.num_filter_gates and not net.training
    _, control = train_gaternet(profile, data, sparsity_weight=0.0, progress=False)
    assert (control.sparsity_loss == 0).all()
    with pytest.raises(ValueError, match="sparsity weight must be >= 0"):
        train_gaternet(profile, data, sparsity_weight=-1.0, progress=False)


def test_wider_width_matches_a_parameter_budget_and_trains_under_its_name(course):
    from dyninf.network.backbones import cifar_resnet
    from dyninf.course.trained import train_wider, wider_width

    def size(width):
        return sum(p.numel() for p in cifar_resnet(20, width=width).parameters())

    assert wider_width(20, size(16)) == 16
    assert wider_width(20, size(16) + 1) == 17 and size(17) > size(16)
    profile, data = course
    net, _ = train_wider(profile, size(18) - 5, data, progress=False)
    assert (run_dir(profile, "resnet20_wider18") / "history.json").exists() and net.head[-1].in_features == 4 * 18


def test_gaternet_from_scratch_on_a_bottleneck_backbone_as_in_the_paper_profile(course, monkeypatch):
    from dyninf.course.recipes import RECIPES

    profile, data = course
    paper_like = replace(RECIPES["paper"].gaternet, backbone_depth=11, gater_depth=8, bottleneck=16)
    # the course fixture's profile is "quick"
    monkeypatch.setitem(RECIPES, "quick", replace(RECIPES["quick"], gaternet=paper_like))
    net, _ = train_gaternet(profile, data, sparsity_weight=1.0, progress=False)
    assert net.backbone.depth == 11 and net.decider.num_gates == net.backbone.num_filter_gates == 2 * (16 + 32 + 64)
    assert (run_dir(profile, "resnet11_bottleneck_gaternet_l1") / "history.json").exists()
    assert not (run_dir(profile, "resnet20") / "history.json").exists()   # from scratch: no baseline
    # the paper's grid: another backbone, named by it; the comparison points reload each with its own
    other, _ = train_gaternet(profile, data, sparsity_weight=1.0, progress=False, scratch_backbone=(8, False))
    assert other.backbone.depth == 8 and (run_dir(profile, "resnet8_gaternet_l1") / "history.json").exists()
    from dyninf.course.points import trained_points
    monkeypatch.setattr(train_module, "_train_one_epoch", lambda *a: pytest.fail("retrained"))
    points = trained_points(profile, data, methods=("GaterNet",))
    assert points.network.tolist() == ["GaterNet ResNet-11, λ = 1", "GaterNet ResNet-8, λ = 1"]


def test_trained_plain_resnets_lists_finished_plain_runs_only(course):
    from dyninf.course.trained import trained_plain_resnets

    profile, data = course
    assert trained_plain_resnets(profile) == {}
    _, history = train_baseline(profile, data, progress=False)
    train_stochastic_depth(profile, data, p_last=0.5, progress=False)       # not a plain ResNet
    (run_dir(profile, "resnet56")).mkdir(parents=True)                       # started, no history
    found = trained_plain_resnets(profile)
    assert list(found) == [20] and found[20].equals(history)


def test_blockdrop_trains_a_curriculum_on_the_frozen_baseline_then_finetunes_jointly(course, monkeypatch):
    from dyninf.course.trained import train_blockdrop
    from dyninf.course.recipes import RECIPES

    profile, data = course
    baseline, _ = train_baseline(profile, data, progress=False)
    quick = RECIPES["quick"].blockdrop
    short = replace(quick, blocks_per_epoch=3, curriculum=replace(quick.curriculum, epochs=4),
                    finetune=replace(quick.finetune, epochs=1))
    monkeypatch.setitem(RECIPES, "quick", replace(RECIPES["quick"], blockdrop=short))
    net, history = train_blockdrop(profile, data, penalty=2.0, progress=False)
    assert history.phase.tolist() == ["curriculum"] * 4 + ["finetune"]
    assert history.decided_blocks.tolist() == [3, 6, 9, 9, 9]               # 3 blocks per epoch
    assert {"policy_loss", "reward", "blocks"} <= set(history.columns)
    assert (history.blocks <= 9).all() and (history.reward <= 1).all() and (history.reward >= -2).all()
    assert (run_dir(profile, "resnet20_blockdrop_curriculum") / "history.json").exists()
    assert (run_dir(profile, "resnet20_blockdrop_g2") / "history.json").exists()
    assert not net.training and not net.backbone_frozen and net.decider.decided_blocks == 9
    # the curriculum left the backbone as trained; the joint phase changed it
    curriculum_state = torch.load(run_dir(profile, "resnet20_blockdrop_curriculum") / "checkpoint.pt",
                                  weights_only=True)["model"]
    for name, value in baseline.state_dict().items():
        assert torch.equal(curriculum_state[f"backbone.{name}"], value), name
    assert not torch.equal(net.backbone.blocks[0].conv1.weight, baseline.blocks[0].conv1.weight)
    with pytest.raises(ValueError, match="penalty gamma"):
        train_blockdrop(profile, data, penalty=-1.0, progress=False)

    # the comparison points find both finished runs (and load, not retrain, BlockDrop)
    from dyninf.course.points import trained_points
    monkeypatch.setattr(train_module, "_train_one_epoch", lambda *a: pytest.fail("retrained"))
    points = trained_points(profile, data, methods=("plain", "AIG", "BlockDrop"))
    assert points.network.tolist() == ["plain ResNet-20", "BlockDrop ResNet-20, γ = 2"]
    logits, decisions = predict_with_decisions(net, data.test_images)
    assert points["mean MACs (M)"].iloc[1] == pytest.approx(spent_macs(net, decisions).mean().item() / 1e6)
    assert points["accuracy (%)"].iloc[1] == pytest.approx(
        100 * (logits.argmax(1) == data.test_labels).float().mean().item())


def test_trained_points_of_a_profile_without_runs_is_an_empty_table_and_methods_are_checked(course):
    from dyninf.course.points import trained_points
    from dyninf.measure.frontier import COLUMNS

    profile, data = course
    empty = trained_points(profile, data)
    assert empty.empty and list(empty.columns) == COLUMNS
    with pytest.raises(ValueError, match="unknown methods"):
        trained_points(profile, data, methods=("plain", "HydraNet"))


def test_a_bottleneck_baseline_has_its_own_run(course):
    profile, data = course
    net, _ = train_baseline(profile, data, depth=11, bottleneck=True, progress=False)
    assert net.depth == 11 and (run_dir(profile, "resnet11_bottleneck") / "history.json").exists()
    from dyninf.course.trained import trained_plain_resnets
    assert trained_plain_resnets(profile) == {}      # not mistaken for a basic-block ResNet


def test_another_seed_trains_every_recipe_with_that_seed_in_its_own_runs(course):
    from dyninf.training.loop import CHECKPOINT

    profile, data = course
    seeded = profile.with_seed(3)
    net, _ = train_aig(seeded, data, 0.5, progress=False)    # its recipe has its own TrainConfig
    saved = torch.load(run_dir(seeded, "resnet20_aig_t0.5") / CHECKPOINT, weights_only=True)["config"]
    assert saved["seed"] == 3 and run_dir(seeded, "resnet20_aig_t0.5").parent.name == "quick-seed3"
    assert (run_dir(seeded, "resnet20") / CHECKPOINT).exists() and not run_dir(profile, "resnet20").exists()
    baseline_0 = train_baseline(profile, data, progress=False)[0]
    baseline_3 = train_baseline(seeded, data, progress=False)[0]
    assert not torch.equal(baseline_0.stem[0].weight, baseline_3.stem[0].weight)
