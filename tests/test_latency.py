import pytest
import torch

from dyninf.backbones import cifar_resnet
from dyninf.latency import (BATCH_ONE_IMAGES, compare_modes, measure_training_step, speedup_verdict,
                            time_calls, timing_slices, training_step_verdict, cuda_graph_replay)


def test_training_step_timing_is_positive_and_trains_the_model():
    # Not a performance claim (those live in the notebooks and benchmarks): the helper runs the
    # work it times, leaves the model in train mode and returns seconds.
    net = cifar_resnet(8)
    before = net.stem[0].weight.clone()
    seconds = measure_training_step(net, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]),
                                    min_run_time=0.05)
    assert 0 < seconds < 10 and net.training
    assert not torch.equal(before, net.stem[0].weight)


def test_batch_one_cycles_through_several_images_and_a_batch_is_one_call():
    assert timing_slices(40, 1) == [slice(i, i + 1) for i in range(BATCH_ONE_IMAGES)]
    assert timing_slices(3, 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert timing_slices(40, 32) == [slice(0, 32)]
    with pytest.raises(ValueError, match="batch_size <= 40"):
        timing_slices(40, 64)


def test_time_calls_runs_every_call_on_every_input_without_autograd():
    seen = {"a": [], "b": []}

    def record(name):
        return lambda x: seen[name].append((x.item(), torch.is_grad_enabled()))

    inputs = [(torch.tensor(1.0),), (torch.tensor(2.0),)]
    seconds = time_calls({"a": record("a"), "b": record("b")}, inputs, min_run_time=0.01, rounds=2)
    assert set(seconds) == {"a", "b"} and all(0 < s < 1 for s in seconds.values())
    for calls in seen.values():
        assert {value for value, _ in calls} == {1.0, 2.0} and not any(grad for _, grad in calls)
    with pytest.raises(ValueError, match="at least one input"):
        time_calls({"a": record("a")}, [])


def test_compare_modes_reports_how_far_masked_and_skipped_outputs_differ():
    def run(x, shift, mode):
        return x + (shift if mode == "skipped" else 0)

    timed = compare_modes(lambda x: x, run, [(torch.zeros(2), 0.25), (torch.zeros(2), 0.5)], min_run_time=0.01)
    assert timed["max |masked - skipped|"] == 0.5
    assert set(timed) == {"plain", "masked", "skipped", "max |masked - skipped|"}


def test_the_ideal_speedup_is_the_plain_macs_over_what_the_images_spend_by_hand():
    from dyninf.cost import network_cost
    from dyninf.deciders import BlockDropPolicy, StochasticDepth
    from dyninf.dynamic import DynamicNetwork
    from dyninf.latency import ideal_speedup

    plain = cifar_resnet(8)   # a stem, 3 blocks and a head
    cost = network_cost(plain)
    always = cost.stem_macs + cost.head_macs
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    # fixed decisions: each block runs for 2 of the 3 images
    decisions = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])
    assert ideal_speedup(plain, plain, images, decisions) == pytest.approx(
        cost.total_macs / (always + 2 / 3 * sum(cost.block_macs)))
    # stochastic depth runs every block at test time and nothing decides: no speed-up
    assert ideal_speedup(plain, DynamicNetwork(cifar_resnet(8), StochasticDepth(3)), images) == pytest.approx(1.0)
    # a policy that keeps blocks 0 and 2 of every image: those blocks, and the policy's own MACs
    policy = BlockDropPolicy(3, depth=8, width=4)
    with torch.no_grad():
        policy.extractor.head[-1].weight.zero_()
        policy.extractor.head[-1].bias.copy_(torch.tensor([5.0, -5.0, 5.0]))
    spent = always + cost.block_macs[0] + cost.block_macs[2] + policy.macs_and_params()[0]
    assert ideal_speedup(plain, DynamicNetwork(cifar_resnet(8), policy), images) == pytest.approx(cost.total_macs / spent)
    with pytest.raises(TypeError, match="needs a DynamicNetwork, which decides for itself, or fixed decisions"):
        ideal_speedup(plain, plain, images)


