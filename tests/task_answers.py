"""Answers a student could hand in for each graded task (keyed by its solution cell's grade id),
besides the model solution: ones that only call the library's implementation, and plausible wrong
ones. Each is the whole solution cell; every one of them must fail the task's checks."""

DELEGATING = {
    "00-residual-output": ['''
from dyninf.network.backbones import ResidualBlock


class GivenParts(ResidualBlock):   # the library's block, fed the shortcut and residual given
    def __init__(self, shortcut, residual):
        super().__init__(1, 1, 1)
        self.given_shortcut, self.given_residual = shortcut, residual

    def shortcut(self, x):
        return self.given_shortcut

    def residual(self, x, filters=None):
        return self.given_residual


def residual_output(shortcut, residual, decisions):
    return GivenParts(shortcut, residual)(shortcut, decisions)
''', '''
from dyninf.network.skipping import scaled_residual


def residual_output(shortcut, residual, decisions):
    return torch.relu(shortcut + scaled_residual(residual, decisions, True))
'''],
    "00-conv-macs": ['''
from dyninf.network.cost import layer_macs


def conv_macs(in_channels, out_channels, kernel_size, output_height, output_width):
    conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size, bias=False)
    return layer_macs(conv, torch.zeros(1, out_channels, output_height, output_width))


first_conv_macs = conv_macs(3, 16, 3, 32, 32)
'''],
    "00-option-a-shortcut": ['''
from dyninf.network.backbones import BasicBlock


def option_a_shortcut(x, out_channels):
    return BasicBlock(x.shape[1], out_channels, stride=2).shortcut(x)
'''],
    "01-linear-decay": ['''
from dyninf.deciders import survival_probabilities

linear_decay = survival_probabilities
'''],
    "01-expected-blocks": ['''
from dyninf.deciders import StochasticDepth


def expected_blocks(survival):
    survival = torch.as_tensor(survival, dtype=torch.float32)
    decider = StochasticDepth(len(survival))
    decider.survival = survival
    return len(survival) * (1 - decider.expected_fraction_dropped())


resnet110_expected = expected_blocks(linear_decay(54, 0.5))
'''],
    "01-drop-residual": ['''
from dyninf.deciders import StochasticDepth


def stochastic_depth_residual(residual, survival, generator):
    decider = StochasticDepth(1, p_last=survival, mode="batch").train()
    return residual * decider(0, residual)
'''],
    "02-target-rate-loss": ['''
from dyninf.deciders import target_rate_loss

rate_loss = target_rate_loss
'''],
    "02-gumbel-gate": ['''
from dyninf.network.backbones import cifar_resnet
from dyninf.deciders import AIGGates


def gumbel_gate(logits, gumbel_noise, tau=1.0):
    gates = AIGGates(cifar_resnet(20)).train()
    gates.gate_for(1).forward = lambda block_input: logits + gumbel_noise
    return gates(1, torch.zeros(len(logits), 16, 1, 1))
'''],
    "02-threshold-for-rate": ['''
from dyninf.deciders.aig import _threshold_for_rate


def threshold_for_rate(margins, rate):
    return _threshold_for_rate(margins, rate)
'''],
    "03-saturating-sigmoid": ['''
from dyninf.deciders import saturated_sigmoid

saturating_sigmoid = saturated_sigmoid
'''],
    "03-improved-semhash": ['''
from dyninf.deciders import improved_semhash


def semhash_gates(logits, noise, use_soft):
    soft = saturating_sigmoid(logits + noise)
    hard = improved_semhash(logits + noise, training=False) + soft - soft.detach()
    return torch.where(use_soft, soft, hard)
'''],
    "03-gate-sparsity": ['''
from dyninf.deciders import gate_sparsity_loss

sparsity_loss = gate_sparsity_loss


def union_open_fraction(gates):
    return (gates != 0).any(dim=0).float().mean().item()
'''],
    "04-reward": ['''
from dyninf.deciders import blockdrop_reward

reward_per_image = blockdrop_reward
'''],
    "04-self-critical": ['''
from dyninf.deciders import policy_gradient_loss


def self_critical_loss(log_probability, reward, greedy_reward):
    return policy_gradient_loss(log_probability, reward, greedy_reward)
'''],
    "04-bounded-probabilities": ['''
from dyninf.deciders import bounded_probabilities

bounded = bounded_probabilities
'''],
    "05-standard-error": ['''
from dyninf.measure.uncertainty import binomial_standard_error

standard_error = binomial_standard_error
'''],
    "05-frontier-accuracy": ['''
from dyninf.measure.frontier import ACCURACY, MACS, frontier_accuracy


def frontier_accuracy_at(macs, accuracies, cost, chance):
    return frontier_accuracy(pd.DataFrame({MACS: macs, ACCURACY: accuracies}), cost, chance)
'''],
    "05-compare-accuracies": ['''
from dyninf.measure.uncertainty import compare_accuracies


def compare(accuracy, other, images):
    return compare_accuracies(accuracy, other, images)[0]
'''],
}

