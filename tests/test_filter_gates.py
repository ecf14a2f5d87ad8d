"""Filter-level gates (GaterNet's decisions) on the shared backbone: masked and skipped agree,
skipped mode really computes fewer filters, and the gate vector is checked."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import settled_resnet
from dyninf.network import skipping
from dyninf.network.backbones import cifar_resnet


def _random_gates(batch, count, keep, seed):
    return (torch.rand(batch, count, generator=torch.Generator().manual_seed(seed)) < keep).float()


def test_gate_count_is_the_inner_filters_of_every_block():
    net = cifar_resnet(20)
    assert net.num_filter_gates == 3 * 16 + 3 * 32 + 3 * 64 == 336
    assert [s.stop - s.start for s in net.filter_gate_slices] == [b.conv1.out_channels for b in net.blocks]
    assert cifar_resnet(110).num_filter_gates == 18 * (16 + 32 + 64)


def test_all_open_gates_give_the_plain_network_in_both_modes():
    net, x = settled_resnet(), torch.randn(4, 3, 32, 32)
    ones = torch.ones(4, net.num_filter_gates)
    with torch.no_grad():
        plain = net(x)
        for mode in ("masked", "skipped"):
            assert (net(x, filter_gates=ones, mode=mode) - plain).abs().max() <= 1e-5


def test_a_closed_filter_is_a_zero_feature_map_by_hand():
    net, x = settled_resnet(8), torch.randn(2, 3, 32, 32)
    gates = torch.ones(2, net.num_filter_gates)
    gates[0, 3] = 0                                       # block 0, filter 3, image 0
    block = net.blocks[0]
    with torch.no_grad():
        hidden = torch.relu(block.bn1(block.conv1(net.stem(x))))
        hidden[0, 3] = 0
        expected = torch.relu(net.stem(x) + block.bn2(block.conv2(hidden)))
        got = block(net.stem(x), None, "masked", gates[:, net.filter_gate_slices[0]])
    assert (got - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("keep", [0.0, 0.3, 0.8])
def test_masked_and_skipped_agree_at_batch_one_and_above(batch, keep):
    net = settled_resnet()
    x = torch.randn(batch, 3, 32, 32)
    gates = _random_gates(batch, net.num_filter_gates, keep, seed=batch)
    blocks = (torch.rand(batch, net.num_blocks, generator=torch.Generator().manual_seed(7)) < 0.6).float()
    with torch.no_grad():
        for decisions in (None, blocks):
            masked = net(x, decisions=decisions, filter_gates=gates, mode="masked")
            skipped = net(x, decisions=decisions, filter_gates=gates, mode="skipped")
            assert (masked - skipped).abs().max() <= 1e-4


def test_eval_skipped_mode_with_autograd_slices_the_unfolded_layers_to_the_same_numbers():
    net = settled_resnet(8)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    gates = _random_gates(3, net.num_filter_gates, 0.5, seed=3)
    with torch.no_grad():
        folded = net(x, filter_gates=gates, mode="skipped")   # batch norm folded, cached
    unfolded = net(x, filter_gates=gates, mode="skipped")     # a gradient needs the real layers
    assert (folded - unfolded).abs().max() <= 1e-4
    unfolded.sum().backward()
    assert net.blocks[0].bn1.weight.grad is not None and x.grad.abs().sum() > 0


def _flops(net, x, gates, mode):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, filter_gates=gates, mode=mode)
    return counter.get_total_flops()


def test_skipped_mode_computes_only_open_filters_at_batch_one_and_their_union_above():
    net = settled_resnet()
    gates = torch.ones(2, net.num_filter_gates)
    gates[0, ::2] = 0                       # image 0 closes the even filters
    gates[1, ::4] = 0                       # image 1 closes every fourth: union = 3/4 open
    x = torch.randn(2, 3, 32, 32)
    full = _flops(net, x[:1], gates[:1] * 0 + 1, "masked")
    assert _flops(net, x[:1], gates[:1], "masked") == full               # masking saves nothing
    half = _flops(net, x[:1], gates[:1], "skipped")
    assert half < 0.6 * full                                             # both convolutions halve
    union = _flops(net, x, gates, "skipped") / 2
    assert half < union < 0.85 * full                                    # the union: 3/4 of the filters


def test_training_mode_masks_and_passes_the_gradient_to_the_gates():
    net = cifar_resnet(8).train()
    gates = torch.full((4, net.num_filter_gates), 0.5, requires_grad=True)
    net(torch.randn(4, 3, 32, 32), filter_gates=gates, mode="skipped").sum().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(4, 335), (3, 336), (4,)])
def test_a_wrong_gate_vector_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"num_filter_gates\) = \(4, 336\)"):
        cifar_resnet(20)(torch.randn(4, 3, 32, 32), filter_gates=torch.ones(shape))


def test_features_are_the_pooled_input_of_the_classifier():
    net, x = settled_resnet(), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = net.features(x)
        assert features.shape == (3, 64)
        assert torch.allclose(net.head[-1](features), net(x), atol=1e-6)


def test_bottleneck_resnet164_shape_and_gate_count():
    net = cifar_resnet(164, bottleneck=True)
    assert net.depth == 164 and net.num_blocks == 54 and net.downsampling_blocks == [0, 18, 36]
    assert net.num_filter_gates == 18 * 2 * (16 + 32 + 64) == 4032   # not the 7,200 quoted for the paper (notebook 03)
    assert net.head[-1].in_features == 256
    with pytest.raises(ValueError, match=r"9n \+ 2"):
        cifar_resnet(100, bottleneck=True)


@pytest.mark.parametrize("batch", [1, 8])
def test_bottleneck_masked_and_skipped_agree_with_filter_and_block_decisions(batch):
    net = settled_resnet(29, bottleneck=True)        # 3 bottleneck blocks per stage
    x = torch.randn(batch, 3, 32, 32)
    gates = _random_gates(batch, net.num_filter_gates, 0.5, seed=3)
    gates[:, :16] = 0                                 # block 0's first group closed for every image
    blocks = (torch.rand(batch, net.num_blocks, generator=torch.Generator().manual_seed(4)) < 0.7).float()
    with torch.no_grad():
        plain_masked = net(x, filter_gates=torch.ones_like(gates), mode="masked")
        assert (plain_masked - net(x)).abs().max() <= 1e-4
        for decisions in (None, blocks):
            masked = net(x, decisions=decisions, filter_gates=gates, mode="masked")
            skipped = net(x, decisions=decisions, filter_gates=gates, mode="skipped")
            assert (masked - skipped).abs().max() <= 1e-4


@pytest.mark.parametrize("depth,bottleneck", [(20, False), (29, True)])
def test_spent_macs_equal_the_flops_skipped_mode_computes_for_one_image(depth, bottleneck, monkeypatch):
    from dyninf.network.cost import network_cost

    monkeypatch.setattr(skipping, "FILTER_BLOCK", 1)   # exactly the open filters, no padding
    net = cifar_resnet(depth, bottleneck=bottleneck).eval()
    cost = network_cost(net)
    assert [sum(m for m, _, _ in convs) for convs in cost.block_conv_macs] == list(cost.block_macs)
    gates = _random_gates(1, net.num_filter_gates, 0.6, seed=0)
    assert 0 < _flops(net, torch.randn(1, 3, 32, 32), gates, "skipped") == 2 * cost.spent_macs(filter_gates=gates).item()


def test_open_filters_are_padded_with_closed_ones_to_a_multiple_of_the_filter_block():
    from dyninf.network.cost import network_cost

    assert skipping.FILTER_BLOCK == 8
    net = settled_resnet(8)                       # gated filters per block: 16, 32, 64
    gates = torch.zeros(1, net.num_filter_gates)
    padded = torch.zeros(1, net.num_filter_gates)
    for block, (opened, computed) in enumerate([(13, 16), (17, 24), (64, 64)]):
        start = net.filter_gate_slices[block].start
        gates[0, start + torch.randperm(net.blocks[block].gated_filters)[:opened]] = 1
        padded[0, start:start + computed] = 1     # as many filters as are computed, by hand
    x = torch.randn(1, 3, 32, 32)
    expected = network_cost(net).spent_macs(filter_gates=padded).item()
    assert _flops(net, x, gates, "skipped") == 2 * expected
    with torch.no_grad():   # the padding is computed, then masked: the same outputs
        assert (net(x, filter_gates=gates, mode="skipped") - net(x, filter_gates=gates)).abs().max() <= 1e-5
