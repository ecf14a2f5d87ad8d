"""What happens when a run is killed, started twice, meets a full disk or a folder it did not
write: each ends in a clear state and a one-line message naming the path."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dyninf.tools import runner
from dyninf.network.backbones import cifar_resnet
from dyninf.data.cifar import load_cifar, synthetic_dataset, write_cache
from dyninf.training.loop import CHECKPOINT, HISTORY, ForeignRunError, TrainConfig, fit, load_history
from dyninf.network.inference import evaluate
from dyninf.utils.io import DiskFullError, atomic_torch_save, atomic_write_text
from dyninf.utils.paths import course_root
from dyninf.tools.sandbox import confinement_problem

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(train_per_class=16, test_per_class=4)


def _net(depth=8):
    torch.manual_seed(0)
    return cifar_resnet(depth, width=8)


def _python(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], cwd=course_root(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


TRAIN_ONE = """
    import sys, torch
    from dyninf.network.backbones import cifar_resnet
    from dyninf.data.cifar import synthetic_dataset
    from dyninf.training.loop import TrainConfig, fit
    torch.manual_seed(0)
    fit(cifar_resnet(8, width=8), synthetic_dataset(train_per_class=16, test_per_class=4),
        TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1), sys.argv[1], device="cpu", description="run")
"""


def test_two_processes_training_one_run_train_it_once_the_second_waits_then_loads_it(tmp_path):
    run_dir = tmp_path / "run"
    first, second = _python(TRAIN_ONE, run_dir), _python(TRAIN_ONE, run_dir)
    outputs = sorted((p.communicate(timeout=300)[0] for p in (first, second)), key=lambda out: "waiting" in out)
    assert first.returncode == second.returncode == 0, outputs
    trained, waited = outputs
    assert "run: trained" in trained and "waiting" not in trained, trained
    assert "another process is training this run" in waited and "run: loaded from" in waited, waited
    assert len(load_history(run_dir)) == 2


def test_a_run_started_after_a_kill_removes_the_kills_temporaries_and_repairs_a_lagging_history(data, tmp_path):
    run_dir = tmp_path / "run"
    fit(_net(), data, CONFIG, run_dir, device="cpu", progress=False)
    full = json.loads((run_dir / HISTORY).read_text())
    # a kill between the checkpoint's rename and the history's: the history an epoch behind,
    # and a kill during a write: its temporary file
    (run_dir / HISTORY).write_text(json.dumps(full[:-1]))
    (run_dir / f".{CHECKPOINT}.x1y2.tmp").write_bytes(b"half a checkpoint")
    assert len(load_history(run_dir)) == 2, "the checkpoint's history, not the lagging file"
    fit(_net(), data, CONFIG, run_dir, device="cpu", progress=False)
    assert json.loads((run_dir / HISTORY).read_text()) == full
    assert not list(run_dir.glob(".*.tmp"))


def test_a_cache_write_killed_earlier_leaves_nothing_once_the_cache_is_read_again(tmp_path):
    write_cache(synthetic_dataset(train_per_class=2, test_per_class=1), tmp_path / "cifar10-uint8.pt")
    stale = tmp_path / ".cifar10-uint8.pt.k1ll.tmp"
    stale.write_bytes(b"\0" * 1000)
    assert len(load_cifar("cifar10", cache_dir=tmp_path).classes) == 10
    assert not stale.exists()


WORKER_PARENT = """
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from dyninf.data.cifar import synthetic_dataset
    from dyninf.course.trainings import _start_worker
    import os
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(1, synthetic_dataset(1, 1))) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 600)
        time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:   # a zombie has ended; only its parent has not read it
        return stat.read().split(") ")[1][0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to tell a zombie from a live worker")
def test_a_training_worker_ends_when_its_parent_is_killed():
    parent = _python(WORKER_PARENT)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker), "the worker outlived the parent that was killed"


def test_a_run_folder_of_another_network_or_another_version_is_an_error_naming_it(data, tmp_path):
    run_dir = tmp_path / "run"
    fit(_net(8), data, CONFIG, run_dir, device="cpu", progress=False)
    with pytest.raises(ForeignRunError, match=rf"checkpoint in {run_dir} holds a network other than this one: blocks\.\S+ is "):
        fit(_net(14), data, CONFIG, run_dir, device="cpu", progress=False)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    state["config"]["warmup"] = 5
    torch.save(state, run_dir / CHECKPOINT)
    with pytest.raises(ForeignRunError, match=rf"checkpoint in {run_dir} was trained with settings this version "
                                              r"does not know \(warmup; TrainConfig has batch_size"):
        fit(_net(8), data, CONFIG, run_dir, device="cpu", progress=False)


