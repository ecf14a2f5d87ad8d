"""Skipped execution's plan (dyninf.network.skipping): the way each block runs, checked by hand; masked and
skipped agree whichever way is chosen; and no host synchronisation inside the block loop when the
decisions are known before it (recorded with a TorchDispatchMode, and on CUDA with the sync debug
mode)."""
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dyninf.network.backbones as backbones
from conftest import settled_resnet
from dyninf.network import skipping
from dyninf.network.backbones import cifar_resnet
from dyninf.data.batches import model_inputs
from dyninf.deciders import random_decisions
from dyninf.network.skipping import SkippingPolicy
from test_devices import _dynamic_networks, _images

# Operators that make the host wait for the device: a value read back (.item(), bool(), int()),
# an output whose size depends on values (nonzero), a comparison returned as a Python bool.
SYNCING = {"aten::nonzero", "aten::_local_scalar_dense", "aten::equal", "aten::is_nonzero"}


def _ways(plan):
    return [step.how for step in plan]


def test_each_block_runs_the_cheapest_way_by_hand():
    decisions = torch.tensor([[1, 0, 1, 1, 0.5],
                              [1, 0, 0, 1, 1.0],
                              [1, 0, 1, 1, 1.0],
                              [1, 0, 0, 0, 1.0]])
    groups = [(16,)] * 5
    plan = skipping.plan_execution(decisions, None, groups, 4, SkippingPolicy(gather_at_most=0.5))
    assert _ways(plan) == ["all", "skip", "gather", "all", "all"]
    assert plan[2].images.tolist() == [0, 2] and not plan[2].scaled
    assert plan[0].scaled is False                    # every decision 1: no multiply
    assert plan[3].scaled is True                     # 3 of 4 run: the whole batch, image 3 masked by 0
    assert plan[4].scaled is True                     # 0.5 scales image 0's residual
    plan = skipping.plan_execution(decisions, None, groups, 4, SkippingPolicy(gather_at_most=0.9))
    assert _ways(plan) == ["all", "skip", "gather", "gather", "all"]
    assert plan[3].images.tolist() == [0, 1, 2] and not plan[3].scaled


def test_the_filters_to_compute_are_those_open_for_the_running_images_by_hand(monkeypatch):
    monkeypatch.setattr(skipping, "FILTER_BLOCK", 1)
    net = cifar_resnet(8)                                  # gated filters per block: 16, 32, 64
    decisions = torch.tensor([[1.0, 1, 1], [0, 1, 1]])
    gates = torch.ones(2, net.num_filter_gates)
    gates[0, :16] = 0
    gates[0, :5] = 1                                       # block 0: image 0 opens filters 0-4,
    gates[1, :16] = 0
    gates[1, 3:10] = 1                                     # image 1 opens 3-9 but skips block 0
    gates[0, 16 + 32] = 0.5                                # block 2: a gate that scales
    plan = net.execution_plan(torch.zeros(2, 3, 32, 32), decisions, gates)
    assert _ways(plan) == ["gather", "all", "all"]
    assert plan[0].filters[0].tolist() == [0, 1, 2, 3, 4] and plan[0].gated == (False,)
    assert plan[1].filters == (None,) and plan[1].gated == (False,)     # every filter, every gate 1
    assert plan[2].filters == (None,) and plan[2].gated == (True,)
    monkeypatch.setattr(skipping, "FILTER_BLOCK", 8)       # padded with closed filters 5, 6, 7
    plan = net.execution_plan(torch.zeros(2, 3, 32, 32), decisions, gates)
    assert plan[0].filters[0].tolist() == list(range(8)) and plan[0].gated == (True,)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("with_gates", [False, True])
def test_masked_and_skipped_agree_whichever_way_a_block_runs(share, with_gates):
    net = settled_resnet(20, seed=2)
    net.skipping_policy = SkippingPolicy(gather_at_most=share)   # 0: never gather; 1: every partial block
    x = torch.randn(8, 3, 32, 32)
    decisions = random_decisions(8, net.num_blocks, keep=0.6, seed=3)
    decisions[:, 4] = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0.0])   # 7 of 8: gathered only at share 1
    gates = (torch.rand(8, net.num_filter_gates, generator=torch.Generator().manual_seed(5)) < 0.7).float() \
        if with_gates else None
    ways = set(_ways(net.execution_plan(x, decisions, gates)))
    assert ("gather" in ways) == (share > 0)
    with torch.no_grad():
        masked = net(x, decisions=decisions, filter_gates=gates)
        skipped = net(x, decisions=decisions, filter_gates=gates, mode="skipped")
    assert (masked - skipped).abs().max() <= 1e-4


