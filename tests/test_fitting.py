import json
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dyninf.training.loop as train_module
from dyninf.network.backbones import cifar_resnet
from dyninf.data.cifar import synthetic_dataset
from dyninf.deciders import StochasticDepth
from dyninf.network.dynamic import DynamicNetwork
from dyninf.training.loop import CHECKPOINT, HISTORY, TrainConfig, fit, load_history
from dyninf.network.inference import evaluate, predict
from test_devices import _dynamic_networks
from test_skipping import SYNCING

CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="onecycle", seed=3)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(train_per_class=24, test_per_class=8)


def _net():
    torch.manual_seed(0)
    return cifar_resnet(8, width=8)


def _without_time(history):
    return history.drop(columns="seconds")


def test_fit_learns_the_synthetic_task(data):
    net = _net()
    before = evaluate(net, data.test_images, data.test_labels)["accuracy"]
    history = fit(net, data, TrainConfig(epochs=4, batch_size=32, lr=0.05), progress=False, device="cpu")
    assert list(history.epoch) == [1, 2, 3, 4]
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert history.test_accuracy.iloc[-1] >= 0.5 > before  # 10 classes: chance is 0.1


def test_resume_after_an_interruption_matches_an_uninterrupted_run(data, tmp_path, monkeypatch):
    reference = _net()
    expected = fit(reference, data, CONFIG, tmp_path / "reference", progress=False, device="cpu")

    original = train_module._train_one_epoch

    def interrupted(model, batches, epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt  # as if the user pressed stop during the third epoch
        return original(model, batches, epoch, *args)

    monkeypatch.setattr(train_module, "_train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(_net(), data, CONFIG, tmp_path / "run", progress=False, device="cpu")
    assert len(load_history(tmp_path / "run")) == 2
    monkeypatch.setattr(train_module, "_train_one_epoch", original)

    resumed_net = cifar_resnet(8, width=8)  # fresh weights: all state must come from the checkpoint
    resumed = fit(resumed_net, data, CONFIG, tmp_path / "run", progress=False, device="cpu")
    assert _without_time(resumed).equals(_without_time(expected))
    for (name, a), b in zip(reference.state_dict().items(), resumed_net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", CHECKPOINT, HISTORY]   # no temporary


def test_a_complete_run_is_loaded_not_retrained(data, tmp_path, monkeypatch):
    trained = _net()
    history = fit(trained, data, CONFIG, tmp_path, progress=False, device="cpu")

    def no_training(*args):
        raise AssertionError("a complete run must not train again")

    monkeypatch.setattr(train_module, "_train_one_epoch", no_training)
    loaded = cifar_resnet(8, width=8)
    again = fit(loaded, data, CONFIG, tmp_path, progress=False, device="cpu")
    assert again.equals(history)
    assert torch.equal(predict(loaded, data.test_images), predict(trained, data.test_images))
    assert json.loads((tmp_path / HISTORY).read_text())[-1]["epoch"] == 3


def test_another_configuration_in_the_same_folder_is_an_error(data, tmp_path):
    fit(_net(), data, TrainConfig(epochs=1, batch_size=32), tmp_path, progress=False, device="cpu")
    with pytest.raises(ValueError, match="another configuration"):
        fit(_net(), data, TrainConfig(epochs=2, batch_size=32), tmp_path, progress=False, device="cpu")


def test_step_schedule_by_hand(data):
    config = TrainConfig(epochs=4, batch_size=60, lr=0.1, schedule="step", milestones=(0.5, 0.75))
    history = fit(_net(), data, config, progress=False, device="cpu")
    assert history.lr.tolist() == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_onecycle_schedule_warms_up_then_anneals(data):
    history = fit(_net(), data, TrainConfig(epochs=5, batch_size=60, lr=0.2), progress=False, device="cpu")
    assert history.lr.idxmax() in (1, 2) and history.lr.max() <= 0.2
    assert history.lr.iloc[-1] < 1e-4


def test_extra_losses_are_added_and_logged(data):
    calls = []

    def constant(step):
        calls.append(len(step.labels))
        return torch.tensor(0.25)

    history = fit(_net(), data, TrainConfig(epochs=1, batch_size=60), progress=False, device="cpu",
                  extra_losses={"penalty": constant})
    assert history.penalty.tolist() == [0.25]
    assert calls == [60, 60, 60, 60]


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(epochs=1, schedule="cosine")
    with pytest.raises(ValueError, match="must be positive"):
        TrainConfig(epochs=0)


def test_predict_slices_decisions_with_the_images(data):
    net = _net().eval()
    decisions = torch.randint(0, 2, (len(data.test_images), net.num_blocks)).float()
    whole = predict(net, data.test_images, decisions=decisions, batch_size=1000)
    sliced = predict(net, data.test_images, decisions=decisions, mode="skipped", batch_size=7)
    assert torch.allclose(whole, sliced, atol=1e-5)


def test_a_deciders_parameters_get_their_own_learning_rate(data):
    from dyninf.deciders import AIGGates
    from dyninf.network.dynamic import DynamicNetwork
    from dyninf.training.loop import make_optimizer, make_scheduler

    backbone = cifar_resnet(8, width=8)
    net = DynamicNetwork(backbone, AIGGates(backbone))
    config = TrainConfig(epochs=2, lr=0.1, schedule="step", decider_lr_factor=10)
    optimizer = make_optimizer(net, config)
    backbone_group, decider_group = optimizer.param_groups
    assert backbone_group["lr"] == 0.1 and decider_group["lr"] == pytest.approx(1.0)
    assert len(decider_group["params"]) == len(list(net.decider.parameters()))
    assert len(backbone_group["params"]) == len(list(backbone.parameters()))
    onecycle = make_optimizer(net, TrainConfig(epochs=2, lr=0.1, decider_lr_factor=10))
    make_scheduler(onecycle, TrainConfig(epochs=2, lr=0.1, decider_lr_factor=10), steps_per_epoch=5)
    assert onecycle.param_groups[1]["max_lr"] == pytest.approx(10 * onecycle.param_groups[0]["max_lr"])


def test_on_epoch_start_sees_every_epoch_once_also_after_resume(data, tmp_path, monkeypatch):
    seen = []
    config = TrainConfig(epochs=3, batch_size=60)
    original = train_module._train_one_epoch

    def interrupted(model, batches, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(model, batches, epoch, *args)

    monkeypatch.setattr(train_module, "_train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(_net(), data, config, tmp_path, progress=False, device="cpu",
            on_epoch_start=lambda model, epoch: seen.append(epoch))
    monkeypatch.setattr(train_module, "_train_one_epoch", original)
    fit(_net(), data, config, tmp_path, progress=False, device="cpu",
        on_epoch_start=lambda model, epoch: seen.append(epoch))
    assert seen == [0, 1, 1, 2]


def test_metrics_are_logged_but_not_trained_on_and_epoch_start_values_reach_the_history(data):
    def mean_logit(step):
        return step.logits.mean() * 1000   # would change the weights if it were trained on

    config = TrainConfig(epochs=2, batch_size=60)
    with_metric, without = _net(), _net()
    history = fit(with_metric, data, config, progress=False, device="cpu",
                  metrics={"mean_logit": mean_logit},
                  on_epoch_start=lambda model, epoch: {"phase": "warm" if epoch == 0 else "main"})
    fit(without, data, config, progress=False, device="cpu")
    assert history.mean_logit.abs().gt(0).all()
    assert history.phase.tolist() == ["warm", "main"]
    assert all(torch.equal(a, b) for a, b in zip(with_metric.state_dict().values(),
                                                 without.state_dict().values()))


def test_adam_leaves_frozen_parameters_out_and_bad_optimizers_are_errors(data):
    from dyninf.training.loop import make_optimizer

    net = _net()
    net.stem.requires_grad_(False)
    optimizer = make_optimizer(net, TrainConfig(epochs=1, optimizer="adam", weight_decay=0.0))
    assert isinstance(optimizer, torch.optim.Adam)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in net.parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(epochs=1, optimizer="lbfgs")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_checkpoint_names_its_run_folder_and_what_to_do(data, tmp_path, damage):
    fit(_net(), data, TrainConfig(epochs=1, batch_size=32), tmp_path / "run", progress=False, device="cpu")
    checkpoint = tmp_path / "run" / CHECKPOINT
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[:len(content) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.raises(train_module.DamagedRunError, match=rf"{tmp_path / 'run'}.*Delete the folder"):
        fit(_net(), data, TrainConfig(epochs=1, batch_size=32), tmp_path / "run", progress=False, device="cpu")


def test_progress_as_lines_prints_one_line_per_training_and_no_bars(data, monkeypatch, capsys):
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    monkeypatch.setenv("DYNINF_PROGRESS", "lines")
    fit(_net(), data, config, device="cpu", description="tiny")
    shown = capsys.readouterr()
    assert shown.err == "" and shown.out.splitlines() == [shown.out.strip()]
    assert shown.out.startswith("tiny: trained; 2 epochs, test accuracy")
    monkeypatch.setenv("DYNINF_PROGRESS", "bars")
    fit(_net(), data, config, device="cpu", description="tiny")
    assert "%|" in capsys.readouterr().err          # the bars, where a terminal shows them


def test_a_loaded_run_is_named_relative_to_the_course(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DYNINF_HOME", str(tmp_path))
    monkeypatch.setenv("DYNINF_PROGRESS", "lines")
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    fit(_net(), data, config, tmp_path / "runs" / "tiny", device="cpu", description="tiny", progress=False)
    fit(_net(), data, config, tmp_path / "runs" / "tiny", device="cpu", description="tiny")
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("tiny: loaded from runs/tiny;") and str(tmp_path) not in last


def test_a_run_is_reported_once_however_often_it_is_loaded(data, tmp_path, monkeypatch, capsys):
    # notebook 05 loads the baseline once for itself and once for each network finetuned from it
    monkeypatch.setenv("DYNINF_PROGRESS", "lines")
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    for _ in range(3):
        fit(_net(), data, config, tmp_path / "base", device="cpu", description="base")
    fit(_net(), data, config, tmp_path / "other", device="cpu", description="other")
    fit(_net(), data, config, tmp_path / "other", device="cpu", description="other")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(";")[0] for line in lines] == ["base: trained", "other: trained"], lines


def test_an_unknown_progress_style_is_a_clear_error(data, monkeypatch):
    monkeypatch.setenv("DYNINF_PROGRESS", "fancy")
    with pytest.raises(ValueError, match=r"DYNINF_PROGRESS must be one of \('bars', 'lines'\), got 'fancy'"):
        fit(_net(), data, CONFIG, device="cpu")


class ReadBackCounter(TorchDispatchMode):
    """Counts the operators that read a value back to the host (on a GPU: wait for it)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func.name() in SYNCING
        return func(*args, **(kwargs or {}))


def _reads_in_one_epoch(net, data, batch_size, monkeypatch):
    counter = ReadBackCounter()
    original = train_module._train_one_epoch

    def counted(*args):
        with counter:
            return original(*args)

    monkeypatch.setattr(train_module, "_train_one_epoch", counted)
    fit(net, data, TrainConfig(epochs=1, batch_size=batch_size), progress=False, device="cpu")
    return counter.reads


def _network(kind):
    """A small network of each kind that trains: plain, masked (AIG's gates, GaterNet's filter
    gates) or skipped (stochastic depth's batch-mode drops)."""
    if kind == "SD":
        backbone = _net()
        return DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, 0.5, mode="batch"),
                              train_mode="skipped")
    return _net() if kind == "plain" else _dynamic_networks("cpu")[kind].train()


@pytest.mark.parametrize("kind", ["plain", "AIG", "GaterNet"])
def test_training_reads_back_to_the_host_once_per_epoch_not_per_step(data, kind, monkeypatch):
    """Plain and masked training (AIG's gates, GaterNet's filter gates) never wait for the device
    inside the epoch: 12 steps read back no more than 2 steps do. (Stochastic depth reads its own
    host-side draws, which wait for nothing: test_stochastic_depth and the CUDA test below.)"""
    few = _reads_in_one_epoch(_network(kind), data, 120, monkeypatch)     # 2 steps
    many = _reads_in_one_epoch(_network(kind), data, 20, monkeypatch)     # 12 steps
    assert many == few <= 2


def test_a_diverged_epoch_is_a_clear_error_and_leaves_no_checkpoint(data, tmp_path):
    with pytest.raises(FloatingPointError, match="diverged in epoch 1.*smaller learning rate"):
        fit(_net(), data, TrainConfig(epochs=2, batch_size=60, lr=1e30), tmp_path, progress=False,
            device="cpu")
    assert not (tmp_path / CHECKPOINT).exists()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["plain", "AIG", "GaterNet", "SD"])
def test_on_cuda_an_epochs_synchronisations_do_not_grow_with_its_steps(data, kind):
    """CUDA's own sync debugger counts what makes the host wait (batches, training steps, the
    epoch's one read-back): the same for 12 steps as for 2."""
    def synchronisations(batch_size):
        net = _network(kind).cuda().to(memory_format=torch.channels_last)
        batches = train_module.Batches(data.train_images, data.train_labels, batch_size, train=True, device="cuda")
        optimizer = train_module.make_optimizer(net, CONFIG)
        scheduler = train_module.make_scheduler(optimizer, CONFIG, len(batches))
        args = (optimizer, scheduler, {}, {}, torch.device("cuda"), False)
        train_module._train_one_epoch(net, batches, 0, *args)   # warm-up: kernels, caches
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_module._train_one_epoch(net, batches, 1, *args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return len([w for w in caught if "called a synchronizing" in str(w.message)])

    assert synchronisations(20) == synchronisations(120)
