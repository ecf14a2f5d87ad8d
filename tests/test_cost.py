import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dyninf.network import skipping
from dyninf.network.backbones import cifar_resnet
from dyninf.network.cost import layer_macs, network_cost
from dyninf.course.published import CIFAR_RESNETS


def test_resnet20_costs_by_hand():
    cost = network_cost(cifar_resnet(20))
    assert cost.stem_macs == 32 * 32 * 16 * 3 * 9                     # 3x3 conv, 3 -> 16 channels
    assert cost.block_macs[0] == 2 * 32 * 32 * 16 * 16 * 9            # two 3x3 convs, 16 -> 16
    assert cost.block_macs[3] == 16 * 16 * 32 * 16 * 9 + 16 * 16 * 32 * 32 * 9  # stride 2, 16 -> 32
    assert cost.block_macs[8] == 2 * 8 * 8 * 64 * 64 * 9
    assert cost.head_macs == 64 * 10
    assert cost.stem_params == 3 * 16 * 9 + 2 * 16                     # conv + BN scale and shift
    assert cost.block_params[0] == 2 * 16 * 16 * 9 + 2 * 2 * 16
    assert cost.head_params == 64 * 10 + 10


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_macs_agree_with_pytorchs_flop_counter(depth):
    net = cifar_resnet(depth).eval()
    cost = network_cost(net)
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    assert cost.total_macs * 2 == counter.get_total_flops()
    with torch.no_grad():
        hidden = net.stem(x)
        for k, block in enumerate(net.blocks):
            with FlopCounterMode(display=False) as counter:
                hidden = block(hidden)
            assert cost.block_macs[k] * 2 == counter.get_total_flops(), k


@pytest.mark.parametrize("depth", sorted(CIFAR_RESNETS))
def test_sizes_match_the_published_figures(depth):
    cost = network_cost(cifar_resnet(depth))
    published = CIFAR_RESNETS[depth]
    assert cost.total_params == pytest.approx(published["params"], rel=0.03)
    assert cost.total_macs == pytest.approx(published["macs"], rel=0.03)
    assert cost.total_params == sum(p.numel() for p in cifar_resnet(depth).parameters())


def test_spent_macs_by_hand():
    cost = network_cost(cifar_resnet(8))
    always = cost.stem_macs + cost.head_macs
    decisions = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float32)
    spent = cost.spent_macs(decisions)
    expected = [cost.total_macs, always, always + cost.block_macs[0] + cost.block_macs[2],
                always + cost.block_macs[1]]
    assert spent.tolist() == expected
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        cost.spent_macs(torch.ones(4, 4))


def test_counting_leaves_the_network_as_it_was():
    net = cifar_resnet(8).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    network_cost(net)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats untouched
    assert not any(m._forward_hooks for m in net.modules())


def test_spent_macs_with_filter_gates_by_hand():
    cost = network_cost(cifar_resnet(8))                  # blocks of 16, 32, 64 gated filters
    assert cost.block_filter_groups == ((16,), (32,), (64,))
    gates = torch.ones(2, 112)
    gates[0, :8] = 0                                       # image 0: half of block 0's filters
    gates[1, 16:48] = 0                                    # image 1: all of block 1's
    decisions = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    b0, b1, b2 = cost.block_macs
    assert cost.spent_macs(filter_gates=gates).tolist() == [cost.total_macs - b0 / 2, cost.total_macs - b1]
    assert cost.spent_macs(decisions, gates).tolist() == [cost.total_macs - b0 / 2, cost.total_macs - b1 - b2]
    with pytest.raises(ValueError, match=r"filter gates must have shape \(2, 112\)"):
        cost.spent_macs(filter_gates=torch.ones(2, 111))
    with pytest.raises(ValueError, match="give decisions, filter gates or both"):
        cost.spent_macs()


def test_spent_macs_with_filter_gates_is_what_skipped_mode_computes_at_batch_one(monkeypatch):
    monkeypatch.setattr(skipping, "FILTER_BLOCK", 1)   # no padding to the kernels' filter blocks
    net = cifar_resnet(20).eval()
    cost = network_cost(net)
    gates = (torch.rand(1, net.num_filter_gates, generator=torch.Generator().manual_seed(0)) < 0.6).float()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.randn(1, 3, 32, 32), filter_gates=gates, mode="skipped")
    assert counter.get_total_flops() == 2 * cost.spent_macs(filter_gates=gates).item()


