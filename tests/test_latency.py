import pytest
import torch

from dyninf.network.backbones import cifar_resnet
import dyninf.measure.latency as latency
from dyninf.measure.latency import (ABOVE_IDEAL_NOISE, BATCH_ONE_IMAGES, FASTER, MASKED_NOISE, NO_DIFFERENCE, SLOWER,
                            Speedup, compare_modes, cuda_graph_replay, measure_training_step, measure_training_steps,
                            paired_speedup, speedup_reading, speedup_verdict, time_calls, time_rounds, timing_slices,
                            training_step_verdict)


def runs_of(order: list[str]) -> list[str]:
    """``order`` with repeats in a row collapsed: which call ran when, block by block."""
    return [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]


def test_training_step_timing_is_positive_and_trains_the_model():
    # Not a performance claim (those live in the notebooks and benchmarks): the helper runs the
    # work it times, leaves the model in train mode and returns seconds.
    net = cifar_resnet(8)
    before = net.stem[0].weight.clone()
    seconds = measure_training_step(net, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]),
                                    min_run_time=0.05)
    assert 0 < seconds < 10 and net.training
    assert not torch.equal(before, net.stem[0].weight)


def test_training_steps_are_timed_in_interleaved_rounds_one_mean_per_round():
    nets = {"plain": cifar_resnet(8), "other": cifar_resnet(8)}
    before = {name: net.stem[0].weight.clone() for name, net in nets.items()}
    order = []
    for name, net in nets.items():
        net.register_forward_pre_hook(lambda module, args, name=name: order.append(name))
    seconds = measure_training_steps(nets, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]),
                                     rounds=3, min_run_time=0.06)
    assert set(seconds) == {"plain", "other"}
    assert all(len(rounds) == 3 and all(0 < s < 10 for s in rounds) for rounds in seconds.values())
    assert runs_of(order) == ["plain", "other"] * 3
    assert all(net.training and not torch.equal(before[name], net.stem[0].weight) for name, net in nets.items())


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


def test_time_rounds_times_every_call_once_per_round_in_turn():
    order = []
    calls = {name: (lambda x, name=name: order.append(name)) for name in ("a", "b", "c")}
    seconds = time_rounds(calls, [(torch.tensor(1.0),)], min_run_time=0.006, rounds=4)
    assert runs_of(order) == ["a", "b", "c"] * 4
    assert set(seconds) == {"a", "b", "c"} and all(len(s) == 4 and min(s) > 0 for s in seconds.values())
    assert latency.ROUNDS == 5


def test_time_calls_keeps_each_calls_fastest_round(monkeypatch):
    monkeypatch.setattr(latency, "time_rounds", lambda calls, inputs, min_run_time, rounds: {
        "a": [3.0, 1.0, 2.0], "b": [0.5, 0.7, 0.4]})
    assert time_calls({"a": None, "b": None}, [(1,)]) == {"a": 1.0, "b": 0.4}


def test_a_paired_speed_up_has_its_range_over_the_rounds_by_hand():
    # fastest rounds 1.0 / 0.5; round by round 1.0/0.5, 1.1/0.6, 1.0/0.5
    faster = paired_speedup([1.0, 1.1, 1.0], [0.5, 0.6, 0.5])
    assert faster == pytest.approx(Speedup(2.0, 1.1 / 0.6, 2.0)) and faster.reading == FASTER
    slower = paired_speedup([1.0, 1.0], [2.0, 2.5])
    assert slower == pytest.approx(Speedup(0.5, 0.4, 0.5)) and slower.reading == SLOWER
    # 1.11x from the fastest rounds (above the old 10% band), but round 2 ran the case slower
    straddling = paired_speedup([1.0, 1.0, 1.0], [0.9, 1.05, 0.95])
    assert straddling == pytest.approx(Speedup(1 / 0.9, 1 / 1.05, 1 / 0.9))
    assert straddling.reading == NO_DIFFERENCE and speedup_reading(straddling, ideal=2.0) == NO_DIFFERENCE
    with pytest.raises(ValueError, match="same number"):
        paired_speedup([1.0, 1.0], [1.0])