def _full_disk_at(path: Path, monkeypatch, after_bytes: int = 0):
    """Writes to temporaries for ``path`` fail with ENOSPC once ``after_bytes`` were written (a disk
    that fills up mid-write)."""
    import errno
    import io

    real_fdopen = os.fdopen

    class FullFile(io.FileIO):
        written = 0

        def write(self, data):
            if FullFile.written + len(data) > after_bytes:
                raise OSError(errno.ENOSPC, "No space left on device")
            FullFile.written += len(data)
            return super().write(data)

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" in mode and Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{path.name}."):
            file = FullFile(fd, "w")
            return file if "b" in mode else io.TextIOWrapper(file)
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="tells the files apart through /proc")
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_the_previous_one(data, tmp_path, monkeypatch):
    path = tmp_path / "run" / "checkpoint.pt"
    atomic_torch_save({"epoch": 1}, path)
    _full_disk_at(path, monkeypatch, after_bytes=100)
    with pytest.raises(DiskFullError) as raised:
        atomic_torch_save({"weights": torch.zeros(10_000)}, path)
    message = str(raised.value.strerror)
    assert "\n" not in message and message.startswith("no space left on the device to write ") and \
        "checkpoint.pt" in message and "iB free now" in message, message
    assert torch.load(path, weights_only=True) == {"epoch": 1}, "the previous checkpoint is intact"
    assert not list(path.parent.glob(".*.tmp"))
    text = tmp_path / "REPORT.md"
    _full_disk_at(text, monkeypatch)
    with pytest.raises(DiskFullError, match="REPORT.md"):
        atomic_write_text(text, "# report")


def test_a_course_run_that_fills_the_disk_reports_it_and_leaves_no_earlier_success(tmp_path, monkeypatch):
    import errno

    import papermill

    notebook = runner.notebooks_in_order()[0]
    out = tmp_path / "build"
    out.mkdir()
    for name in (notebook.name, f"{notebook.stem}.html"):   # an earlier run's copies
        (out / name).write_text("{}")
    (out / "course.json").write_text(json.dumps({"notebooks": [{"notebook": notebook.stem, "status": "ok"}]}))

    def fills_the_disk(source, output, **kwargs):
        Path(output).write_text('{"cells": [{"cell_type": "co')   # papermill's last save, cut off
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(papermill, "execute_notebook", fills_the_disk)
    assert runner.run_course("quick", out, [notebook]) is False
    [run] = json.loads((out / "course.json").read_text())["notebooks"]
    assert run["status"] == "FAILED" and "no space left on the device to write" in run["error"], run
    assert "| FAILED |" in (out / "REPORT.md").read_text() and "no space left" in (out / "REPORT.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == [".lock", "REPORT.md", "course.json"], \
        "no truncated notebook, no earlier run's copy or page"

    def report_fails(path, text):
        raise DiskFullError(errno.ENOSPC, f"no space left on the device to write {path}")

    monkeypatch.setattr(runner, "atomic_write_text", report_fails)
    with pytest.raises(DiskFullError):
        runner.run_course("quick", out, [notebook])
    assert not (out / "REPORT.md").exists() and not (out / "course.json").exists(), \
        "a report that could not be rewritten is removed, not left claiming the last run"


def test_wrong_inputs_to_inference_and_to_a_dynamic_network_say_what_was_expected(data):
    from dyninf.deciders import BlockDropPolicy
    from dyninf.deciders.aig import AIGGates
    from dyninf.deciders.stochastic_depth import StochasticDepth
    from dyninf.network.dynamic import DynamicNetwork

    net = cifar_resnet(8).eval()
    with pytest.raises(ValueError, match=r"at least one uint8 image, of shape \(N, 3, H, W\); got \(0, 3, 32, 32\)"):
        evaluate(net, data.test_images[:0], data.test_labels[:0])
    with pytest.raises(ValueError, match=r"one label per image, shape \(40,\), got \(39,\)"):
        evaluate(net, data.test_images, data.test_labels[:-1])
    with torch.no_grad():
        net.head[-1].bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="logits for images 0 to 39 hold NaN"):
        evaluate(net, data.test_images, data.test_labels)
    backbone = cifar_resnet(8)
    for decider, what in ((StochasticDepth(5), "5 blocks; this backbone has 3"),
                          (BlockDropPolicy(9), "9 blocks; this backbone has 3"),
                          (AIGGates(cifar_resnet(14)), "6 blocks; this backbone has 3"),
                          (AIGGates(cifar_resnet(8, width=32)), "block 0 takes 32 channels; this backbone.s block 0 has 16")):
        with pytest.raises(ValueError, match=f"{type(decider).__name__}.*{what}"):
            DynamicNetwork(backbone, decider)


@pytest.mark.skipif(bool(confinement_problem()) and not os.environ.get("DYNINF_REQUIRE_SANDBOX"),
                    reason="needs bubblewrap (bwrap) and namespaces")
def test_a_real_full_disk_while_a_checkpoint_is_written(tmp_path):
    # a 64 KiB tmpfs over a folder of the test's, in a sandbox of its own: the disk really fills up
    disk = tmp_path / "small-disk"
    disk.mkdir()
    script = textwrap.dedent(f"""
        import os, torch
        from dyninf.utils.io import DiskFullError, atomic_torch_save
        path = {str(disk / "run" / "checkpoint.pt")!r}
        atomic_torch_save({{"epoch": 1}}, path)
        try:
            atomic_torch_save({{"weights": torch.zeros(100_000)}}, path)
        except DiskFullError as error:
            print("refused:", error.strerror)
        print(torch.load(path, weights_only=True))
        print(sorted(os.listdir(os.path.dirname(path))))
    """)
    done = subprocess.run(["bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--size", str(64 * 1024),
                           "--tmpfs", str(disk), "--", sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=course_root(), timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: no space left on the device to write ") and "checkpoint.pt" in lines[0]
    assert lines[1:] == ["{'epoch': 1}", "['checkpoint.pt']"], done.stdout
