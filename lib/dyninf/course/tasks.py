"""The graded tasks' library answers: for each task (its solution cell's grade id), the library's
implementations of what it asks the student to write.

A student copy never shows their source or imports them by name (``dyninf.tools.classroom``), and a
task's hidden checks call the student's code with them disabled (``library_answers_disabled``), so
that an answer that only calls the library fails, however it reached the library's function (an
import, an alias, a subclass). The checks compare against values computed before, by the library
or by hand.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Callable, Iterator

LIBRARY_ANSWERS: dict[str, tuple[str, ...]] = {
    "00-residual-output": ("dyninf.network.backbones.ResidualBlock.forward",
                           "dyninf.network.backbones.ResidualBlock.run_skipped",
                           "dyninf.network.backbones.rectified_sum",
                           "dyninf.network.skipping.scaled_residual"),
    "00-conv-macs": ("dyninf.network.cost.layer_macs",),
    "00-option-a-shortcut": ("dyninf.network.backbones.ResidualBlock.shortcut",),
    "01-linear-decay": ("dyninf.deciders.stochastic_depth.survival_probabilities",),
    "01-expected-blocks": ("dyninf.deciders.stochastic_depth.StochasticDepth.expected_fraction_dropped",),
    "01-drop-residual": ("dyninf.deciders.stochastic_depth.StochasticDepth.forward",),
    "02-target-rate-loss": ("dyninf.deciders.aig.target_rate_loss",),
    "02-gumbel-gate": ("dyninf.deciders.aig.AIGGates.forward",),
    "02-threshold-for-rate": ("dyninf.deciders.aig._threshold_for_rate",),
    "03-saturating-sigmoid": ("dyninf.deciders.gaternet.saturated_sigmoid",),
    "03-improved-semhash": ("dyninf.deciders.gaternet.improved_semhash",),
    "03-gate-sparsity": ("dyninf.deciders.gaternet.gate_sparsity_loss",),
    "04-reward": ("dyninf.deciders.blockdrop.blockdrop_reward",),
    "04-self-critical": ("dyninf.deciders.blockdrop.policy_gradient_loss",),
    "04-bounded-probabilities": ("dyninf.deciders.blockdrop.bounded_probabilities",),
    "05-standard-error": ("dyninf.measure.uncertainty.binomial_standard_error",),
    "05-frontier-accuracy": ("dyninf.measure.frontier.frontier_accuracy",),
    "05-compare-accuracies": ("dyninf.measure.uncertainty.compare_accuracies", "dyninf.measure.uncertainty.difference_standard_error"),
}


class LibraryAnswerCalled(AssertionError):
    """A graded task's answer called the library's implementation of what it asks for."""


def library_object(dotted: str) -> Callable:
    """The function or method named ``dotted`` (``package.module.function`` or
    ``package.module.Class.method``)."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ValueError(f"expected a dotted name of a library function, got {dotted!r}")


def answers_of(task: str) -> tuple[str, ...]:
    if task not in LIBRARY_ANSWERS:
        raise KeyError(f"unknown graded task {task!r}; expected one of {', '.join(LIBRARY_ANSWERS)}")
    return LIBRARY_ANSWERS[task]


def _raising_code(task: str, dotted: str, function: Callable):
    # The function object itself is changed (its code swapped), not the name it is bound to, so
    # that every reference a student's code holds to it raises: an import made earlier, an alias.
    if function.__code__.co_freevars:
        raise TypeError(f"{dotted} uses a closure; library_answers_disabled cannot disable it")
    message = (f"task {task} asks you to write this yourself, but your code called the library's "
               f"{dotted}, which the check disables")
    namespace: dict = {}
    exec(f"def {function.__name__}(*args, **kwargs):\n"
         f"    raise __import__('dyninf.course.tasks', fromlist=['_']).LibraryAnswerCalled({message!r})\n", namespace)
    return namespace[function.__name__].__code__


@contextlib.contextmanager
def library_answers_disabled(task: str) -> Iterator[None]:
    """Within the block, every library implementation of ``task``'s answer raises
    ``LibraryAnswerCalled``; restored afterwards, whatever happened."""
    functions = [(dotted, inspect.unwrap(library_object(dotted))) for dotted in answers_of(task)]
    replacements = [(function, _raising_code(task, dotted, function)) for dotted, function in functions]
    saved = [(function, function.__code__, function.__defaults__, function.__kwdefaults__)
             for function, _ in replacements]
    try:
        for function, code in replacements:
            function.__code__, function.__defaults__, function.__kwdefaults__ = code, None, None
        yield
    finally:
        for function, code, defaults, kwdefaults in saved:
            function.__code__, function.__defaults__, function.__kwdefaults__ = code, defaults, kwdefaults