def test_readings_that_cannot_be_true_are_flagged_as_noise():
    assert speedup_reading(Speedup(1.2, 1.05, 1.3), masked=True) == MASKED_NOISE
    assert speedup_reading(Speedup(1.02, 0.97, 1.06), masked=True) == NO_DIFFERENCE
    assert speedup_reading(Speedup(0.9, 0.85, 0.95), masked=True) == SLOWER
    # skipped: flagged only where even the slowest round beats the ideal from MACs
    assert speedup_reading(Speedup(2.2, 2.1, 2.2), ideal=1.94) == ABOVE_IDEAL_NOISE
    assert speedup_reading(Speedup(2.0, 1.9, 2.0), ideal=1.94) == FASTER
    assert speedup_reading(Speedup(1.2, 1.1, 1.2), ideal=1.0) == ABOVE_IDEAL_NOISE   # nothing skipped


def test_compare_modes_reports_how_far_masked_and_skipped_outputs_differ():
    def run(x, shift, mode):
        return x + (shift if mode == "skipped" else 0)

    timed = compare_modes(lambda x: x, run, [(torch.zeros(2), 0.25), (torch.zeros(2), 0.5)], min_run_time=0.01)
    assert timed["max |masked - skipped|"] == 0.5
    assert set(timed) == {"plain", "masked", "skipped", "max |masked - skipped|"}


def test_the_ideal_speedup_is_the_plain_macs_over_what_the_images_spend_by_hand():
    from dyninf.network.cost import network_cost
    from dyninf.deciders import BlockDropPolicy, StochasticDepth
    from dyninf.network.dynamic import DynamicNetwork
    from dyninf.measure.latency import ideal_speedup

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
    from dyninf.network.dynamic import DynamicNetwork
    from dyninf.deciders import StochasticDepth
    from dyninf.measure.latency import speedup_table

    plain = cifar_resnet(8)
    net = DynamicNetwork(cifar_resnet(8), StochasticDepth(3, 0.5)).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    table = speedup_table(plain, net, images, [1, 4], "SD", min_run_time=0.01)
    assert list(table["batch"]) == [1, 1, 4, 4] and list(table["mode"]) == ["SD masked", "SD skipped"] * 2
    assert table["ideal speed-up"].tolist() == pytest.approx([1.0] * 4)   # every block runs at test time
    assert ((table["speed-up"] - table["plain ms"] / table["ms per batch"]).abs() < 1e-9).all()
    assert ((table["realized / ideal"] - table["speed-up"] / table["ideal speed-up"]).abs() < 1e-9).all()
    assert ((table["speed-up low"] <= table["speed-up"] + 1e-12) & (table["speed-up"] <= table["speed-up high"] + 1e-12)).all()
    # neither masked mode nor skipping with nothing to skip (ideal 1) can read as faster
    assert set(table["reading"]) <= {SLOWER, NO_DIFFERENCE, MASKED_NOISE, ABOVE_IDEAL_NOISE}
    assert not (table["mode"].str.endswith("skipped") & (table["reading"] == MASKED_NOISE)).any()
    assert not (table["mode"].str.endswith("masked") & (table["reading"] == ABOVE_IDEAL_NOISE)).any()


def test_speedup_table_reads_each_row_from_its_rounds(monkeypatch):
    from dyninf.measure.latency import speedup_table

    def rounds(plain, run, inputs, min_run_time):   # hand-made seconds per round
        return {"plain": [1.0, 1.1, 1.0], "masked": [0.9, 1.0, 0.95], "skipped": [0.5, 0.6, 0.5]}, 0.0

    monkeypatch.setattr(latency, "time_modes", rounds)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    backbone = cifar_resnet(8)
    ideal = latency.ideal_speedup(backbone, backbone, images, torch.tensor([[1.0, 0, 1], [0, 1, 1]]))
    table = speedup_table(backbone, backbone, images, [2], "X", min_run_time=0.01,
                          decisions=torch.tensor([[1.0, 0, 1], [0, 1, 1]]))
    masked, skipped = table.iloc[0], table.iloc[1]
    assert masked["speed-up"] == pytest.approx(1 / 0.9) and masked["ms per batch"] == pytest.approx(900)
    assert (masked["speed-up low"], masked["speed-up high"]) == pytest.approx((1.0 / 0.95, 1.0 / 0.9))
    assert masked["reading"] == MASKED_NOISE
    assert (skipped["speed-up"], skipped["speed-up low"], skipped["speed-up high"]) == pytest.approx((2.0, 1.1 / 0.6, 2.0))
    assert skipped["ideal speed-up"] == pytest.approx(ideal) and ideal < 1.1 / 0.6
    assert skipped["reading"] == ABOVE_IDEAL_NOISE


