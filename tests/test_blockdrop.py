"""BlockDrop: reward, probability bound, self-critical policy gradient and curriculum by hand, and
the policy driving the shared backbone's blocks."""
import math

import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.deciders import (BlockDropPolicy, blockdrop_reward, bounded_probabilities, curriculum_step,
                             policy_gradient_loss)
from dyninf.network.dynamic import DynamicNetwork
from dyninf.training.loop import TrainingStep, training_forward
from dyninf.course.trained import blockdrop_losses


def test_reward_by_hand_for_correct_and_wrong_predictions():
    correct = torch.tensor([True, True, True, True, False, False])
    blocks = torch.tensor([0, 3, 6, 9, 3, 9])
    expected = [1.0, 1 - (3 / 9) ** 2, 1 - (6 / 9) ** 2, 0.0, -5.0, -5.0]
    assert torch.allclose(blockdrop_reward(correct, blocks, 9, penalty=5.0), torch.tensor(expected))
    assert blockdrop_reward(torch.tensor([False]), torch.tensor([2]), 9, penalty=0.0).item() == 0.0


@pytest.mark.parametrize("penalty", [-1.0, math.nan, math.inf, "5"])
def test_a_bad_penalty_is_a_clear_error(penalty):
    with pytest.raises(ValueError, match="penalty gamma"):
        blockdrop_reward(torch.tensor([True]), torch.tensor([1]), 9, penalty)


def test_alpha_bounds_the_probabilities_by_hand():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(bounded_probabilities(s, 0.8), torch.tensor([0.2, 0.35, 0.5, 0.8]))
    assert torch.equal(bounded_probabilities(s, 1.0), s)


@pytest.mark.parametrize("alpha", [0.5, 0.3, 1.2, -1.0])
def test_a_bad_alpha_is_a_clear_error(alpha):
    with pytest.raises(ValueError, match=r"alpha .* must be in \(0.5, 1\]"):
        bounded_probabilities(torch.tensor([0.5]), alpha)
    with pytest.raises(ValueError, match="alpha"):
        BlockDropPolicy(9, depth=8, width=4, alpha=alpha)


def test_sampling_explores_at_the_bound_even_when_the_policy_is_sure():
    torch.manual_seed(0)
    policy = BlockDropPolicy(4, depth=8, width=4, alpha=0.8).train()
    torch.nn.init.constant_(policy.extractor.head[-1].bias, 30.0)      # s = 1 for every block
    keep_rate = torch.cat([policy(torch.randn(64, 3, 32, 32))[0] for _ in range(8)]).mean().item()
    assert keep_rate == pytest.approx(0.8, abs=0.03)
    decisions, probabilities = policy.eval()(torch.randn(5, 3, 32, 32))
    assert torch.equal(decisions, torch.ones(5, 4)) and torch.allclose(probabilities, torch.ones(5, 4))


def test_self_critical_advantage_has_the_expected_sign_on_a_constructed_case():
    # Same image: the sampled policy is right with 3 of 9 blocks, the greedy one right with all 9.
    sampled = blockdrop_reward(torch.tensor([True]), torch.tensor([3]), 9, 5.0)
    greedy = blockdrop_reward(torch.tensor([True]), torch.tensor([9]), 9, 5.0)
    assert (sampled - greedy).item() > 0            # dropping more and staying right: reinforced
    wrong = blockdrop_reward(torch.tensor([False]), torch.tensor([3]), 9, 5.0)
    assert (wrong - greedy).item() < 0              # dropping into a mistake: discouraged


@pytest.mark.parametrize("action, advantage, keep_probability_should", [
    (1.0, 0.5, "rise"), (0.0, 0.5, "fall"), (1.0, -0.5, "fall"), (0.0, -0.5, "rise")])
def test_policy_gradient_step_moves_the_probability_the_expected_way(action, advantage,
                                                                       keep_probability_should):
    logit = torch.zeros(1, requires_grad=True)
    distribution = torch.distributions.Bernoulli(logits=logit)
    loss = policy_gradient_loss(distribution.log_prob(torch.tensor([action])),
                                torch.tensor([advantage]), torch.tensor([0.0]))
    loss.backward()
    # d/dlogit of -(A log pi(u)) = -A (u - s) at s = 0.5: a gradient step moves s towards u when A > 0
    assert logit.grad.item() == pytest.approx(-advantage * (action - 0.5))
    assert (logit.grad.item() < 0) == (keep_probability_should == "rise")


