"""What the course trains per profile: the dry run of the standard recipes, the H100 estimate and
the places that show it (notebook headers, README)."""
import json
import re
from functools import partial
from pathlib import Path

import pytest

from dyninf.data.cifar import synthetic_dataset
from dyninf.training.loop import TrainConfig, load_history
from dyninf.course.trained import run_dir
from dyninf.course.profiles import get_profile
from dyninf.course.recipes import RECIPES
from dyninf.course.trainings import (H100_STEP_SECONDS, Training, _train_in_parallel, course_trainings, estimate_table,
                              estimated_seconds, main, plain_label, readme_row, train_all)

ROOT = Path(__file__).resolve().parents[1]


def test_a_dry_run_trains_every_standard_recipe_for_one_epoch_in_runs_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNINF_HOME", str(tmp_path))
    standard = get_profile("standard", device="cpu")
    dry = standard.dry_run()
    assert dry.runs == "standard-dry-run" and dry.depth == 32 and dry.train_config().epochs == 1
    assert dry.train_config().batch_size == standard.train.batch_size == 512
    stale = tmp_path / "runs" / "standard-dry-run" / "resnet32"
    stale.mkdir(parents=True)
    (stale / "checkpoint.pt").write_text("an earlier dry run's: a dry run trains afresh")
    table = train_all(dry, synthetic_dataset(train_per_class=2, test_per_class=2))
    assert len(table) == len(course_trainings(standard)) and (table["measured minutes"] > 0).all()
    runs = sorted(path.name for path in (tmp_path / "runs" / "standard-dry-run").iterdir())
    assert runs == sorted(["resnet32", "resnet32_sd_pL0.5", "resnet32_aig_t0.5", "resnet32_aig_t0.7",
                           "resnet32_aig_t0.9", "resnet32_gaternet_l0", "resnet32_gaternet_l1",
                           *[name for name in runs if name.startswith("resnet32_wider")],
                           "resnet32_blockdrop_curriculum", "resnet32_blockdrop_g10", "resnet20", "resnet44"])
    assert all(len(load_history(run_dir(dry, name))) == 1 for name in runs)
    assert not (tmp_path / "runs" / "standard").exists()


def test_the_trainings_of_each_profile_follow_its_schedules():
    standard = {t.label: t for t in course_trainings(get_profile("standard", device="cpu"))}
    assert [t.notebook for t in standard.values()] == sorted(t.notebook for t in standard.values())
    assert {"AIG, t = 0.5", "AIG, t = 0.7", "AIG, t = 0.9", "ResNet-Wider"} <= set(standard)
    assert [kind for kind, _ in standard["BlockDrop ResNet-32"].phases] == ["BlockDrop curriculum", "BlockDrop finetuning"]
    frontier = [label for label, t in standard.items() if t.notebook == "05"]
    assert frontier == [f"plain ResNet-{d}" for d in RECIPES["standard"].frontier_depths if d != 32]
    quick = {t.label for t in course_trainings(get_profile("quick", device="cpu"))}
    assert "ResNet-Wider" not in quick and {"plain ResNet-8", "plain ResNet-14"} <= quick
    paper = {t.label: t for t in course_trainings(get_profile("paper", device="cpu"))}
    assert paper["stochastic depth ResNet-110"].phases[0][1].epochs == 500
    assert {"plain ResNet-32", "BlockDrop ResNet-32", "BlockDrop ResNet-110"} <= set(paper)
    # the released CIFAR-10 checkpoint's finetuning: 2,000 epochs, the rate divided by 10 at 1,600
    finetuning = dict(paper["BlockDrop ResNet-110"].phases)["BlockDrop finetuning"]
    assert (finetuning.epochs, finetuning.milestones, finetuning.gamma, finetuning.lr) == (2000, (0.8,), 0.1, 1e-4)
    assert paper["GaterNet, L1 weight 1"].depth == 164


def test_the_estimate_by_hand():
    def training(depth, *phases):
        return Training("00", "t", depth, phases, train=None)

    plain = H100_STEP_SECONDS["plain"]
    config = TrainConfig(epochs=2, batch_size=512)
    # 2 epochs of floor(50,000 / 512) = 97 steps at the measured ResNet-32 step time
    assert estimated_seconds(training(32, ("plain", config)), 50_000) == pytest.approx(2 * 97 * plain)
    # twice the layers (62 = 2 * 30 + 2), twice the time; and phases add up
    assert estimated_seconds(training(62, ("plain", config), ("AIG", config)), 50_000) == \
        pytest.approx(2 * 2 * 97 * (plain + H100_STEP_SECONDS["AIG"]))
    # beyond batch 512 a step costs more in proportion: 48 steps of batch 1024 cost 96 small ones
    big = TrainConfig(epochs=1, batch_size=1024)
    assert estimated_seconds(training(32, ("plain", big)), 50_000) == pytest.approx(48 * 2 * plain)


