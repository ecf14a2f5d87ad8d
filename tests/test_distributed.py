"""The training loop under torchrun: two processes on the CPU (gloo) train the same weights as one
process whose batches are split the same way, rank 0 alone writes, a run resumes with another
number of processes, and a failing process ends the run."""
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dyninf.data.batches import Batches
from dyninf.training.loop import (CHECKPOINT, HISTORY, TrainConfig, TrainingStep, fit, make_optimizer,
                                  make_scheduler, seed_everything, training_forward)

sys.path.insert(0, str(Path(__file__).parent))
from distributed_training import CONFIG_KW, METHODS, data, method  # noqa: E402

DRIVER = Path(__file__).with_name("distributed_training.py")


def _torchrun(*args, processes: int = 2, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", str(DRIVER), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def _one_thread():
    """As each process of the run computes: another thread count rounds the convolutions otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _shards_in_one_process(name: str, shards_per_epoch: list[int]) -> torch.nn.Module:
    """What that many processes compute, epoch by epoch, by hand in one: each global batch split into
    its equal parts, each part's loss (cross-entropy and the method's terms) with BatchNorm on the part
    and the random draws every process makes from the same state, the gradient the mean of the parts'
    (DistributedDataParallel's)."""
    model, extra, _ = method(name)
    dataset = data()
    config = TrainConfig(epochs=len(shards_per_epoch), **CONFIG_KW)
    batches = Batches(dataset.train_images, dataset.train_labels, config.batch_size, train=True, seed=config.seed)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(batches))
    model.to(memory_format=torch.channels_last)
    seed_everything(config.seed)
    with _one_thread():
        for epoch, shards in enumerate(shards_per_epoch):
            model.train()
            for images, labels in batches.epoch(epoch):
                state, loss = torch.get_rng_state(), 0
                for part, part_labels in zip(images.chunk(shards), labels.chunk(shards)):
                    torch.set_rng_state(state)   # every process draws from the same state
                    logits, decisions, probabilities = training_forward(model, part)
                    step = TrainingStep(model, part, part_labels, logits, decisions, probabilities)
                    loss = loss + (F.cross_entropy(logits, part_labels) + sum(term(step) for term in extra.values())) / shards
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    return model


def _assert_weights(saved: dict, reference: torch.nn.Module) -> None:
    for name, weight in reference.named_parameters():
        torch.testing.assert_close(saved[name], weight.detach(), msg=name)


@pytest.mark.parametrize("name", METHODS)
def test_two_processes_train_the_weights_of_one_process_with_the_same_shards_and_rank_0_writes(name, tmp_path):
    ran = _torchrun(name, tmp_path / "run", 2 if name == "plain" else 1)
    assert ran.returncode == 0, ran.stderr[-3000:]
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    shards = [2, 2] if name == "plain" else [2]
    _assert_weights(saved["model"], _shards_in_one_process(name, shards))
    with pytest.raises(AssertionError):   # what one process with the whole batch trains differs
        _assert_weights(saved["model"], _shards_in_one_process(name, [1] * len(shards)))
    assert [row["epoch"] for row in saved["history"]] == list(range(1, len(shards) + 1))
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == sorted([CHECKPOINT, HISTORY, ".lock"])


def test_a_process_that_fails_ends_the_whole_run_with_its_error_and_the_run_resumes_in_one_process(tmp_path):
    started = time.monotonic()
    ran = _torchrun("plain", tmp_path / "run", 2, 1, 1)   # process 1 fails in the second epoch
    assert ran.returncode != 0 and time.monotonic() - started < 60
    assert "process 1 fails on purpose in epoch 2" in ran.stderr + ran.stdout
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert [row["epoch"] for row in saved["history"]] == [1]   # rank 0 wrote the epoch both finished
    model = method("plain")[0]
    with _one_thread():
        resumed = fit(model, data(), TrainConfig(epochs=2, **CONFIG_KW), tmp_path / "run", device="cpu", progress=False)
    assert list(resumed.epoch) == [1, 2]
    _assert_weights(model.state_dict(), _shards_in_one_process("plain", [2, 1]))   # the second epoch in one process


def test_every_training_of_the_course_runs_under_torchrun_and_rank_0_alone_reports_it(tmp_path):
    from dyninf.course.profiles import get_profile
    from dyninf.course.trainings import course_trainings

    ran = _torchrun("trainings", tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    trainings = course_trainings(get_profile("quick", device="cpu"))
    reported = [line for line in ran.stdout.splitlines() if line.startswith("[trainings] ") and line.endswith(" min")]
    assert len(reported) == len(trainings), ran.stdout   # once each: rank 0 reports, not every process
    assert "[trainings] 2 processes (torchrun): each trains on 1/2 of every batch" in ran.stdout
    histories = sorted((tmp_path / "runs" / "quick-dry-run").glob("*/history.json"))
    assert len(histories) >= len(trainings) and all(len(json.loads(h.read_text())) == 1 for h in histories)


def test_a_number_of_processes_that_does_not_divide_every_batch_is_one_error_before_any_training(tmp_path):
    ran = _torchrun("trainings", tmp_path, processes=3)
    assert ran.returncode != 0
    assert "the quick profile's batches of 128 images cannot be split into 3 equal parts" in ran.stderr + ran.stdout
    assert not (tmp_path / "runs").exists()
