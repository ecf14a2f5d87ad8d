"""Batch norm folded into the layer before it for inference: the same numbers as the two layers,
and a cache that follows the parameters when they change."""
import torch
from torch import nn

from dyninf.network.folding import derived, folded_conv_bn


def _conv_bn(channels_last=False):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
    with torch.no_grad():   # statistics and affine parameters that are not the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    return conv, bn.eval()


def _agrees(conv, bn, x):
    weight, bias = folded_conv_bn(conv, bn)
    with torch.no_grad():
        return (nn.functional.conv2d(x, weight, bias, padding=1) - bn(conv(x))).abs().max() <= 1e-5


def test_folded_conv_bn_equals_the_two_layers_and_keeps_the_memory_format():
    for channels_last in (False, True):
        conv, bn = _conv_bn(channels_last)
        x = torch.randn(2, 4, 5, 5)
        assert _agrees(conv, bn, x)
        weight, bias = folded_conv_bn(conv, bn)
        assert weight.is_contiguous(memory_format=torch.channels_last if channels_last
                                    else torch.contiguous_format) and bias.shape == (6,)
        assert not weight.requires_grad


def test_the_cache_is_reused_then_follows_in_place_changes_and_new_tensors():
    conv, bn = _conv_bn()
    x = torch.randn(2, 4, 5, 5)
    first = folded_conv_bn(conv, bn)
    assert all(a is b for a, b in zip(first, folded_conv_bn(conv, bn)))   # cached
    with torch.no_grad():
        bn.running_mean.add_(0.5)    # as a training step or load_state_dict would
    assert not torch.equal(folded_conv_bn(conv, bn)[1], first[1]) and _agrees(conv, bn, x)
    conv.weight = nn.Parameter(torch.randn_like(conv.weight))   # a new tensor
    assert _agrees(conv, bn, x)
    conv, bn = conv.double(), bn.double()
    assert folded_conv_bn(conv, bn)[0].dtype == torch.float64 and _agrees(conv, bn, x.double())
    assert not any("derived" in key for key in conv.state_dict())


def test_derived_computes_without_autograd():
    layer = nn.Linear(3, 2)
    calls = []

    def compute():
        calls.append(1)
        return (layer.weight * 2,)

    (doubled,) = derived(layer, "doubled", (layer.weight,), compute)
    derived(layer, "doubled", (layer.weight,), compute)
    assert len(calls) == 1 and not doubled.requires_grad and torch.equal(doubled, 2 * layer.weight.detach())


def test_a_train_mode_forward_pass_refreshes_the_folded_statistics():
    # A train-mode pass updates running_mean/var inside the kernel without a new _version; without
    # num_batches_tracked in the key the cache kept the old statistics (masked vs skipped: 0.15).
    from conftest import settled_resnet

    from dyninf.deciders.aig import Gate

    net, gate = settled_resnet(8), Gate(16).eval()
    x = torch.randn(4, 3, 32, 32)
    gates = (torch.rand(4, net.num_filter_gates) < 0.5).float()
    features = torch.relu(torch.randn(4, 16, 8, 8))
    with torch.no_grad():
        net(x, filter_gates=gates, mode="skipped")   # fills the folded caches
        gate.margin(features)
        net.train(), gate.train()
        net(torch.randn(16, 3, 32, 32) * 3 + 1)        # new statistics, no optimizer step
        gate(torch.relu(torch.randn(16, 16, 8, 8) * 3))
        net.eval(), gate.eval()
        skipped = net(x, filter_gates=gates, mode="skipped")   # folded, from the cache
        margin = gate.margin(features)
    with torch.enable_grad():   # the layers as written, with the new statistics
        masked = net(x, filter_gates=gates, mode="masked")
        logits = gate(features)
    assert (masked - skipped).abs().max().item() <= 1e-5
    assert torch.allclose(margin, logits[:, 1] - logits[:, 0], atol=1e-5)


def test_the_cache_follows_a_batch_norm_that_only_saw_train_mode_passes():
    conv, bn = _conv_bn()
    x = torch.randn(2, 4, 5, 5)
    folded_conv_bn(conv, bn)
    bn.train()
    with torch.no_grad():
        bn(conv(torch.randn(8, 4, 5, 5) * 2))
    bn.eval()
    assert _agrees(conv, bn, x)
