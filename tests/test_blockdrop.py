"""BlockDrop: reward, probability bound, self-critical policy gradient and curriculum by hand, and
the policy driving the shared backbone's blocks."""
import math

import pytest
import torch

from dyninf.backbones import cifar_resnet
from dyninf.deciders import (BlockDropPolicy, blockdrop_reward, bounded_probabilities, curriculum_step,
                             policy_gradient_loss)
from dyninf.dynamic import DynamicNetwork


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
    keep_rate = torch.cat([policy(torch.randn(64, 3, 32, 32)) for _ in range(8)]).mean().item()
    assert keep_rate == pytest.approx(0.8, abs=0.03)
    assert torch.equal(policy.eval()(torch.randn(5, 3, 32, 32)), torch.ones(5, 4))


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
    decisions = policy(images)
    fixed = 9 - decided
    assert torch.equal(decisions[:, :fixed], torch.ones(200, fixed))
    assert decisions[:, fixed:].mean().item() == pytest.approx(0.2, abs=0.05)   # the bound 1 - alpha
    greedy = policy.greedy()
    assert torch.equal(greedy, torch.cat([torch.ones(200, fixed), torch.zeros(200, decided)], 1))
    # log pi(u) sums the decided blocks' Bernoulli log-probabilities under s' only
    bounded = bounded_probabilities(policy.last_probabilities, policy.alpha)[:, fixed:]
    by_hand = torch.where(decisions[:, fixed:] == 1, bounded.log(), (1 - bounded).log()).sum(1)
    assert torch.allclose(policy.log_probability(decisions), by_hand, atol=1e-5)


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
    from dyninf.cost import network_cost
    from dyninf.deciders import Gater
    from dyninf.dynamic import spent_macs

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
