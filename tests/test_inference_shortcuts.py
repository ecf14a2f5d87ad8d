"""The shortcuts inference takes where every microsecond counts (one image at a time on a CPU), each
against the long way it replaces: batch norms folded into the stem, the blocks, the head and the
gater (against the layers as written, which autograd runs); the blocks of a plan run without
their decisions (against masked mode); one image's decision read as a number instead of planned;
one image's filter gates planned in Python; the images checked for NaN by their sum."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dyninf.network.backbones as backbones
from conftest import settled_resnet
from dyninf.data.batches import model_inputs
from dyninf.deciders import random_decisions
from dyninf.network import skipping
from dyninf.network.backbones import check_images, rectified_sum
from test_devices import _dynamic_networks, _images

BATCH_NORMS = {"aten::native_batch_norm", "aten::_native_batch_norm_legit_no_training", "aten::cudnn_batch_norm"}


class Operators(TorchDispatchMode):
    """The names of the operators dispatched."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


def _inference_and_layers(call):
    """``call()`` for inference (no autograd: the shortcuts) and with autograd (the layers as
    written), and the operators the first dispatched."""
    with torch.no_grad(), Operators() as seen:
        shortcut = call()
    with torch.enable_grad():
        layers = call()
    return shortcut, layers, seen.names


@pytest.mark.parametrize("mode", ["plain", "masked", "skipped"])
@pytest.mark.parametrize("bottleneck", [False, True])
def test_inference_folds_every_batch_norm_and_gives_the_layers_numbers(mode, bottleneck):
    net = settled_resnet(29 if bottleneck else 20, seed=4, bottleneck=bottleneck)
    x = torch.randn(3, 3, 32, 32)
    decisions = random_decisions(3, net.num_blocks, 0.6, seed=1)
    gates = (torch.rand(3, net.num_filter_gates, generator=torch.Generator().manual_seed(2)) < 0.7).float()
    given = {} if mode == "plain" else {"decisions": decisions, "filter_gates": gates, "mode": mode}
    shortcut, layers, names = _inference_and_layers(lambda: net(x, **given))
    assert (shortcut - layers).abs().max() <= 1e-4
    assert not BATCH_NORMS & set(names) and "aten::adaptive_avg_pool2d" not in names   # folded; pooled by a mean
    assert "aten::convolution" in names


def test_the_gater_folds_its_batch_norm_into_its_first_layer():
    net = _dynamic_networks("cpu")["GaterNet"]
    images = model_inputs(_images(4))
    shortcut, layers, names = _inference_and_layers(lambda: net.decider.logits(images))
    assert (shortcut - layers).abs().max() <= 1e-4 and not BATCH_NORMS & set(names)


def test_a_block_s_output_is_computed_in_its_residual_only_without_autograd():
    shortcut, residual = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    expected = torch.relu(shortcut + residual)
    with torch.no_grad():
        kept = residual.clone()
        out = rectified_sum(shortcut, kept)
    assert out is kept and torch.equal(out, expected)
    residual.requires_grad_(True)
    out = rectified_sum(shortcut, residual)
    assert out is not residual and torch.equal(out, expected) and out.requires_grad


@pytest.mark.parametrize("batch", [1, 5])
def test_a_plan_runs_its_blocks_without_their_decisions_and_gives_masked_mode_s_numbers(batch, monkeypatch):
    net = settled_resnet(20, seed=3)
    x = torch.randn(batch, 3, 32, 32)
    decisions = random_decisions(batch, net.num_blocks, 0.5, seed=4)
    decisions[:, 0] = 1
    decisions[0, 2] = 0.5                                   # a block whose residual is scaled
    asked = []
    fixed = backbones.as_decider

    def counting(*args):                                  # the decider the tensor stands for
        decider = fixed(*args)
        if decider is None:
            return None

        def asking(index, block_input):
            asked.append(index)
            return decider(index, block_input)
        return asking

    monkeypatch.setattr(backbones, "as_decider", counting)
    with torch.no_grad():
        masked = net(x, decisions=decisions, mode="masked")
        assert len(asked) == net.num_blocks               # masked mode asks before every block
        asked.clear()
        skipped, taken = net(x, decisions=decisions, mode="skipped", return_decisions=True)
    assert asked == [] and (masked - skipped).abs().max() <= 1e-4
    assert torch.equal(taken, decisions) and taken is not decisions   # the decisions given, as a new tensor


