import pytest
import torch

from torchvision.ops import stochastic_depth

import dyninf.network.skipping as skipping
from dyninf.network.backbones import cifar_resnet
from dyninf.deciders import StochasticDepth, survival_probabilities
from dyninf.network.dynamic import DynamicNetwork


def test_survival_probabilities_by_hand():
    assert survival_probabilities(4, 0.5).tolist() == pytest.approx([0.875, 0.75, 0.625, 0.5])
    assert survival_probabilities(9, 0.2)[-1].item() == pytest.approx(0.2)
    assert survival_probabilities(3, 1.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("p_last", [0, -0.1, 1.5, float("nan")])
def test_p_last_outside_zero_one_is_a_clear_error(p_last):
    with pytest.raises(ValueError, match=r"p_L\) must be in \(0, 1\]"):
        StochasticDepth(9, p_last)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mode must be one of \('row', 'batch'\)"):
        StochasticDepth(9, 0.5, mode="column")


def test_expected_fraction_dropped_by_hand():
    # (1 - p_L)(L + 1) / (2L) for the linear rule
    assert StochasticDepth(4, 0.5).expected_fraction_dropped() == pytest.approx(0.5 * 5 / 8)


def test_row_mode_keep_rate_per_block_and_scaling():
    decider = StochasticDepth(4, 0.5, mode="row").train()
    probe = torch.zeros(20_000, 1, 1, 1)
    for k, p in enumerate(survival_probabilities(4, 0.5).tolist()):
        draws = decider(k, probe)
        values = draws.unique().tolist()
        assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / p)
        assert (draws > 0).float().mean().item() == pytest.approx(p, abs=0.015)
        assert draws.mean().item() == pytest.approx(1.0, abs=0.03)  # same expectation as no drops


def test_batch_mode_draws_once_per_batch_at_the_right_rate():
    decider = StochasticDepth(4, 0.5, mode="batch").train()
    probe = torch.zeros(8, 1, 1, 1)
    kept = []
    for _ in range(4000):
        draw = decider(3, probe)      # one number for the whole batch, drawn on the host
        assert isinstance(draw, float) and draw in (0.0, pytest.approx(2.0))
        kept.append(draw > 0)
    assert sum(kept) / len(kept) == pytest.approx(0.5, abs=0.03)


def test_batch_mode_skips_without_planning_and_as_torchvision_draws_it():
    """Skipped mode drops or runs each block from the host's number alone (no plan, nothing read
    back), and the draws are torchvision's batch-mode draws from the same generator."""
    net = _sd_net().train()
    plans = []
    original = skipping.plan_execution
    skipping.plan_execution = lambda *args, **kwargs: plans.append(1) or original(*args, **kwargs)
    images = torch.randn(5, 3, 32, 32)
    try:
        torch.manual_seed(4)
        _, taken, record = net(images, return_decisions=True, return_record=True)
    finally:
        skipping.plan_execution = original
    assert plans == [] and record.plan_reads == 0
    assert list(record.ways) == ["skip" if d == 0 else "all" for d in taken[0].tolist()]
    torch.manual_seed(4)
    expected = [stochastic_depth(torch.ones(5), p=1 - p, mode="batch")[0].item()
                for p in survival_probabilities(net.num_blocks, 0.5).tolist()]
    assert taken[0].tolist() == pytest.approx(expected) and (taken == taken[0]).all()


def _sd_net(mode="batch", train_mode="skipped"):
    torch.manual_seed(0)
    backbone = cifar_resnet(8)
    return DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, 0.5, mode=mode),
                          train_mode=train_mode, eval_mode="skipped")


def test_eval_mode_is_the_deterministic_plain_network():
    net = _sd_net().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        first, second = net(x), net(x)
        assert torch.equal(first, second)
        assert torch.equal(first, net.backbone(x))


def test_batch_level_skipping_equals_masking_with_the_same_draws():
    x = torch.randn(6, 3, 32, 32)
    for seed in range(5):
        outputs = {}
        for mode in ("masked", "skipped"):
            net = _sd_net().train()
            torch.manual_seed(seed)
            outputs[mode] = net(x, mode=mode)
        # whole-batch decisions: even BatchNorm's batch statistics see the same images
        assert torch.allclose(outputs["masked"], outputs["skipped"], atol=1e-5)


def test_training_draws_differ_between_steps():
    net = _sd_net(mode="row", train_mode="masked").train()
    x = torch.randn(16, 3, 32, 32)
    _, first = net(x, return_decisions=True)
    _, second = net(x, return_decisions=True)
    assert not torch.equal(first, second)


def test_the_linear_decay_by_hand_with_the_papers_default_and_one_block():
    assert survival_probabilities(4).tolist() == [0.875, 0.75, 0.625, 0.5]     # p_L = 0.5
    assert survival_probabilities(3, 0.5).dtype == torch.float32
    assert survival_probabilities(1, 0.2).tolist() == pytest.approx([0.2])
    with pytest.raises(ValueError, match="^num_blocks must be positive, got 0$"):
        survival_probabilities(0)


def test_stochastic_depth_saves_nothing_in_a_checkpoint_and_costs_nothing_at_test_time():
    decider = StochasticDepth(9, 0.5)
    assert decider.state_dict() == {}            # the survival probabilities follow from p_L
    assert decider.macs_and_params() == (0, 0)