def test_speedup_table_passes_fixed_decisions_with_their_images():
    from dyninf.measure.latency import ideal_speedup, speedup_table

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


def _table(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["batch", "mode", "speed-up", "speed-up low", "speed-up high",
                                       "ideal speed-up", "reading"])


def test_speedup_verdict_says_faster_slower_or_no_measurable_difference_from_the_rounds():
    table = _table([(1, "x masked", 0.98, 0.93, 1.04, 1.9, NO_DIFFERENCE),
                    (256, "x masked", 1.12, 1.05, 1.2, 1.9, MASKED_NOISE),
                    (1, "x skipped", 1.2, 1.15, 1.24, 1.96, FASTER),
                    (256, "x skipped", 0.42, 0.4, 0.44, 1.96, SLOWER),
                    (1, "z skipped", 1.8, 0.95, 2.5, 1.96, NO_DIFFERENCE)])
    # the mean saved 92% of the ideal time (1 - 1/1.8 over 1 - 1/1.96), a round was slower: the spread is why
    noisy = speedup_verdict(table, "z skipped", "cpu")
    assert "does not pay" not in noisy and "cannot tell z skipped mode from a plain network" in noisy
    cpu = speedup_verdict(table, "x skipped", "cpu")
    assert cpu.startswith("On CPU (") and (
        "x skipped: at batch 1 it ran faster than the plain network (1.20x; rounds 1.15-1.24x; ideal 1.96x from "
        "MACs); at batch 256 it ran slower than the plain network (0.42x; rounds 0.40-0.44x; ideal 1.96x from "
        "MACs). Where skipping does not pay here, its bookkeeping") in cpu
    assert "GPU" not in cpu
    masked = speedup_verdict(table, "x masked", "cpu")
    assert ("at batch 1 it showed no measurable difference from the plain network (0.98x; rounds 0.93-1.04x; "
            "ideal 1.90x from MACs); at batch 256 it read 1.12x (rounds 1.05-1.20x), faster than the plain network, "
            "which masked mode cannot be (it computes every block, and the decisions besides): timing noise (the "
            "plain network's rounds ran slow), not a gain.") in masked
    assert "Where skipping does not pay" in masked   # batch 1: no measurable difference
    with pytest.raises(ValueError, match="no rows of mode 'y skipped'"):
        speedup_verdict(table, "y skipped", "cpu")


def test_the_whole_set_ideal_is_set_beside_the_timed_images_and_below_1_says_no_skipping_can_pay():
    from dyninf.deciders import BlockDropPolicy
    from dyninf.network.dynamic import DynamicNetwork
    from dyninf.measure.latency import BATCH_ONE_IMAGES, ideal_speedup, whole_set_ideal_note

    plain = cifar_resnet(8)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    policy = BlockDropPolicy(3, depth=8, width=4)
    with torch.no_grad():   # keeps blocks 0 and 2 of every image: an ideal above 1
        policy.extractor.head[-1].weight.zero_()
        policy.extractor.head[-1].bias.copy_(torch.tensor([5.0, -5.0, 5.0]))
    net = DynamicNetwork(cifar_resnet(8), policy)
    text = whole_set_ideal_note(plain, net, images)
    assert text == (f"The table's ideal speed-ups are those of the images timed (at batch 1 the first {BATCH_ONE_IMAGES}, "
                    f"at a larger batch its first images); over all 5 test images the ideal is "
                    f"{ideal_speedup(plain, net, images):.3f}x.")
    with torch.no_grad():   # every block kept: the policy's own MACs on top of the plain network's
        policy.extractor.head[-1].bias.fill_(5.0)
    assert ideal_speedup(plain, net, images) < 1
    assert whole_set_ideal_note(plain, net, images).endswith(
        "below 1: on average these images spend more MACs than the plain network, so no way of skipping can "
        "make this network faster than it.")