def test_executed_macs_round_each_groups_open_filters_up_to_the_filter_block_by_hand():
    cost = network_cost(cifar_resnet(8))                  # blocks of 16, 32, 64 gated filters
    b0, b1, b2 = cost.block_macs
    first_conv, second_conv = (macs for macs, _, _ in cost.block_conv_macs[0])   # 16 -> 16 gated -> 16
    gates = torch.ones(4, 112)
    gates[0, :16] = 0
    gates[0, :3] = 1            # 3 of 16 open: 8 computed
    gates[1, :16] = 0           # none open: one filter stands in (masked to zero)
    gates[2, :16] = 0
    gates[2, :9] = 1            # 9 open: 16 computed, the whole group
    gates[3, 16:48] = 0
    gates[3, 16:33] = 1         # 17 of block 1's 32 open: 24 computed
    executed = cost.spent_macs(filter_gates=gates, filter_block=8).tolist()
    assert executed == [cost.total_macs - b0 / 2, cost.total_macs - b0 * 15 / 16, cost.total_macs,
                        cost.total_macs - b1 / 4]
    ideal = cost.spent_macs(filter_gates=gates).tolist()
    assert ideal == [cost.total_macs - b0 * 13 / 16, cost.total_macs - b0, cost.total_macs - b0 * 7 / 16,
                     cost.total_macs - b1 * 15 / 32]
    assert first_conv == second_conv == b0 / 2            # both convolutions scale with the gated filters
    assert cost.spent_macs(filter_gates=gates, filter_block=1).tolist()[1] == cost.total_macs - b0 * 15 / 16
    decisions = torch.tensor([[0.0, 1.0, 1.0]] * 4)       # a skipped block costs nothing either way
    assert cost.spent_macs(decisions, gates, filter_block=8)[0].item() == cost.total_macs - b0
    with pytest.raises(ValueError, match="filter_block must be None or an integer >= 1, got 0"):
        cost.spent_macs(filter_gates=gates, filter_block=0)


@pytest.mark.parametrize("filter_block", [1, 8])
@pytest.mark.parametrize("open_share", [0.1, 0.3, 0.6, 0.9])
def test_executed_macs_are_what_skipped_mode_computes_for_one_image(monkeypatch, filter_block, open_share):
    # Before: spent_macs counted exactly the open filters while skipped mode, padding them to
    # FILTER_BLOCK = 8, computed 1.46x / 1.29x / 1.09x as many MACs at 30 / 60 / 90% open gates.
    monkeypatch.setattr(skipping, "FILTER_BLOCK", filter_block)
    net = cifar_resnet(20).eval()
    cost = network_cost(net)
    generator = torch.Generator().manual_seed(int(100 * open_share))
    gates = (torch.rand(1, net.num_filter_gates, generator=generator) < open_share).float()
    gates[0, net.filter_gate_slices[0]] = 0               # a group with none open: one filter stands in
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.randn(1, 3, 32, 32), filter_gates=gates, mode="skipped")
    assert counter.get_total_flops() == 2 * cost.spent_macs(filter_gates=gates, filter_block=filter_block).item()
    assert cost.spent_macs(filter_gates=gates).item() < cost.spent_macs(filter_gates=gates, filter_block=filter_block).item()


@pytest.mark.parametrize("bad", [2.0, -1.0, float("nan"), float("inf")])
def test_spent_macs_rejects_decisions_and_gates_outside_zero_one(bad):
    # Before: 2.0 doubled a block's MACs and -1 made them negative; NaN gave NaN MACs.
    cost = network_cost(cifar_resnet(8))
    decisions = torch.ones(2, 3)
    decisions[1, 2] = bad
    with pytest.raises(ValueError, match=r"decisions must lie in \[0, 1\]"):
        cost.spent_macs(decisions)
    gates = torch.ones(2, 112)
    gates[0, 3] = bad
    with pytest.raises(ValueError, match=r"filter gates must lie in \[0, 1\]"):
        cost.spent_macs(filter_gates=gates)


def test_any_decision_but_zero_spends_the_whole_block_as_skipped_mode_computes_it():
    cost = network_cost(cifar_resnet(8))
    decisions = torch.tensor([[0.5, 0.0, 1.0]])
    assert cost.spent_macs(decisions).item() == cost.total_macs - cost.block_macs[1]


def test_layer_macs_of_non_square_and_grouped_kernels_by_hand():
    image = torch.zeros(1, 4, 5, 5)
    tall = nn.Conv2d(4, 6, (3, 1), padding=(1, 0))
    assert layer_macs(tall, tall(image)) == 6 * 5 * 5 * 4 * 3 * 1
    grouped = nn.Conv2d(4, 6, 3, padding=1, groups=2)     # each filter sees 2 of the 4 channels
    macs = layer_macs(grouped, grouped(image))
    assert macs == 6 * 5 * 5 * 2 * 9 and isinstance(macs, int)
    with pytest.raises(TypeError, match="^no MAC count for BatchNorm2d$"):
        layer_macs(nn.BatchNorm2d(4), image)


def test_counting_needs_decisions_or_gates_and_executed_filters_never_exceed_a_group():
    with pytest.raises(ValueError, match="^give decisions, filter gates or both$"):
        network_cost(cifar_resnet(8)).spent_macs()
    cost = network_cost(cifar_resnet(8, width=12))          # gate groups of 12, 24, 48: not multiples of 8
    assert cost.block_filter_groups == ((12,), (24,), (48,))
    gates = torch.ones(1, 84)
    gates[0, :12] = 0
    gates[0, :9] = 1                                        # 9 of 12 open: 16 rounded down to the 12 there are
    assert cost.spent_macs(filter_gates=gates, filter_block=8).item() == cost.total_macs