class SyncRecorder(TorchDispatchMode):
    """Records the synchronising operators dispatched once ``armed`` (set when the network's stem
    has run: the plan is made before it), apart from those inside ``plan_execution``."""

    def __init__(self):
        super().__init__()
        self.armed, self.planning, self.syncs, self.plans = False, False, [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.armed and not self.planning and func.name() in SYNCING:
            self.syncs.append(func.name())
        return func(*args, **(kwargs or {}))


def _record_syncs(backbone, call, monkeypatch):
    """Run ``call()`` without autograd; the synchronisations after ``backbone``'s stem, and how
    many plans were made after it."""
    recorder = SyncRecorder()
    plan = skipping.plan_execution

    def counted_plan(*args, **kwargs):
        recorder.planning = True
        recorder.plans += recorder.armed
        try:
            return plan(*args, **kwargs)
        finally:
            recorder.planning = False

    for module in (backbones, skipping):
        monkeypatch.setattr(module, "plan_execution", counted_plan)
    handle = backbone.stem.register_forward_hook(lambda *_: setattr(recorder, "armed", True))
    try:
        with torch.no_grad(), recorder:
            call()
    finally:
        handle.remove()
    return recorder


def _global_cases():
    torch.manual_seed(0)
    net = settled_resnet(20, seed=1)
    x = torch.randn(6, 3, 32, 32)
    decisions = random_decisions(6, net.num_blocks, keep=0.5, seed=0)
    gates = (torch.rand(6, net.num_filter_gates) < 0.6).float()
    return net, x, {"fixed decisions": {"decisions": decisions}, "filter gates": {"filter_gates": gates},
                    "both": {"decisions": decisions, "filter_gates": gates},
                    "test-time drops of 1/p": {"decisions": decisions * 2}}


@pytest.mark.parametrize("case", ["fixed decisions", "filter gates", "both", "test-time drops of 1/p"])
@pytest.mark.parametrize("batch", [1, 6])
def test_decisions_known_up_front_are_read_back_once_and_the_blocks_never_wait(case, batch, monkeypatch):
    net, x, cases = _global_cases()
    given = {key: value[:batch] for key, value in cases[case].items()}
    passes = []
    recorder = _record_syncs(net, lambda: passes.append(net(x[:batch], mode="skipped", return_record=True, **given)),
                             monkeypatch)
    assert recorder.syncs == [] and recorder.plans == 0, recorder.syncs   # planned before the stem
    record = passes[0][1]
    assert record.plan_reads == 1
    assert list(record.ways) == _ways(net.execution_plan(x[:batch], given.get("decisions"), given.get("filter_gates")))


@pytest.mark.parametrize("name", ["GaterNet", "BlockDrop"])
def test_a_global_decider_s_network_never_waits_inside_the_block_loop(name, monkeypatch):
    net = _dynamic_networks("cpu")[name]
    recorder = _record_syncs(net.backbone, lambda: net(model_inputs(_images(8))), monkeypatch)
    assert recorder.syncs == [] and recorder.plans == 0, recorder.syncs


def test_a_local_decider_is_read_back_once_per_gated_block_and_nowhere_else(monkeypatch):
    net = _dynamic_networks("cpu")["AIG"]
    passes = []
    recorder = _record_syncs(net.backbone, lambda: passes.append(net(model_inputs(_images(8)), return_record=True)),
                             monkeypatch)
    assert recorder.syncs == [] and recorder.plans == len(net.decider.gated_blocks) == passes[0][1].plan_reads
    with torch.no_grad():
        _, masked = net(model_inputs(_images(8)), mode="masked", return_record=True)
    assert masked.plan_reads == 0 and masked.ways == ("all",) * net.num_blocks


def test_the_recorder_catches_a_synchronisation_that_comes_back_into_the_loop(monkeypatch):
    net, x, cases = _global_cases()
    scaled = backbones.scaled_residual

    def scaled_after_a_check(residual, run, is_scaled):      # the old "are they all ones?" test
        torch.equal(run, torch.ones_like(run))
        return scaled(residual, run, is_scaled)

    monkeypatch.setattr(backbones, "scaled_residual", scaled_after_a_check)
    recorder = _record_syncs(net, lambda: net(x, mode="skipped", **cases["fixed decisions"]), monkeypatch)
    assert "aten::equal" in recorder.syncs


@pytest.mark.cuda
@pytest.mark.parametrize("batch,share", [(1, None), (64, None), (64, 1.0)])
def test_on_cuda_the_plan_reads_back_once_and_the_blocks_never_synchronise(batch, share):
    net = settled_resnet(20, seed=1).cuda().to(memory_format=torch.channels_last)
    if share is not None:   # gather every partial block and slice the filters (a GPU's policy does neither at 64)
        net.skipping_policy = SkippingPolicy(gather_at_most=share)
    x = torch.randn(batch, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    decisions = random_decisions(batch, net.num_blocks, keep=0.5, seed=0).cuda()
    gates = (torch.rand(batch, net.num_filter_gates, device="cuda") < 0.6).float()
    with torch.no_grad():
        net(x, decisions=decisions, filter_gates=gates, mode="skipped")   # warm-up: caches, pinned memory
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                net.execution_plan(x, decisions, gates)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert len([w for w in caught if "called a synchronizing" in str(w.message)]) == 1, [str(w.message) for w in caught]
        handle = net.stem.register_forward_hook(lambda *_: torch.cuda.set_sync_debug_mode("error"))
        try:
            net(x, decisions=decisions, filter_gates=gates, mode="skipped")
        finally:
            torch.cuda.set_sync_debug_mode("default")
            handle.remove()


@pytest.mark.parametrize("batch,blocks", [(1, 9), (5, 4), (64, 54)])
def test_small_plans_in_python_and_large_ones_in_tensors_agree(batch, blocks, monkeypatch):
    decisions = random_decisions(batch, blocks, keep=0.5, seed=batch) * torch.tensor([1.0, 2.0]).repeat(blocks)[:blocks]
    decisions[:, 0] = 0                                   # a block nobody runs
    groups = [(16,)] * blocks
    plans = []
    for small in (0, 10**6):                              # every plan in tensors, then every plan in Python
        monkeypatch.setattr(skipping, "SMALL_PLAN", small)
        plans.append(skipping.plan_execution(decisions, None, groups, batch, SkippingPolicy(gather_at_most=0.9)))
    tensors, python = plans
    assert _ways(tensors) == _ways(python) and [s.scaled for s in tensors] == [s.scaled for s in python]
    assert all(a.images is None and b.images is None or torch.equal(a.images, b.images) for a, b in zip(tensors, python))
    bad = decisions.clone()
    bad[-1, -1] = float("nan")
    for small in (0, 10**6):
        monkeypatch.setattr(skipping, "SMALL_PLAN", small)
        with pytest.raises(ValueError, match="decisions must be finite"):
            skipping.plan_execution(bad, None, groups, batch)


def test_a_gather_must_leave_out_enough_images_for_the_policy():
    decisions = torch.ones(8, 2)
    decisions[:3, 0] = 0                                  # block 0: 5 of 8 run, 3 left out
    decisions[:6, 1] = 0                                  # block 1: 2 of 8 run, 6 left out
    policy = SkippingPolicy(gather_at_most=0.9, gather_saving_at_least=4)
    assert _ways(skipping.plan_execution(decisions, None, [(16,)] * 2, 8, policy)) == ["all", "gather"]


def test_where_the_policy_says_waiting_does_not_pay_local_and_filter_decisions_run_masked(monkeypatch):
    # A GPU's policy, tried on the CPU: AIG's blocks and GaterNet's filters are not read back at all.
    nets = _dynamic_networks("cpu")
    x = model_inputs(_images(8))
    for name in ("AIG", "GaterNet"):
        net = nets[name]
        net.backbone.skipping_policy = SkippingPolicy(plan_local_decisions=False, slice_filters=False)
        passes = []
        recorder = _record_syncs(net.backbone, lambda: passes.append(net(x, mode="skipped", return_record=True)),
                                 monkeypatch)
        assert recorder.syncs == [] and recorder.plans == 0 and passes[0][1].plan_reads == 0, name
        with torch.no_grad():
            assert torch.allclose(net(x, mode="skipped"), net(x, mode="masked"), atol=1e-5), name
    assert skipping.policy_for("cuda") == skipping.POLICIES["cuda"] and skipping.policy_for("cpu").slice_filters


def test_filter_gates_the_policy_does_not_slice_are_still_checked_for_nan():
    net = cifar_resnet(8).eval()
    net.skipping_policy = SkippingPolicy(slice_filters=False)   # nothing read back for the plan
    gates = torch.ones(2, net.num_filter_gates)
    gates[1, 7] = float("nan")
    with pytest.raises(ValueError, match="filter gates must be finite"):
        net(torch.randn(2, 3, 32, 32), filter_gates=gates, mode="skipped")