WRONG = {
    "00-residual-output": ['''
def residual_output(shortcut, residual, decisions):   # no ReLU
    return shortcut + decisions.view(-1, 1, 1, 1) * residual
''', '''
def residual_output(shortcut, residual, decisions):   # the decision on the wrong axis
    return torch.relu(shortcut + decisions.view(1, -1, 1, 1) * residual)
'''],
    "00-conv-macs": ['''
def conv_macs(in_channels, out_channels, kernel_size, output_height, output_width):   # no input channels
    return out_channels * kernel_size * kernel_size * output_height * output_width


first_conv_macs = conv_macs(3, 16, 3, 32, 32)
'''],
    "00-option-a-shortcut": ['''
def option_a_shortcut(x, out_channels):   # starts with the second row and column
    subsampled = x[:, :, 1::2, 1::2]
    zeros = subsampled.new_zeros(len(x), out_channels - x.shape[1], *subsampled.shape[2:])
    return torch.cat([subsampled, zeros], dim=1)
''', '''
def option_a_shortcut(x, out_channels):   # the zero channels before the input's
    subsampled = x[:, :, ::2, ::2]
    zeros = subsampled.new_zeros(len(x), out_channels - x.shape[1], *subsampled.shape[2:])
    return torch.cat([zeros, subsampled], dim=1)
'''],
    "01-linear-decay": ['''
def linear_decay(num_blocks, p_last):   # off by one: l = 0 ... L - 1
    layers = torch.arange(0, num_blocks, dtype=torch.float64)
    return 1 - layers / num_blocks * (1 - p_last)
'''],
    "01-expected-blocks": ['''
def expected_blocks(survival):   # the mean, not the sum
    return float(torch.as_tensor(survival, dtype=torch.float64).mean())


resnet110_expected = expected_blocks(linear_decay(54, 0.5))
'''],
    "01-drop-residual": ['''
def stochastic_depth_residual(residual, survival, generator):   # not scaled by 1 / p_l
    if torch.rand(1, generator=generator).item() < survival:
        return residual
    return torch.zeros_like(residual)
''', '''
def stochastic_depth_residual(residual, survival, generator):   # ignores the generator given
    if torch.rand(1).item() < survival:
        return residual / survival
    return torch.zeros_like(residual)
'''],
    "02-target-rate-loss": ['''
def rate_loss(decisions, target, gated_blocks):   # rates over the wrong axis
    rates = decisions[:, gated_blocks].mean(dim=1)
    return ((rates - target) ** 2).mean()
''', '''
def rate_loss(decisions, target, gated_blocks):   # every block, gated or not
    rates = decisions.mean(dim=0)
    return ((rates - target) ** 2).mean()
'''],
    "02-gumbel-gate": ['''
def gumbel_gate(logits, gumbel_noise, tau=1.0):   # soft: no straight-through hard decision
    return torch.softmax((logits + gumbel_noise) / tau, dim=1)[:, 1]
''', '''
def gumbel_gate(logits, gumbel_noise, tau=1.0):   # the skip column
    soft = torch.softmax((logits + gumbel_noise) / tau, dim=1)
    hard = torch.nn.functional.one_hot(soft.argmax(dim=1), 2).to(soft.dtype)
    return (hard - soft.detach() + soft)[:, 0]
'''],
    "02-threshold-for-rate": ['''
def threshold_for_rate(margins, rate):   # off by one
    passing = round(rate * len(margins))
    if passing >= len(margins):
        return -float("inf")
    return margins.sort(descending=True).values[max(passing - 1, 0)].item()
'''],
    "03-saturating-sigmoid": ['''
def saturating_sigmoid(x):   # not clamped to [0, 1]
    return 1.2 * torch.sigmoid(x) - 0.1
'''],
    "03-improved-semhash": ['''
def semhash_gates(logits, noise, use_soft):   # hard gates without the straight-through gradient
    soft = saturating_sigmoid(logits + noise)
    hard = (logits + noise > 0).to(soft.dtype)
    return torch.where(use_soft, soft, hard)
'''],
    "03-gate-sparsity": ['''
def sparsity_loss(gates):   # summed over the gates, not their mean
    return gates.abs().sum(dim=1).mean()


def union_open_fraction(gates):
    return (gates != 0).any(dim=0).float().mean().item()
''', '''
def sparsity_loss(gates):
    return gates.abs().sum(dim=1).mean() / gates.shape[1]


def union_open_fraction(gates):   # open for every image, not for some
    return (gates != 0).all(dim=0).float().mean().item()
'''],
    "04-reward": ['''
def reward_per_image(correct, blocks_used, num_blocks, penalty):   # linear, not squared
    sparsity = 1 - blocks_used.float() / num_blocks
    return torch.where(correct, sparsity, torch.full_like(sparsity, -float(penalty)))
'''],
    "04-self-critical": ['''
def self_critical_loss(log_probability, reward, greedy_reward):   # the advantage not detached
    return -((reward - greedy_reward) * log_probability).mean()
''', '''
def self_critical_loss(log_probability, reward, greedy_reward):   # the sign flipped
    return ((reward - greedy_reward).detach() * log_probability).mean()
'''],
    "04-bounded-probabilities": ['''
def bounded(probabilities, alpha):   # alpha and 1 - alpha swapped
    return (1 - alpha) * probabilities + alpha * (1 - probabilities)
'''],
    "05-standard-error": ['''
def standard_error(accuracy, images):   # n - 1
    return (accuracy * (1 - accuracy) / (images - 1)) ** 0.5
'''],
    "05-frontier-accuracy": ['''
import numpy as np


def frontier_accuracy_at(macs, accuracies, cost, chance):   # without the point (0, chance)
    return float(np.interp(cost, macs, accuracies))
'''],
    "05-compare-accuracies": ['''
def compare(accuracy, other, images):   # one standard error, not two
    error = (standard_error(accuracy, images) ** 2 + standard_error(other, images) ** 2) ** 0.5
    if abs(accuracy - other) <= error:
        return "within error"
    return "higher" if accuracy > other else "lower"
'''],
}