def test_speedup_table_rows_and_ratios():
    from dyninf.dynamic import DynamicNetwork
    from dyninf.deciders import StochasticDepth
    from dyninf.latency import speedup_table

    plain = cifar_resnet(8)
    net = DynamicNetwork(cifar_resnet(8), StochasticDepth(3, 0.5)).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    table = speedup_table(plain, net, images, [1, 4], "SD", min_run_time=0.01)
    assert list(table["batch"]) == [1, 1, 4, 4] and list(table["mode"]) == ["SD masked", "SD skipped"] * 2
    assert table["ideal speed-up"].tolist() == pytest.approx([1.0] * 4)   # every block runs at test time
    assert ((table["speed-up"] - table["plain ms"] / table["ms per batch"]).abs() < 1e-9).all()
    assert ((table["realized / ideal"] - table["speed-up"] / table["ideal speed-up"]).abs() < 1e-9).all()


def test_speedup_table_passes_fixed_decisions_with_their_images():
    from dyninf.latency import ideal_speedup, speedup_table

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.seen = cifar_resnet(8), []

        def forward(self, x, decisions=None, mode="masked"):
            self.seen.append((len(x), None if decisions is None else decisions.tolist()))
            return self.backbone(x, decisions=decisions, mode=mode)

    net = Recorder()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    decisions = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]])
    table = speedup_table(net.backbone, net, images, [1, 3], "fixed", min_run_time=0.01, decisions=decisions)
    assert list(table["mode"]) == ["fixed masked", "fixed skipped"] * 2
    # the ideal from the decisions of the images timed: at batch 1 the 3 images one by one, at 3 all of them
    assert table["ideal speed-up"].tolist() == pytest.approx([ideal_speedup(net.backbone, net, images, decisions)] * 4)
    one_by_one = {tuple(d[0]) for n, d in net.seen if n == 1}   # each image with its own row
    assert one_by_one == {tuple(row) for row in decisions.tolist()}
    assert all(d == decisions.tolist() for n, d in net.seen if n == 3)


def test_speedup_verdict_says_faster_slower_or_about_as_fast_from_the_numbers():
    import pandas as pd

    table = pd.DataFrame({"batch": [1, 256, 1, 256], "mode": ["x masked", "x masked", "x skipped", "x skipped"],
                          "speed-up": [0.95, 0.5, 1.71, 0.42], "ideal speed-up": [1.9, 1.9, 1.96, 1.96]})
    cpu = speedup_verdict(table, "x skipped", "cpu")
    assert cpu.startswith("On CPU") and "at batch 1 it ran 1.71x faster than the plain network (ideal 1.96x" in cpu
    assert "at batch 256 it ran slower than (2.38x the time of) the plain network" in cpu
    assert "bookkeeping" in cpu and "GPU" not in cpu
    assert "about as fast as (0.95x)" in speedup_verdict(table, "x masked", "cpu")
    quick = table.assign(**{"speed-up": [1.5, 1.5, 1.5, 1.5]})
    assert "does not pay" not in speedup_verdict(quick, "x skipped", "cpu")
    with pytest.raises(ValueError, match="no rows of mode 'y skipped'"):
        speedup_verdict(table, "y skipped", "cpu")


def test_training_step_verdict_by_hand():
    assert "ran 1.23x faster than a plain one (time ratio 0.81; ideal, from MACs: 0.73)" in \
        training_step_verdict(0.81, 0.73, "cpu", "stochastic-depth")
    slow = training_step_verdict(1.04, 0.73, "cpu", "stochastic-depth")
    assert "about as fast as (0.96x) a plain one" in slow and "Where stochastic-depth does not pay" in slow


def test_a_cuda_graph_needs_inputs_on_a_cuda_device():
    with pytest.raises(ValueError, match="needs inputs on a CUDA device, got cpu"):
        cuda_graph_replay(cifar_resnet(8).eval(), torch.randn(1, 3, 32, 32))


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 16])
def test_the_plain_network_replayed_as_a_cuda_graph_gives_its_outputs_for_each_new_input(batch):
    net = cifar_resnet(20).cuda().eval()
    replay = cuda_graph_replay(net, torch.randn(batch, 3, 32, 32, device="cuda"))
    for seed in range(2):   # the graph reads each new input, not the one it was recorded with
        x = torch.randn(batch, 3, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        with torch.no_grad():
            assert torch.allclose(replay(x), net(x), atol=1e-5)