def test_one_image_s_decision_is_read_as_a_number_and_runs_its_block_as_a_plan_would(monkeypatch):
    net = _dynamic_networks("cpu")["AIG"]
    images = model_inputs(_images(8))
    plans = []
    plan = skipping.plan_execution
    monkeypatch.setattr(skipping, "plan_execution", lambda *args, **kwargs: plans.append(1) or plan(*args, **kwargs))
    block_plan = backbones.plan_block
    monkeypatch.setattr(backbones, "plan_block", lambda *args, **kwargs: plans.append(1) or block_plan(*args, **kwargs))
    ran = set()
    with torch.no_grad():
        gate = net.decider.gate_for(net.decider.gated_blocks[0])
        first = torch.full((1, gate.fc1.in_features, 8, 8), 0.5)
        number = net.decider(net.decider.gated_blocks[0], first)
        assert isinstance(number, float) and number == float(gate.margin(first).item() > gate.threshold.item())
        for image in images.split(1):
            logits, taken, record = net(image, mode="skipped", return_decisions=True, return_record=True)
            masked = net.backbone(image, decisions=taken, mode="masked")
            assert (logits - masked).abs().max() <= 1e-4
            assert record.plan_reads == len(net.decider.gated_blocks)   # each number was a read
            ran.update(record.ways)
        _, masked_record = net(images[:1], mode="masked", return_record=True)
    assert masked_record.plan_reads == len(net.decider.gated_blocks)   # read back in masked mode too
    assert plans == [] and ran == {"skip", "all"}         # both ways taken, neither planned
    steps = [skipping.plan_block(torch.tensor([value]), None, (16,), 1, skipping.policy_for("cpu"))
             for value in (0.0, 1.0, 0.5)]
    assert [(step.how, step.scaled, read) for step, read in steps] == [("skip", False, True), ("all", False, True),
                                                                      ("all", True, True)]
    with pytest.raises(ValueError, match="finite"):
        skipping.plan_block(torch.tensor([float("nan")]), None, (16,), 1, skipping.policy_for("cpu"))


def test_one_image_s_number_is_the_batch_s_decision_for_that_image():
    gates = _dynamic_networks("cpu")["AIG"].decider
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for index in gates.gated_blocks:
            gate = gates.gate_for(index)
            batch = torch.randn(32, gate.fc1.in_features, 8, 8, generator=generator).contiguous(
                memory_format=torch.channels_last)
            margins = gate.margin(batch).sort().values
            gate.threshold.fill_((margins[15] + margins[16]).item() / 2)   # half run, none near the threshold
            decided = gates(index, batch)
            assert decided.sum() == 16
            numbers = [gates(index, image) for image in batch.split(1)]
            assert all(isinstance(number, float) for number in numbers)
            assert torch.tensor(numbers).tolist() == decided.tolist()
            one = batch[5:6]
            gate.threshold.fill_(gate.margin(one).item())   # exactly at the threshold: it skips
            assert gates(index, one) == 0.0
            gate.threshold.fill_(torch.nextafter(gate.margin(one), torch.tensor(-float("inf"))).item())
            assert gates(index, one) == 1.0
            gate.threshold.fill_((margins[15] + margins[16]).item() / 2)
            # a bfloat16 image is converted as margin converts it; under CPU autocast, a tensor as for a batch
            half = batch[:1].to(torch.bfloat16)
            assert gates(index, half) == float(gate.margin(half).item() > gate.threshold.item())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                under_autocast = gates(index, batch[:1])
            assert isinstance(under_autocast, torch.Tensor) and under_autocast.tolist() == decided[:1].tolist()
    gates.train()
    try:
        assert isinstance(gates(gates.gated_blocks[0], batch[:2]), torch.Tensor)   # training samples
    finally:
        gates.eval()


def test_one_image_s_filter_gates_are_planned_as_the_general_plan_plans_them():
    net = settled_resnet(20)
    groups = net._filter_groups()
    generator = torch.Generator().manual_seed(6)
    for share in (0.1, 0.5, 0.9, 1.0):
        gates = (torch.rand(1, net.num_filter_gates, generator=generator) < share).float()
        gates[0, 3] = 0.5 if share < 1 else 1.0          # a gate that scales
        alone = skipping.plan_execution(None, gates, groups, 1)
        general = skipping.plan_execution(torch.ones(1, net.num_blocks), gates, groups, 1)   # the tensor path
        for mine, theirs in zip(alone, general):
            assert (mine.how, mine.gated) == (theirs.how, theirs.gated)
            assert [None if f is None else f.tolist() for f in mine.filters] == \
                [None if f is None else f.tolist() for f in theirs.filters]
    gates[0, 7] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        skipping.plan_execution(None, gates, groups, 1)


def test_images_are_checked_for_nan_by_their_sum_and_large_finite_values_pass():
    check_images(torch.full((2, 3, 4, 4), 3e38))          # finite, though their sum overflows to inf
    for bad in (float("nan"), float("inf")):
        images = torch.zeros(2, 3, 4, 4)
        images[1, 0, 2, 2] = bad
        with pytest.raises(ValueError, match="1 of the 2 images hold NaN or inf .the first: image 1"):
            check_images(images, finite=True)
    assert math.isinf(torch.full((2, 3, 4, 4), 3e38).sum().item())   # the case the element-wise test decides


@pytest.mark.parametrize("name", ["GaterNet", "BlockDrop"])
def test_a_global_decider_checks_the_images_once_and_nan_is_still_refused(name, monkeypatch):
    net = _dynamic_networks("cpu")[name]
    checks = []
    check = backbones.check_images
    monkeypatch.setattr(backbones, "check_images", lambda *args, **kwargs: checks.append(1) or check(*args, **kwargs))
    images = model_inputs(_images(2))
    with torch.no_grad():
        net(images)
        assert len(checks) == 1                              # by the decider's extractor, not again
        images[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN or inf"):
            net(images)
