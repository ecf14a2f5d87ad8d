import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.network.cost import network_cost
from dyninf.deciders import AIGGates, BlockDropPolicy, Gater, StochasticDepth
from dyninf.decisions import DeciderKind
from dyninf.network.dynamic import DynamicNetwork, spent_macs


def test_each_decider_states_how_it_is_called():
    backbone = cifar_resnet(8)
    kinds = {type(decider).__name__: DynamicNetwork(backbone, decider).kind for decider in (
        StochasticDepth(backbone.num_blocks), AIGGates(backbone), BlockDropPolicy.for_backbone(backbone),
        Gater.for_backbone(backbone, depth=8))}
    assert kinds == {"StochasticDepth": DeciderKind.TRAINING_ONLY, "AIGGates": DeciderKind.PER_BLOCK,
                     "BlockDropPolicy": DeciderKind.BLOCKS, "Gater": DeciderKind.FILTERS}
    assert [kind for kind in DeciderKind if kind.decides_once] == [DeciderKind.BLOCKS, DeciderKind.FILTERS]


def test_a_decider_that_does_not_state_its_kind_is_refused_by_name():
    class Unstated(torch.nn.Module):
        def forward(self, index, block_input):
            return torch.ones(len(block_input))

    with pytest.raises(TypeError, match=r"DeciderKind.*Unstated has None"):
        DynamicNetwork(cifar_resnet(8), Unstated())


def test_the_kind_decides_whether_decisions_are_costed_as_filter_gates_or_as_blocks():
    backbone = cifar_resnet(8)
    whole = network_cost(backbone).total_macs
    gater, policy = Gater.for_backbone(backbone, depth=8), BlockDropPolicy.for_backbone(backbone)
    gated, dropping = DynamicNetwork(backbone, gater), DynamicNetwork(backbone, policy)
    every_filter, every_block = torch.ones(2, backbone.num_filter_gates), torch.ones(2, backbone.num_blocks)
    assert spent_macs(gated, every_filter).tolist() == [whole + gater.macs_and_params()[0]] * 2
    assert spent_macs(dropping, every_block).tolist() == [whole + policy.macs_and_params()[0]] * 2
    closed = spent_macs(gated, torch.zeros_like(every_filter)) - gater.macs_and_params()[0]
    assert (closed < whole / 2).all()   # every gated (inner) filter closed: the branches' work is not counted
