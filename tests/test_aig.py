import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.deciders import AIGGates, target_rate_loss
from dyninf.deciders.aig import Gate
from dyninf.network.dynamic import DynamicNetwork, predict_with_decisions


def _aig(depth=20):
    torch.manual_seed(0)
    backbone = cifar_resnet(depth)
    return DynamicNetwork(backbone, AIGGates(backbone), train_mode="masked", eval_mode="skipped")


def test_gate_output_shape_and_deterministic_eval():
    net = _aig().eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        (logits_a, decisions_a), (logits_b, decisions_b) = (net(x, return_decisions=True) for _ in range(2))
    assert Gate(16)(torch.randn(4, 16, 8, 8)).shape == (4, 2)
    assert torch.equal(decisions_a, decisions_b) and torch.equal(logits_a, logits_b)
    assert set(decisions_a.unique().tolist()) <= {0.0, 1.0}


def test_downsampling_blocks_are_never_gated_or_skipped():
    net = _aig().train()
    assert net.decider.gated_blocks == [0, 1, 2, 4, 5, 7, 8]
    for _ in range(5):
        _, decisions = net(torch.randn(8, 3, 32, 32), return_decisions=True)
        assert (decisions[:, [3, 6]] == 1).all()


def test_bias_initialisation_opens_gates_for_about_87_percent_in_training():
    net = _aig()
    gates = net.decider.train()
    expected = torch.softmax(torch.tensor([0.1, 2.0]), 0)[1].item()   # 0.870
    for k in gates.gated_blocks:
        channels = net.backbone.blocks[k].conv1.in_channels
        block_input = torch.relu(torch.randn(4000, channels, 4, 4) * 2)   # random post-ReLU features
        assert gates(k, block_input).mean().item() == pytest.approx(expected, abs=0.03), k


def test_straight_through_gradient_reaches_the_gates():
    net = _aig(8).train()
    logits, decisions = net(torch.randn(16, 3, 32, 32), return_decisions=True)
    (logits.sum() + target_rate_loss(decisions, 0.5, net.decider.gated_blocks)).backward()
    for gate in net.decider.gates.values():
        assert gate.fc1.weight.grad is not None and gate.fc1.weight.grad.abs().sum() > 0
        assert gate.fc2.bias.grad.abs().sum() > 0


def test_target_rate_loss_by_hand():
    decisions = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1]], dtype=torch.float32)
    # gated layers 1 and 2 run at rates 0.5 and 0.5: zero loss at t = 0.5
    assert target_rate_loss(decisions, 0.5, [1, 2]).item() == 0
    # at t = 0.75: ((0.5 - 0.75)^2 + (0.5 - 0.75)^2) / 2
    assert target_rate_loss(decisions, 0.75, [1, 2]).item() == pytest.approx(0.0625)
    # layer 0 (rate 1) with layer 2 (rate 0.5) at t = 1: (0 + 0.25) / 2
    assert target_rate_loss(decisions, 1.0, [0, 2]).item() == pytest.approx(0.125)


@pytest.mark.parametrize("target", [0, -0.2, 1.01])
def test_target_rate_outside_zero_one_is_a_clear_error(target):
    with pytest.raises(ValueError, match=r"target rate t must be in \(0, 1\]"):
        target_rate_loss(torch.ones(2, 3), target, [0])


def test_gated_model_masked_and_skipped_agree():
    net = _aig().train()
    with torch.no_grad():  # settle BatchNorm statistics away from their initial values
        for _ in range(3):
            net(torch.randn(32, 3, 32, 32))
    net.eval()
    for gate in net.decider.gates.values():  # make gates decide differently per image
        torch.nn.init.normal_(gate.fc2.weight, std=3.0)
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        masked, decisions = net(x, mode="masked", return_decisions=True)
        skipped = net(x, mode="skipped")
    assert 0 < decisions[:, net.decider.gated_blocks].mean() < 1
    assert (masked - skipped).abs().max().item() <= 1e-5