def test_the_entropy_bonus_lowers_the_loss_and_the_advantage_is_not_differentiated():
    reward = torch.tensor([1.0, 0.0], requires_grad=True)
    log_probability = torch.tensor([-1.0, -2.0], requires_grad=True)
    entropy = torch.tensor([0.5, 0.7])
    plain = policy_gradient_loss(log_probability, reward, torch.zeros(2))
    assert plain.item() == pytest.approx(-(1.0 * -1.0 + 0.0) / 2)
    bonus = policy_gradient_loss(log_probability, reward, torch.zeros(2), entropy, 0.1)
    assert bonus.item() == pytest.approx(plain.item() - 0.1 * 0.6)
    bonus.backward()
    assert reward.grad is None


def test_curriculum_steps_by_hand():
    assert [curriculum_step(e, 9) for e in range(11)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9]
    assert [curriculum_step(e, 9, blocks_per_epoch=4) for e in range(4)] == [4, 8, 9, 9]
    with pytest.raises(ValueError, match="blocks_per_epoch"):
        curriculum_step(0, 9, blocks_per_epoch=0)


@pytest.mark.parametrize("decided", [1, 4, 9])
def test_the_curriculum_keeps_exactly_the_first_blocks_and_scores_only_the_decided_ones(decided):
    torch.manual_seed(decided)
    policy = BlockDropPolicy(9, depth=8, width=4).train()
    torch.nn.init.constant_(policy.extractor.head[-1].bias, -30.0)     # s = 0: drop whatever is decided
    policy.decided_blocks = decided
    images = torch.randn(200, 3, 32, 32)
    decisions, probabilities = policy(images)
    assert torch.equal(probabilities, policy.probabilities(images))   # what the decisions were drawn from
    fixed = 9 - decided
    assert torch.equal(decisions[:, :fixed], torch.ones(200, fixed))
    assert decisions[:, fixed:].mean().item() == pytest.approx(0.2, abs=0.05)   # the bound 1 - alpha
    greedy = policy.greedy(probabilities)
    assert torch.equal(greedy, torch.cat([torch.ones(200, fixed), torch.zeros(200, decided)], 1))
    # log pi(u) sums the decided blocks' Bernoulli log-probabilities under s' only
    bounded = bounded_probabilities(probabilities, policy.alpha)[:, fixed:]
    by_hand = torch.where(decisions[:, fixed:] == 1, bounded.log(), (1 - bounded).log()).sum(1)
    assert torch.allclose(policy.log_probability(probabilities, decisions), by_hand, atol=1e-5)


def test_a_training_step_gets_the_probabilities_its_decisions_were_drawn_from_with_their_gradient():
    torch.manual_seed(0)
    backbone = cifar_resnet(8)
    policy = BlockDropPolicy.for_backbone(backbone, depth=8, width=4)
    # as the curriculum trains it: skipped mode, the backbone frozen (joint finetuning is masked)
    net = DynamicNetwork(backbone, policy, train_mode="skipped").freeze_backbone().train()
    images = torch.randn(6, 3, 32, 32)
    torch.manual_seed(5)
    logits, decisions, probabilities = training_forward(net, images)
    assert logits.shape == (6, 10) and decisions.shape == probabilities.shape == (6, 3)
    assert probabilities.requires_grad and not decisions.requires_grad   # the gradient goes through log pi
    torch.testing.assert_close(probabilities, policy.probabilities(images))
    torch.manual_seed(5)   # the same draw again, from these probabilities
    assert torch.equal(decisions, policy.distribution(probabilities).sample())
    assert training_forward(backbone, images)[1:] == (None, None)   # a plain network has neither


