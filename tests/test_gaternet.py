"""GaterNet: Improved SemHash by hand, the gater, the sparsity loss, and the gater driving the
shared backbone's filter gates."""
import math

import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.deciders import Gater, gate_sparsity_loss, improved_semhash, saturated_sigmoid
from dyninf.network.dynamic import DynamicNetwork


def test_saturated_sigmoid_by_hand():
    x = torch.tensor([0.0, math.log(3), -10.0, 10.0, math.log(1 / 11)])
    # 1.2 * 0.5 - 0.1 = 0.5;  sigmoid(log 3) = 0.75 -> 0.8;  saturates at 0 and 1;
    # sigmoid(log(1/11)) = 1/12 -> 0.1 - 0.1 = 0
    assert torch.allclose(saturated_sigmoid(x), torch.tensor([0.5, 0.8, 0.0, 1.0, 0.0]), atol=1e-6)


def test_semhash_training_values_follow_both_branches_by_hand():
    logits = torch.tensor([[0.3, -0.2, 2.0], [-1.0, 0.1, 0.0]]).repeat(8, 1)
    torch.manual_seed(5)
    gates = improved_semhash(logits, training=True)
    torch.manual_seed(5)                                     # the same draws, by hand
    noisy = logits + torch.randn_like(logits)
    use_soft = torch.rand(len(logits), 1) < 0.5
    soft = (1.2 * torch.sigmoid(noisy) - 0.1).clamp(0, 1)
    hard = (noisy > 0).float()
    assert 0 < use_soft.sum() < len(logits)                  # both branches are exercised
    assert torch.allclose(gates, torch.where(use_soft, soft, hard))
    assert set(gates[~use_soft.squeeze(1)].unique().tolist()) <= {0.0, 1.0}


def test_semhash_gradient_is_the_saturated_sigmoids_derivative_in_both_branches():
    logits = torch.linspace(-4, 4, 40).repeat(6, 1).requires_grad_()
    torch.manual_seed(2)
    improved_semhash(logits, training=True).sum().backward()
    torch.manual_seed(2)
    noisy = logits.detach() + torch.randn(logits.shape)
    s = torch.sigmoid(noisy)
    inside = (1.2 * s - 0.1 > 0) & (1.2 * s - 0.1 < 1)
    expected = torch.where(inside, 1.2 * s * (1 - s), torch.zeros_like(s))
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_semhash_evaluation_is_binary_noise_free_and_deterministic():
    logits = torch.randn(5, 7)
    first, second = improved_semhash(logits, False), improved_semhash(logits, False)
    assert torch.equal(first, second) and torch.equal(first, (logits > 0).float())


def test_sparsity_loss_by_hand_and_shape_check():
    gates = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert gate_sparsity_loss(gates).item() == pytest.approx((2 / 4 + 4 / 4) / 2)
    with pytest.raises(ValueError, match=r"\(batch, num_gates\)"):
        gate_sparsity_loss(torch.ones(4))


def _gaternet(seed=0):
    torch.manual_seed(seed)
    backbone = cifar_resnet(8)
    return DynamicNetwork(backbone, Gater.for_backbone(backbone, depth=8, bottleneck=32),
                          train_mode="masked", eval_mode="skipped")


def test_gater_starts_open_then_drives_the_backbone_with_binary_deterministic_gates():
    net = _gaternet().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, gates = net(x, return_decisions=True)
        assert gates.shape == (4, net.backbone.num_filter_gates) and bool((gates == 1).all())
        assert torch.allclose(logits, net.backbone(x), atol=1e-5)   # all open: the plain backbone
        torch.nn.init.normal_(net.decider.fc2.weight, std=2.0)       # gates that differ per image
        torch.nn.init.zeros_(net.decider.fc2.bias)
        _, gates = net(x, return_decisions=True)
        _, again = net(x, return_decisions=True)
    assert torch.equal(gates, again) and set(gates.unique().tolist()) == {0.0, 1.0}


def test_gaternet_masked_and_skipped_agree_and_the_sparsity_gradient_reaches_the_gater():
    net = _gaternet(1).train()
    with torch.no_grad():
        torch.nn.init.normal_(net.decider.fc2.weight, std=2.0)
        torch.nn.init.zeros_(net.decider.fc2.bias)
        for _ in range(3):
            net(torch.randn(16, 3, 32, 32))                          # settle BatchNorm statistics
    logits, gates = net(torch.randn(8, 3, 32, 32), return_decisions=True)
    (logits.sum() + gate_sparsity_loss(gates)).backward()
    assert net.decider.fc2.weight.grad.abs().sum() > 0
    assert net.decider.extractor.stem[0].weight.grad.abs().sum() > 0
    net.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        for batch in (1, 8):
            masked = net(x[:batch], mode="masked")
            skipped = net(x[:batch], mode="skipped")
            assert (masked - skipped).abs().max() <= 1e-4