def test_eval_margin_without_autograd_equals_the_logit_difference_and_follows_training():
    torch.manual_seed(0)
    gate = Gate(16).train()
    torch.nn.init.normal_(gate.fc2.weight, std=1.0)
    optimizer = torch.optim.SGD(gate.parameters(), lr=0.01)
    x = torch.randn(6, 16, 8, 8)
    for _ in range(2):   # the folded tensors must follow a training step and new statistics
        gate.train()
        optimizer.zero_grad()
        gate(torch.randn(32, 16, 8, 8)).sum().backward()
        optimizer.step()
        gate.eval()
        logits = gate(x)
        with torch.no_grad():
            fast = gate.margin(x)
        assert fast.shape == (6,)
        assert torch.allclose(fast, logits[:, 1] - logits[:, 0], rtol=1e-5, atol=1e-4)
        assert torch.equal(gate.margin(x).detach(), (logits[:, 1] - logits[:, 0]).detach())


def test_gate_cost_is_small():
    net = _aig(110)
    macs, params = net.decider.macs_and_params()
    channels = [16] * 18 + [32] * 17 + [64] * 17     # 52 gates: the 2 downsampling blocks have none
    assert macs == sum(c * 16 + 16 * 2 for c in channels)
    # per gate: c -> 16 (weights and biases), batch norm's scale and shift, 16 -> 2
    assert params == sum(c * 16 + 16 + 2 * 16 + 16 * 2 + 2 for c in channels) == 34984
    backbone = network_cost(net.backbone)
    assert round(100 * params / backbone.total_params, 1) == 2.0      # not the 4.8% quoted for the paper
    assert round(100 * macs / backbone.total_macs, 3) == 0.013


def test_threshold_for_rate_by_hand():
    from dyninf.deciders.aig import _threshold_for_rate

    margins = torch.arange(10, dtype=torch.float32)          # 0 .. 9
    assert _threshold_for_rate(margins, 0.3) == 6.0           # 7, 8, 9 pass: 3 of 10
    assert _threshold_for_rate(margins[:4] / 10, 0.75) == pytest.approx(0.0)   # 0.1, 0.2, 0.3 pass
    assert _threshold_for_rate(margins, 1.0) == -float("inf")


def test_calibrated_gates_run_each_layer_at_the_target_rate_deterministically():
    from dyninf.deciders import calibrate_thresholds

    net = _aig()
    for gate in net.decider.gates.values():  # gates that decide differently per image
        torch.nn.init.normal_(gate.fc2.weight, std=3.0)
    images = torch.randint(0, 256, (400, 3, 32, 32), dtype=torch.uint8)
    calibrate_thresholds(net, images, 0.3)
    assert all(gate.threshold.item() != 0 for gate in net.decider.gates.values())
    _, first = predict_with_decisions(net, images)
    _, again = predict_with_decisions(net, images, batch_size=64)
    assert torch.equal(first, again)
    rates = first[:, net.decider.gated_blocks].mean(0)
    assert torch.allclose(rates, torch.full_like(rates, 0.3), atol=1 / 400)
    assert (first[:, [3, 6]] == 1).all()
    calibrate_thresholds(net, images, 1.0)
    assert (predict_with_decisions(net, images)[1] == 1).all()
    with pytest.raises(ValueError, match="target rate"):
        calibrate_thresholds(net, images, 1.5)


def test_threshold_for_rate_with_ties_takes_the_nearest_rate_that_can_be_had():
    from dyninf.deciders.aig import _threshold_for_rate

    halves = torch.cat([torch.zeros(50), torch.ones(50)])
    for rate, expected in [(0.3, 0.5), (0.5, 0.5), (0.2, 0.0), (0.8, 1.0), (1.0, 1.0)]:
        threshold = _threshold_for_rate(halves, rate)
        assert (halves > threshold).float().mean().item() == expected, rate
    constant = torch.full((10,), 2.5)          # all tied: all or nothing, whichever is nearer
    assert (constant > _threshold_for_rate(constant, 0.7)).all()
    assert not (constant > _threshold_for_rate(constant, 0.3)).any()


