"""The graded tasks' library answers, and the checks' switch that disables them."""
import pytest
import torch

from dyninf.deciders import blockdrop_reward, target_rate_loss
from dyninf.deciders.aig import target_rate_loss as target_rate_loss_in_its_module
from dyninf.course.tasks import LIBRARY_ANSWERS, LibraryAnswerCalled, library_answers_disabled, library_object


def test_every_library_answer_names_a_function_or_method_the_switch_can_disable():
    for task, names in LIBRARY_ANSWERS.items():
        assert names, task
        for dotted in names:
            assert callable(library_object(dotted)), dotted
        with library_answers_disabled(task):
            pass


def test_within_the_block_every_reference_to_the_answer_raises_and_afterwards_it_works_again():
    decisions = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    alias = target_rate_loss   # bound before the block, as a student's import or alias would be
    with library_answers_disabled("02-target-rate-loss"):
        for reference in (alias, target_rate_loss_in_its_module, library_object("dyninf.deciders.aig.target_rate_loss")):
            with pytest.raises(LibraryAnswerCalled, match="task 02-target-rate-loss asks you to write this yourself"):
                reference(decisions, 0.5, [0, 1])
        assert blockdrop_reward(torch.tensor([True]), torch.tensor([1]), 2, 1.0).item() == 0.75, "another task's"
    assert abs(alias(decisions, 0.5, [0, 1]).item() - 0.125) < 1e-7   # ((1 - 0.5)^2 + (0.5 - 0.5)^2) / 2


def test_a_method_is_disabled_for_every_instance_and_restored_after_an_error():
    from dyninf.network.backbones import cifar_resnet

    block = cifar_resnet(20).blocks[1]   # an identity shortcut
    x = torch.randn(2, 16, 32, 32)
    with pytest.raises(ZeroDivisionError):
        with library_answers_disabled("00-option-a-shortcut"):
            with pytest.raises(LibraryAnswerCalled, match="ResidualBlock.shortcut"):
                block.shortcut(x)
            1 / 0
    assert torch.equal(block.shortcut(x), x), "restored, defaults and all"


def test_an_unknown_task_or_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown graded task '02-target-rate'; expected one of 00-residual-output"):
        with library_answers_disabled("02-target-rate"):
            pass
    with pytest.raises(ValueError, match="expected a dotted name of a library function, got 'nowhere'"):
        library_object("nowhere")
