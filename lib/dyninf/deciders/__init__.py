"""Deciders: whatever tells the shared backbone which blocks to run for each image.

Every method of the course is the same residual network with a different decider:
a fixed tensor (``dyninf.decisions``), a random decider (stochastic depth), a local gate per block (AIG),
a global policy (BlockDrop) and a global gater over filters (GaterNet).

May import: dyninf.decisions, dyninf.network, dyninf.utils.
"""
from dyninf.deciders.aig import AIGGates, calibrate_thresholds, check_target_rate, target_rate_loss
from dyninf.deciders.blockdrop import (BlockDropPolicy, blockdrop_reward, bounded_probabilities,
                                       check_alpha, check_penalty, curriculum_step,
                                       policy_gradient_loss)
from dyninf.deciders.gaternet import Gater, gate_sparsity_loss, improved_semhash, saturated_sigmoid
from dyninf.deciders.stochastic_depth import StochasticDepth, survival_probabilities
from dyninf.decisions import BlockDecider, FixedDecisions, as_decider, random_decisions

__all__ = ["AIGGates", "calibrate_thresholds", "check_target_rate", "target_rate_loss",
           "BlockDropPolicy", "blockdrop_reward", "bounded_probabilities", "check_alpha",
           "check_penalty", "curriculum_step", "policy_gradient_loss",
           "BlockDecider", "FixedDecisions", "as_decider", "random_decisions",
           "Gater", "gate_sparsity_loss", "improved_semhash", "saturated_sigmoid",
           "StochasticDepth", "survival_probabilities"]