def test_a_gater_for_another_backbone_is_a_clear_error():
    backbone = cifar_resnet(8)
    with pytest.raises(ValueError, match="Gater was built for a network with 113 gated filters; this backbone has 112"):
        DynamicNetwork(backbone, Gater(backbone.num_filter_gates + 1, depth=8))
    with pytest.raises(ValueError, match="one per gated filter"):   # gates given by hand
        backbone.eval()(torch.randn(2, 3, 32, 32), filter_gates=torch.ones(2, 113))
    with pytest.raises(ValueError, match="positive"):
        Gater(0)


def test_gater_cost_by_hand():
    gater = Gater(112, depth=8, bottleneck=32, width=8)
    from dyninf.network.cost import network_cost

    resnet = cifar_resnet(8, width=8)
    extractor = network_cost(resnet)
    macs, params = gater.macs_and_params()
    assert macs == extractor.total_macs - 32 * 10 + 32 * 32 + 32 * 112   # no classifier; two FC layers
    # the ResNet-8's parameters without its classifier (32 x 10 + 10), then FC1 (32 x 32 + 32), the
    # BatchNorm's scale and shift (2 x 32) and FC2 (32 x 112 + 112)
    resnet_params = sum(p.numel() for p in resnet.parameters())
    assert params == resnet_params - (32 * 10 + 10) + (32 * 32 + 32) + 2 * 32 + (32 * 112 + 112)


def test_global_deciders_decide_once_and_local_gates_before_each_block():
    from dyninf.deciders import AIGGates, BlockDropPolicy, StochasticDepth

    backbone = cifar_resnet(8)
    assert DynamicNetwork(backbone, Gater.for_backbone(backbone, depth=8)).decides_once
    assert DynamicNetwork(backbone, BlockDropPolicy(backbone.num_blocks)).decides_once
    assert not DynamicNetwork(backbone, AIGGates(backbone)).decides_once
    assert not DynamicNetwork(backbone, StochasticDepth(backbone.num_blocks, 0.5)).decides_once


def test_the_gaters_batch_norm_makes_its_training_logits_independent_of_the_first_layers_offset():
    torch.manual_seed(0)
    gater = Gater(24, depth=8, bottleneck=16, width=4).train()
    torch.nn.init.normal_(gater.fc2.weight)
    images = torch.randn(8, 3, 32, 32)
    before = gater.logits(images)
    with torch.no_grad():
        gater.fc1.bias.add_(5.0)
    assert torch.allclose(gater.logits(images), before, atol=1e-4)


def test_training_the_gater_on_one_image_is_a_clear_error():
    gater = Gater(24, depth=8, bottleneck=16, width=4).train()
    with pytest.raises(ValueError, match="GaterNet's gater trains on batches of at least 2 images"):
        gater(torch.randn(1, 3, 32, 32))
    assert gater.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 24)


def test_eval_gates_open_only_for_positive_logits_in_the_logits_dtype():
    gates = improved_semhash(torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64), training=False)
    assert gates.dtype == torch.float64 and gates.tolist() == [[0.0, 0.0, 1.0]]


def test_hard_training_gates_keep_the_logits_dtype():
    torch.manual_seed(0)
    gates = improved_semhash(torch.zeros(64, 5, dtype=torch.float64), training=True)
    assert gates.dtype == torch.float64


def test_the_papers_gater_by_default_starting_open():
    torch.manual_seed(0)
    gater = Gater(7)
    assert gater.extractor.depth == 20 and gater.extractor.stem[0].out_channels == 16   # a ResNet-20 of width 16
    assert gater.fc1.out_features == 256                                              # bottleneck b = 256
    assert gater.fc2.bias.tolist() == [1.0] * 7 and gater.fc2.weight.std() < 0.02      # every logit starts at about 1
    smallest = Gater(1, depth=8, bottleneck=1, width=4)
    assert (smallest.num_gates, smallest.fc1.out_features) == (1, 1)
    for gates, bottleneck in ((0, 8), (8, 0)):
        with pytest.raises(ValueError, match=f"^num_gates and bottleneck must be positive, got {gates}, {bottleneck}$"):
            Gater(gates, depth=8, bottleneck=bottleneck)