def test_a_speed_up_above_the_ideal_is_called_noise_and_a_measured_one_needs_no_excuse():
    table = _table([(1, "x skipped", 1.5, 1.45, 1.6, 1.96, FASTER),
                    (256, "x skipped", 2.07, 2.01, 2.1, 1.94, ABOVE_IDEAL_NOISE)])
    text = speedup_verdict(table, "x skipped", "cpu")
    assert ("at batch 256 it read 2.07x (rounds 2.01-2.10x), above the ideal 1.94x from MACs that skipping can at "
            "most reach: timing noise (the plain network's rounds ran slow), not a gain.") in text
    assert "does not pay" not in text


def test_speedup_metrics_note_the_rounds_range_and_the_reading():
    from dyninf.tools.report import speedup_metrics

    table = _table([(1, "x skipped", 1.23456, 1.15, 1.3, 2.0, FASTER),
                    (256, "x skipped", 2.07, 2.01, 2.1, 1.94, ABOVE_IDEAL_NOISE)])
    table["realized / ideal"] = table["speed-up"] / table["ideal speed-up"]
    metrics = speedup_metrics(table, "x skipped")
    assert [(m.name, m.value) for m in metrics] == [("x skipped speed-up, batch 1", 1.235),
                                                    ("x skipped speed-up, batch 256", 2.07)]
    assert [m.note for m in metrics] == [
        "ideal 2.00x; realized/ideal 0.62; rounds 1.15-1.30x: faster",
        "ideal 1.94x; realized/ideal 1.07; rounds 2.01-2.10x: noise: above the ideal from MACs"]


def test_training_step_verdict_by_hand():
    fast = training_step_verdict(0.81, 0.73, "cpu", "stochastic-depth", rounds=(0.78, 0.85))
    assert ("a stochastic-depth training step ran 1.23x faster than a plain one (time ratio 0.81, rounds 0.78-0.85; "
            "ideal, from MACs: 0.73).") in fast and "does not pay" not in fast
    same = training_step_verdict(0.97, 0.73, "cpu", "stochastic-depth", rounds=(0.95, 1.03))
    assert ("showed no measurable difference from a plain one (time ratio 0.97, rounds 0.95-1.03; ideal, from "
            "MACs: 0.73). Where stochastic-depth does not pay") in same
    # the mean near the ideal, a round above 1: the spread, not the bookkeeping, is why
    noisy = training_step_verdict(0.74, 0.73, "cpu", "stochastic-depth", rounds=(0.55, 1.01))
    assert "showed no measurable difference" in noisy and "does not pay" not in noisy
    assert "the rounds disagree" in noisy and "cannot tell a stochastic-depth step from a plain network" in noisy
    slow = training_step_verdict(1.2, 0.73, "cpu", "stochastic-depth", rounds=(1.1, 1.3))
    assert "ran slower than a plain one (time ratio 1.20, rounds 1.10-1.30;" in slow and "does not pay" in slow
    single = training_step_verdict(0.81, 0.73, "cpu", "stochastic-depth")
    assert "ran 1.23x faster than a plain one (time ratio 0.81, a single timing, its spread unmeasured;" in single
    with pytest.raises(ValueError, match="lowest, highest"):
        training_step_verdict(0.9, 0.73, "cpu", "stochastic-depth", rounds=(0.95, 0.85))


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


def test_a_time_breakdown_splits_each_call_s_time_into_its_parts():
    import warnings

    from dyninf.measure.latency import time_breakdown

    weight = torch.randn(8, 3, 3, 3)
    calls = {"python only": lambda x: sum(range(2000)),          # no operator: all of it the host's
             "one convolution": lambda x: torch.nn.functional.conv2d(x, weight, padding=1)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # nothing leaks (the profiler's own messages)
        table = time_breakdown(calls, [(torch.randn(1, 3, 16, 16),)] * 4, min_run_time=0.02).set_index("call")
    parts = table[["convolutions ms", "other operators ms", "host between operators ms"]]
    assert (parts >= 0).all().all() and parts.sum(1).to_numpy() == pytest.approx(table["ms"].to_numpy())
    assert table.loc["python only", "host between operators ms"] == pytest.approx(table.loc["python only", "ms"])
    assert table.loc["one convolution", "convolutions ms"] > 0


def test_the_torchscript_baseline_gives_the_network_s_outputs_for_new_inputs():
    import warnings

    from dyninf.measure.latency import torchscript_frozen

    net = cifar_resnet(8).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # TorchScript's deprecation is not the user's
        frozen = torchscript_frozen(net, torch.randn(1, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (frozen(x) - net(x)).abs().max() <= 1e-5