def test_thresholded_policies_are_deterministic_and_masked_equals_skipped():
    torch.manual_seed(0)
    backbone = cifar_resnet(20).eval()
    policy = BlockDropPolicy.for_backbone(backbone, depth=8, width=4)
    torch.nn.init.normal_(policy.extractor.head[-1].weight, std=1.0)    # varied decisions
    net = DynamicNetwork(backbone, policy, train_mode="skipped", eval_mode="skipped").eval()
    images = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        skipped, first = net(images, return_decisions=True)
        masked, second = net(images, mode="masked", return_decisions=True)
    assert torch.equal(first, second) and torch.equal(first, (policy.probabilities(images) >= 0.5).float())
    assert 0 < first.mean() < 1
    assert torch.allclose(masked, skipped, atol=1e-5)


def test_policy_cost_is_its_resnets():
    policy = BlockDropPolicy(9, depth=8, width=8)
    macs, params = policy.macs_and_params()
    plain = cifar_resnet(8, num_classes=9, width=8)
    assert params == sum(p.numel() for p in plain.parameters())
    assert 0 < macs < 41e6 / 10            # a small fraction of ResNet-20's 41 M


def test_spent_macs_adds_the_deciders_cost_to_the_blocks_or_filters_that_ran():
    from dyninf.network.cost import network_cost
    from dyninf.deciders import Gater
    from dyninf.network.dynamic import spent_macs

    backbone = cifar_resnet(8, width=8)
    cost = network_cost(backbone)
    policy_net = DynamicNetwork(backbone, BlockDropPolicy.for_backbone(backbone, depth=8, width=4))
    decisions = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    policy_macs = policy_net.decider.macs_and_params()[0]
    expected = [cost.stem_macs + cost.head_macs + cost.block_macs[0] + cost.block_macs[2] + policy_macs,
                cost.stem_macs + cost.head_macs + policy_macs]
    assert spent_macs(policy_net, decisions).tolist() == pytest.approx(expected)
    gater_net = DynamicNetwork(backbone, Gater.for_backbone(backbone, depth=8, width=4, bottleneck=8))
    gates = torch.ones(2, backbone.num_filter_gates)
    assert spent_macs(gater_net, gates).tolist() == pytest.approx(
        [cost.total_macs + gater_net.decider.macs_and_params()[0]] * 2)


class _TwoOfThreeNetwork:
    """A stand-in for a DynamicNetwork under BlockDrop's loss hook, whose outcome is known: a
    3-block network that predicts class 0 when at least two blocks run, else class 1."""
    num_blocks, train_mode = 3, "skipped"

    def __init__(self, decided):
        self.decider = BlockDropPolicy(3, depth=8, width=4)
        self.decider.decided_blocks = decided

    @staticmethod
    def logits(decisions):
        class_0 = (decisions.sum(1) >= 2).float()
        return torch.stack([class_0, 1 - class_0], 1)

    def backbone(self, images, decisions, mode):
        return self.logits(decisions)


def _hook_loss(probabilities, sampled, decided, penalty=1.0, entropy_weight=0.0):
    net = _TwoOfThreeNetwork(decided)
    losses, metrics = blockdrop_losses(penalty, entropy_weight)
    decisions = torch.tensor([sampled])
    step = TrainingStep(net, torch.zeros(1, 3, 32, 32), torch.tensor([0]), net.logits(decisions), decisions,
                        probabilities=torch.tensor([probabilities]))
    return losses["policy_loss"](step).item(), {name: metric(step).item() for name, metric in metrics.items()}