def test_gate_margins_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    gate = Gate(16)
    torch.nn.init.normal_(gate.fc2.weight, std=1.0)
    gate.train()
    with torch.no_grad():
        gate(torch.relu(torch.randn(64, 16, 8, 8)))   # statistics that are not the identity
    gate.eval()
    x = torch.relu(torch.randn(200, 16, 8, 8))
    with torch.no_grad():
        exact = gate.margin(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = gate.margin(x)
            slow = gate(x.bfloat16())
    assert fast.dtype == slow.dtype == torch.float32
    assert torch.allclose(fast, exact, atol=1e-5)
    assert torch.allclose(slow[:, 1] - slow[:, 0], exact, atol=1e-3)   # its input was rounded to bf16


def test_calibration_under_bf16_autocast_hits_the_target_rate():
    # On CUDA the course runs inference under bf16 autocast; an undecided gate's bf16 margins took
    # a few distinct values, and calibrated rates missed t badly (0.031 for 0.5).
    from dyninf.deciders import calibrate_thresholds

    net = _aig(8)
    for gate in net.decider.gates.values():   # undecided gates: margins close together
        torch.nn.init.normal_(gate.fc2.weight, std=0.01)
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        calibrate_thresholds(net, images, 0.5)
        _, decisions = predict_with_decisions(net, images)
    rates = decisions[:, net.decider.gated_blocks].mean(0)
    assert torch.allclose(rates, torch.full_like(rates, 0.5), atol=2 / 300), rates


def test_the_gates_batch_norm_makes_its_training_logits_independent_of_the_first_layers_offset():
    # logits = FC2(ReLU(BN(FC1(pool(x))))): in training BN subtracts each unit's batch mean, so a
    # constant added to FC1's output changes nothing (without the BN it would move every logit)
    torch.manual_seed(0)
    gate = Gate(16).train()
    torch.nn.init.normal_(gate.fc2.weight)            # a last layer that passes changes on
    block_input = torch.randn(8, 16, 4, 4)
    before = gate(block_input)
    with torch.no_grad():
        gate.fc1.bias.add_(5.0)
    assert torch.allclose(gate(block_input), before, atol=1e-5)


def test_training_decisions_are_the_straight_through_gumbel_softmax_at_temperature_one():
    import torch.nn.functional as F

    net = _aig(8).train()
    gates, block = net.decider, net.decider.gated_blocks[0]
    block_input = torch.randn(16, 16, 32, 32, requires_grad=True)
    weights = torch.randn(16)

    def decisions_and_gradient(decide):
        torch.manual_seed(3)                            # the same Gumbel noise for both
        decisions = decide()
        (decisions * weights).sum().backward()
        gradient, block_input.grad = block_input.grad, None
        return decisions.detach(), gradient

    ours = decisions_and_gradient(lambda: gates(block, block_input))
    paper = decisions_and_gradient(
        lambda: F.gumbel_softmax(gates.gates[str(block)](block_input).float(), tau=1.0, hard=True)[:, 1])
    assert torch.equal(ours[0], paper[0]) and set(ours[0].tolist()) <= {0.0, 1.0}
    assert torch.allclose(ours[1], paper[1], rtol=1e-4, atol=1e-8) and ours[1].abs().sum() > 0


def test_training_a_gate_on_one_image_is_a_clear_error():
    net = _aig(8).train()
    with pytest.raises(ValueError, match="an AIG gate trains on batches of at least 2 images"):
        net(torch.randn(1, 3, 32, 32))
    net.eval()(torch.randn(1, 3, 32, 32))    # evaluation on one image is fine


def test_eval_gates_run_a_block_only_above_the_threshold_in_the_inputs_dtype():
    torch.manual_seed(0)
    backbone = cifar_resnet(8)
    gates = AIGGates(backbone).eval()
    block = gates.gated_blocks[0]
    images = torch.randn(6, 16, 32, 32)
    with torch.no_grad():
        margins = gates.gate_for(block).margin(images)
        gates.gate_for(block).threshold.fill_(margins[0].item())   # image 0 sits exactly on it
        decisions = gates(block, images)
    assert decisions.dtype == images.dtype
    assert decisions.tolist() == (margins > margins[0]).float().tolist() and decisions[0] == 0


def test_every_gate_gets_the_hidden_width_asked_for():
    gates = AIGGates(cifar_resnet(8), hidden=8)
    assert {gate.fc1.out_features for gate in gates.gates.values()} == {8}
    assert {gate.fc1.out_features for gate in AIGGates(cifar_resnet(8)).gates.values()} == {16}   # the paper's


def test_gates_built_for_another_depth_are_refused_by_their_block_count():
    gates = AIGGates(cifar_resnet(20))
    with pytest.raises(ValueError, match="AIGGates was built for a network with 9 blocks; this backbone has 15"):
        DynamicNetwork(cifar_resnet(32), gates)