def test_a_larger_batch_scales_the_learning_rate_by_the_optimizers_rule():
    sgd = TrainConfig(epochs=1, batch_size=128, lr=0.2).at_batch_size(512)
    assert (sgd.batch_size, sgd.lr) == (512, pytest.approx(0.8))
    adam = TrainConfig(epochs=1, batch_size=256, lr=1e-3, optimizer="adam", schedule="step").at_batch_size(1024)
    assert adam.lr == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="warm-up"):
        TrainConfig(epochs=1, batch_size=128, schedule="step").at_batch_size(512)
    with pytest.raises(ValueError, match="positive integer"):
        sgd.at_batch_size(0)


def _standard_header_minutes(notebook: Path) -> float:
    header = "".join(json.loads(notebook.read_text())["cells"][0]["source"])
    row = next(line for line in header.splitlines() if line.startswith("| `standard`"))
    return float(re.search(r"about ([\d.]+) min of training on one H100", row)[1])


def test_the_notebook_headers_and_the_readme_show_the_estimate_it_computes():
    per_notebook = estimate_table(get_profile("standard", device="cpu")).groupby("notebook")["estimated minutes"].sum()
    for notebook in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        assert _standard_header_minutes(notebook) == round(per_notebook[notebook.name[:2]], 1), notebook.name
    readme = (ROOT / "README.md").read_text().splitlines()
    for profile in ("standard", "paper"):
        assert readme_row(get_profile(profile, device="cpu")) in readme, profile


def test_the_command_prints_the_estimate(capsys):
    assert main(["--profile", "quick"]) == 0
    assert "in all:" in capsys.readouterr().out


def _timed_sleep(label, log_folder, data):
    """A stand-in training (module level, so that a worker process can import it): sleeps, and
    writes when it started and finished."""
    import time as clock

    start = clock.time()
    clock.sleep(2.0)
    (log_folder / label).write_text(f"{start} {clock.time()}")


def test_jobs_run_trainings_side_by_side_and_one_that_starts_from_a_plain_resnet_after_it(tmp_path):
    def training(label, depth, starts_from=None):
        return Training("00", label, depth, (), partial(_timed_sleep, label, tmp_path), starts_from)

    trainings = [training(plain_label(20), 20), training("finetuned", 20, starts_from=20),
                 training("from scratch", 20), training(plain_label(8), 8)]
    minutes = _train_in_parallel(trainings, synthetic_dataset(train_per_class=1, test_per_class=1), jobs=2)
    assert len(minutes) == 4 and all(m >= 2 / 60 for m in minutes)
    times = {t.label: tuple(map(float, (tmp_path / t.label).read_text().split())) for t in trainings}
    assert times["finetuned"][0] >= times[plain_label(20)][1]           # waited for its backbone
    first, second = times[plain_label(20)], times["from scratch"]       # the first two ran together
    assert max(first[0], second[0]) < min(first[1], second[1])


def test_of_the_trainings_that_can_start_the_longest_estimated_starts_first(tmp_path):
    trainings = [Training("05", label, 8, (), partial(_timed_sleep, label, tmp_path)) for label in ("short", "long", "middle")]
    _train_in_parallel(trainings, synthetic_dataset(train_per_class=1, test_per_class=1), jobs=1,
                       estimated=[1.0, 3.0, 2.0])
    starts = {t.label: float((tmp_path / t.label).read_text().split()[0]) for t in trainings}
    assert starts["long"] < starts["middle"] < starts["short"]


def test_a_dry_run_with_two_jobs_trains_what_one_job_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNINF_HOME", str(tmp_path))
    dry = get_profile("quick", device="cpu").dry_run()
    table = train_all(dry, synthetic_dataset(train_per_class=2, test_per_class=2), jobs=2)
    assert list(table["training"]) == [t.label for t in course_trainings(dry)]
    assert (table["measured minutes"] > 0).all()
    runs = sorted(path.name for path in (tmp_path / "runs" / dry.runs).iterdir())
    assert runs == sorted(["resnet20", "resnet20_sd_pL0.5", "resnet20_aig_t0.5", "resnet20_aig_t0.7",
                           "resnet20_gaternet_l0", "resnet20_gaternet_l1", "resnet20_blockdrop_curriculum",
                           "resnet20_blockdrop_g1", "resnet8", "resnet14"])
    assert all(len(load_history(run_dir(dry, name))) == 1 for name in runs)
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        train_all(dry, jobs=0)