def _entropy(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_the_training_loss_is_the_self_critical_policy_gradient_by_hand():
    # s = 0.9 for every block, alpha = 0.8: s' = 0.8 * 0.9 + 0.2 * 0.1 = 0.74. The greedy policy runs
    # all 3 blocks and is right: R(u~) = 1 - (3/3)^2 = 0. The sample u = (0, 0, 1) runs one and is
    # wrong: R(u) = -gamma = -1. Advantage -1, so the loss is +log pi(u) = 2 log 0.26 + log 0.74.
    loss, metrics = _hook_loss([0.9, 0.9, 0.9], [0.0, 0.0, 1.0], decided=3)
    assert loss == pytest.approx(2 * math.log(0.26) + math.log(0.74), rel=1e-5)
    assert metrics == pytest.approx({"reward": -1.0, "blocks": 1.0})


def test_the_reward_counts_every_block_that_ran_and_the_policy_only_the_decided_ones():
    # The curriculum decides the last 2 of 3 blocks; block 0 always runs. s = (0.9, 0.1, 0.9):
    # greedy u~ = (1, 0, 1), right with 2 of 3 blocks: R(u~) = 1 - (2/3)^2 = 5/9. The sample
    # u = (1, 1, 1) is right with all 3: R(u) = 0. Advantage -5/9; log pi(u) over blocks 1 and 2
    # only: s'_1 = 0.8 * 0.1 + 0.2 * 0.9 = 0.26, s'_2 = 0.74.
    log_pi = math.log(0.26) + math.log(0.74)
    loss, metrics = _hook_loss([0.9, 0.1, 0.9], [1.0, 1.0, 1.0], decided=2)
    assert loss == pytest.approx(5 / 9 * log_pi, rel=1e-5)
    assert metrics == pytest.approx({"reward": 0.0, "blocks": 3.0})
    # the entropy bonus: beta times the bounded Bernoulli entropy of the decided blocks only
    with_bonus, _ = _hook_loss([0.9, 0.1, 0.9], [1.0, 1.0, 1.0], decided=2, entropy_weight=0.1)
    assert with_bonus == pytest.approx(5 / 9 * log_pi - 0.1 * 2 * _entropy(0.26), rel=1e-5)


def test_a_curriculum_beyond_the_network_is_a_clear_error():
    policy = BlockDropPolicy(9, depth=8, width=4)
    for count in (10, -1, 2.5):
        with pytest.raises(ValueError, match="decided_blocks must be an integer from 0 to the network's 9"):
            policy.decided_blocks = count
    assert policy.decided_blocks == 9


def test_the_papers_bound_is_the_default_and_a_policy_samples_with_its_own_bound():
    assert bounded_probabilities(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([0.2, 0.8])   # alpha = 0.8
    policy = BlockDropPolicy(2, width=4, alpha=0.6)
    assert policy.distribution(torch.tensor([[1.0, 0.0]])).probs[0].tolist() == pytest.approx([0.6, 0.4])


def test_greedy_keeps_a_block_at_exactly_one_half():
    policy = BlockDropPolicy(3, width=4)
    assert policy.greedy(torch.tensor([[0.5, 0.4999, 0.9]])).tolist() == [[1.0, 0.0, 1.0]]


def test_the_entropy_is_each_images_own_sum_over_the_decided_blocks():
    policy = BlockDropPolicy(3, width=4, alpha=0.8)
    policy.decided_blocks = 2
    probabilities = torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.0, 0.5]])   # bounded: 0.5 -> 0.5, 1 -> 0.8, 0 -> 0.2
    def h(p):
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert policy.entropy(probabilities).tolist() == pytest.approx([h(0.5) + h(0.8), h(0.2) + h(0.5)])


def test_the_entropy_weight_alone_adds_the_bonus_and_needs_the_entropy():
    log_probability, reward = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 0.0])
    plain = policy_gradient_loss(log_probability, reward, torch.zeros(2))
    assert policy_gradient_loss(log_probability, reward, torch.zeros(2), torch.tensor([0.5, 0.7])) == plain
    with pytest.raises(ValueError, match=r"an entropy weight \(0.1\) needs the policy's entropy"):
        policy_gradient_loss(log_probability, reward, torch.zeros(2), entropy_weight=0.1)


def test_a_fresh_policy_is_a_resnet8_of_width_16_keeping_every_block_with_probability_sigmoid_1():
    torch.manual_seed(0)
    policy = BlockDropPolicy(1).eval()                       # one block is enough to decide
    assert policy.extractor.depth == 8 and policy.extractor.stem[0].out_channels == 16
    with torch.no_grad():
        start = policy.probabilities(torch.randn(16, 3, 32, 32))
    assert start.shape == (16, 1) and (start - torch.sigmoid(torch.tensor(1.0))).abs().max() < 0.05
    with pytest.raises(ValueError, match="^num_blocks must be positive, got 0$"):
        BlockDropPolicy(0)


def test_a_policy_for_a_backbone_takes_its_blocks_and_the_settings_given():
    policy = BlockDropPolicy.for_backbone(cifar_resnet(8), depth=14, width=4, alpha=0.7)
    assert (policy.num_blocks, policy.extractor.depth, policy.extractor.stem[0].out_channels, policy.alpha) == (3, 14, 4, 0.7)
