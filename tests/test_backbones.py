import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import settled_resnet
from dyninf.network.backbones import BasicBlock, BottleneckBlock, cifar_resnet
from dyninf.deciders import random_decisions


def _images(batch=6, size=32):
    return torch.randn(batch, 3, size, size)


@pytest.mark.parametrize("depth", [21, 7, 2, 19.0, "20"])
def test_wrong_depth_is_a_clear_error(depth):
    with pytest.raises(ValueError, match=r"6n \+ 2"):
        cifar_resnet(depth)


@pytest.mark.parametrize("depth,blocks", [(8, 3), (20, 9), (32, 15), (56, 27), (110, 54)])
def test_block_counts(depth, blocks):
    net = cifar_resnet(depth)
    n = blocks // 3
    assert net.num_blocks == blocks and net.depth == depth
    assert net.downsampling_blocks == [n, 2 * n]
    assert net.stage_of_block == [k // n for k in range(blocks)]


def test_output_shape_and_classes():
    assert cifar_resnet(20, num_classes=100)(_images()).shape == (6, 100)
    assert cifar_resnet(8, width=8).blocks[-1].conv2.out_channels == 32


def test_plain_equals_all_ones_in_both_modes():
    net = settled_resnet()
    x = _images()
    ones = torch.ones(6, net.num_blocks)
    with torch.no_grad():
        plain = net(x)
        assert torch.allclose(net(x, decisions=ones), plain, atol=1e-6)
        assert torch.allclose(net(x, decisions=ones, mode="skipped"), plain, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_masked_and_skipped_agree_on_random_decisions(seed, keep):
    net = settled_resnet()
    x = _images(16)
    decisions = random_decisions(16, net.num_blocks, keep, seed=seed)
    decisions[:, 1] = 0   # a block no image runs
    decisions[:, 2] = 1   # a block every image runs
    with torch.no_grad():
        masked = net(x, decisions=decisions)
        skipped = net(x, decisions=decisions, mode="skipped")
    assert (masked - skipped).abs().max().item() <= 1e-5


def test_skipping_every_block_leaves_only_the_shortcuts():
    net = settled_resnet()
    x = _images()
    with torch.no_grad():
        hidden = net.stem(x)
        for block in net.blocks:
            hidden = block.shortcut(hidden)
        expected = net.head(hidden)
        zeros = torch.zeros(6, net.num_blocks)
        assert torch.allclose(net(x, decisions=zeros), expected, atol=1e-6)
        assert torch.allclose(net(x, decisions=zeros, mode="skipped"), expected, atol=1e-6)


def test_downsampling_shortcut_subsamples_and_zero_pads():
    block = BasicBlock(2, 4, stride=2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = block.shortcut(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[0, :2], x[0, :, ::2, ::2]) and (out[0, 2:] == 0).all()


class ConvolutionBatches(TorchDispatchMode):
    """The batch size of every convolution computed (inference folds batch norms into functional
    convolutions that no module hook sees; every convolution reaches the dispatcher)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.batches.append(len(args[0]))
        return func(*args, **(kwargs or {}))


def test_skipped_mode_runs_each_block_only_on_its_images():
    net = cifar_resnet(20).eval()
    decisions = torch.tensor([[1, 0, 1, 0, 1, 1, 0, 0, 1],
                              [1, 0, 0, 0, 1, 1, 1, 0, 1],
                              [1, 0, 1, 1, 0, 1, 0, 0, 1]], dtype=torch.float32)
    with torch.no_grad(), ConvolutionBatches() as skipped:
        net(_images(3), decisions=decisions, mode="skipped")
    running = [3, 2, 1, 2, 3, 1, 3]                     # blocks 0, 2, 3, 4, 5, 6, 8; 1 and 7: never
    assert skipped.batches == [3] + [count for count in running for _ in range(2)]
    with torch.no_grad(), ConvolutionBatches() as masked:
        net(_images(3), decisions=decisions, mode="masked")
    assert masked.batches == [3] * 19                   # masked mode pays for every block
    with ConvolutionBatches() as autograd:              # with autograd, the layers as modules: the same
        net(_images(3), decisions=decisions, mode="skipped")
    assert autograd.batches == skipped.batches


def test_masked_mode_is_differentiable_in_the_decisions():
    net = cifar_resnet(8)
    decisions = torch.full((4, net.num_blocks), 0.5, requires_grad=True)
    net(_images(4), decisions=decisions).sum().backward()
    assert decisions.grad is not None and decisions.grad.abs().sum() > 0


def test_skipped_mode_refuses_what_it_cannot_compute_as_masked_mode_does():
    decisions = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    net = cifar_resnet(8).train()
    # train mode: batch norm would see only the images that run a block
    with pytest.raises(ValueError, match="train mode.*masked mode"):
        net(_images(4), decisions=decisions, mode="skipped")
    net.eval()
    wanted = decisions.clone().requires_grad_()
    # masked mode gives a skipped image's decision the residual's gradient; skipped mode would give 0
    net(_images(4), decisions=wanted, mode="masked").sum().backward()
    assert (wanted.grad[decisions == 0] != 0).all()
    with pytest.raises(ValueError, match="carry a gradient.*masked mode"):
        net(_images(4), decisions=wanted, mode="skipped")
    with pytest.raises(ValueError, match="block 1 carry a gradient"):   # a decider's, block by block
        net(_images(4), mode="skipped", decisions=lambda index, x: wanted[:, index] if index == 1 else None)
    images = _images(4)
    with torch.no_grad():   # inference: the same numbers in both modes
        assert torch.allclose(net(images, decisions=wanted, mode="skipped"),
                              net(images, decisions=wanted, mode="masked"), atol=1e-5)
    # the same number for the whole batch (stochastic depth's batch mode) trains in skipped mode
    net.zero_grad(set_to_none=True)
    net.train()(_images(4), decisions=lambda index, x: 0.0 if index == 1 else None, mode="skipped").sum().backward()
    assert all(p.grad is None for p in net.blocks[1].parameters())
    assert all(p.grad is not None for p in net.blocks[2].parameters())


def test_a_decider_sees_each_block_input_and_its_choices_are_returned():
    net = cifar_resnet(8).eval()
    shapes = []

    def decider(index, block_input):
        shapes.append((index, tuple(block_input.shape[1:])))
        return (block_input.mean(dim=(1, 2, 3)) > 0).float() if index == 1 else torch.ones(len(block_input))

    with torch.no_grad():
        logits, taken = net(_images(5), decisions=decider, mode="skipped", return_decisions=True)
        again = net(_images(5), decisions=taken, mode="masked")
    assert shapes == [(0, (16, 32, 32)), (1, (16, 32, 32)), (2, (32, 16, 16))]
    assert taken.shape == (5, 3) and (taken[:, 0] == 1).all()
    assert logits.shape == again.shape == (5, 10)


def test_plain_forward_reports_all_blocks_taken():
    _, taken = cifar_resnet(8)(_images(2), return_decisions=True)
    assert torch.equal(taken, torch.ones(2, 3))


@pytest.mark.parametrize("shape", [(6, 8), (6, 10), (5, 9), (6,), (6, 9, 1)])
def test_wrong_decision_shape_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"\(batch, num_blocks\) = \(6, 9\)"):
        cifar_resnet(20)(_images(), decisions=torch.ones(shape))


def test_a_decider_returning_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"block 0 must have shape \(batch,\) = \(6,\)"):
        cifar_resnet(20)(_images(), decisions=lambda index, x: torch.ones(6, 1))


def test_decision_values_other_than_one_scale_the_residual_in_both_modes():
    net = settled_resnet(8)
    x = _images()
    weights = torch.tensor([[0, 2.0, 1], [0.5, 0, 2.0], [2.0, 2.0, 0], [0, 0, 0], [1, 1, 1], [3.0, 1, 0]])
    with torch.no_grad():
        masked = net(x, decisions=weights)
        skipped = net(x, decisions=weights, mode="skipped")
        # image 1 by hand: block 0 at half strength, block 1 skipped, block 2 doubled
        first, second, third = net.blocks
        hidden = net.stem(x[1:2])
        hidden = torch.relu(first.shortcut(hidden) + 0.5 * first.residual(hidden))
        hidden = second.shortcut(hidden)
        hidden = torch.relu(third.shortcut(hidden) + 2.0 * third.residual(hidden))
    assert (masked - skipped).abs().max().item() <= 1e-5
    assert torch.allclose(net.head(hidden), masked[1:2], atol=1e-5)
    with torch.no_grad():   # batch 1 takes its own path in skipped mode
        for image in range(len(x)):
            alone = net(x[image:image + 1], decisions=weights[image:image + 1], mode="skipped")
            assert (alone - masked[image:image + 1]).abs().max().item() <= 1e-5


def test_a_decider_may_return_none_for_all_run():
    net = settled_resnet(8)
    x = _images()
    with torch.no_grad():
        assert torch.equal(net(x, decisions=lambda index, h: None, mode="skipped"), net(x))


def test_bad_mode_images_and_decisions_are_clear_errors():
    net = cifar_resnet(8)
    with pytest.raises(ValueError, match="mode must be one of"):
        net(_images(), mode="dropped")
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        net(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"got uint8 images of shape \(2, 3, 32, 32\).*model_inputs"):
        net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images are float64, the network's weights float32"):
        net(_images().double())
    with pytest.raises(ValueError, match="NaN or inf"):   # checked in eval mode (training checks its loss)
        net.eval()(torch.full((2, 3, 32, 32), float("nan")))
    images = _images(3)
    images[1, 2, 5, 5] = float("inf")
    with pytest.raises(ValueError, match=r"1 of the 3 images hold NaN or inf \(the first: image 1\)"):
        net(images)
    with pytest.raises(TypeError, match="decisions must be None"):
        net(_images(), decisions=[[1, 0, 1]])


def test_random_decisions_rate_and_errors():
    decisions = random_decisions(4000, 9, keep=0.3, seed=0)
    assert set(decisions.unique().tolist()) == {0.0, 1.0}
    assert decisions.mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.equal(decisions, random_decisions(4000, 9, keep=0.3, seed=0))
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        random_decisions(2, 9, keep=0)


def test_skipped_mode_leaves_the_callers_input_alone_unless_allowed_to_overwrite_it():
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    x = torch.rand(6, 8, 8, 8)
    run = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    original = x.clone()
    with torch.no_grad():
        expected = block(x, run, "masked")
        assert torch.allclose(block(x, run, "skipped"), expected, atol=1e-6)
        assert torch.equal(x, original)                      # a block called directly copies
        out = block(x, run, "skipped", overwrite_input=True)
    assert torch.allclose(out, expected, atol=1e-6) and out.data_ptr() == x.data_ptr()   # no copy
    x = original.clone().requires_grad_()
    out = block(x, run, "skipped", overwrite_input=True)      # autograd needs x: never overwritten
    assert torch.equal(x.detach(), original) and torch.allclose(out.detach(), expected, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 7])
def test_masked_and_skipped_agree_on_a_channels_last_network(batch):
    net = settled_resnet(20, seed=4).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    decisions = random_decisions(batch, net.num_blocks, keep=0.5, seed=batch)
    with torch.no_grad():
        masked = net(x, decisions=decisions)
        skipped = net(x, decisions=decisions, mode="skipped")
    assert torch.allclose(masked, skipped, atol=1e-5)
    block = net.blocks[1]                                      # the gather keeps the layout
    hidden = torch.rand(5, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = block(hidden, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), "skipped")
        expected = block(hidden, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]), "masked")
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.allclose(out, expected, atol=1e-5)


def test_skipped_mode_passes_the_gradient_to_decisions_of_one():
    torch.manual_seed(1)
    block = BasicBlock(8, 8).train()
    x = torch.rand(4, 8, 8, 8)
    grads = {}
    for mode in ("masked", "skipped"):
        run = torch.tensor([1.0, 0.0, 1.0, 1.0], requires_grad=True)
        torch.manual_seed(2)
        block(x, run, mode).sum().backward()
        grads[mode] = run.grad
    running = torch.tensor([0, 2, 3])
    assert grads["skipped"][running].abs().min() > 0       # not lost to the "all ones" shortcut
    # BatchNorm sees other images in the two modes, so compare signs and nonzeros, not values
    assert torch.equal(grads["skipped"][running].sign(), grads["masked"][running].sign())


@pytest.mark.parametrize("mode,batch", [("masked", 6), ("skipped", 6), ("skipped", 1)])
def test_decisions_on_another_device_than_the_images_are_a_clear_error_in_every_mode(mode, batch):
    # Before: batch-1 skipped mode read them with .item() and ran; the other paths crashed deep
    # inside. The meta device stands in for CUDA on a machine without one.
    net = cifar_resnet(8)
    x = _images(batch)
    for decisions in (torch.ones(batch, 3, device="meta"), lambda index, h: torch.ones(batch, device="meta")):
        with pytest.raises(ValueError, match="on meta, the images on cpu"):
            net(x, decisions=decisions, mode=mode)
    with pytest.raises(ValueError, match="filter gates are on meta, the images on cpu"):
        net(x, filter_gates=torch.ones(batch, net.num_filter_gates, device="meta"), mode=mode)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_decisions_or_gates_that_are_not_finite_are_a_clear_error(bad):
    net = cifar_resnet(8).eval()
    decisions = torch.ones(6, 3)
    decisions[2, 1] = bad
    gates = torch.ones(6, net.num_filter_gates)
    gates[0, 5] = bad
    for mode in ("masked", "skipped"):
        with pytest.raises(ValueError, match="decisions must be finite"):
            net(_images(), decisions=decisions, mode=mode)
        with pytest.raises(ValueError, match="filter gates must be finite"):
            net(_images(), filter_gates=gates, mode=mode)


@pytest.mark.parametrize("block", [BasicBlock(16, 32, 2), BottleneckBlock(64, 16, 2)], ids=["basic", "bottleneck"])
def test_each_block_names_its_convolutions_with_their_batch_norms_in_order_and_its_gate_groups(block):
    # skipped mode slices these pairs by name: every convolution of the residual branch, each with
    # the batch norm that normalises its outputs, and a gate group between consecutive ones
    convs = [name for name, module in block.named_children() if isinstance(module, torch.nn.Conv2d)]
    assert [conv for conv, *_ in block.conv_bn_pairs] == convs
    for conv, bn, _, _ in block.conv_bn_pairs:
        assert isinstance(getattr(block, bn), torch.nn.BatchNorm2d)
        assert getattr(block, bn).num_features == getattr(block, conv).out_channels
    outputs = [out for *_, out in block.conv_bn_pairs[:-1]]
    inputs = [into for _, _, into, _ in block.conv_bn_pairs[1:]]
    assert outputs == inputs == list(range(len(block.filter_groups())))
    assert block.conv_bn_pairs[0][2] is None and block.conv_bn_pairs[-1][3] is None
