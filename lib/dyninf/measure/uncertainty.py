"""Sampling error of test accuracies: what a difference between two networks must exceed before a
notebook calls one better. A test set of n images measures an accuracy p with the binomial
standard error sqrt(p (1 - p) / n): about 1.1 points at p = 0.65 and n = 2,000."""
from __future__ import annotations

import math

SIGNIFICANT = 2.0   # a difference counts when it exceeds this many standard errors (about 95%)


def binomial_standard_error(accuracy: float, images: int) -> float:
    """Standard error of an ``accuracy`` in [0, 1] measured on ``images`` test images."""
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if images < 1:
        raise ValueError(f"images must be a positive count, got {images}")
    return math.sqrt(accuracy * (1 - accuracy) / images)


def difference_standard_error(accuracy: float, other: float, images: int) -> float:
    """Standard error of ``accuracy - other``, both measured on ``images`` test images, treated as
    independent. On the same test images the two are positively correlated, so this overstates
    the error: a difference it calls significant is one."""
    return math.hypot(binomial_standard_error(accuracy, images), binomial_standard_error(other, images))


def compare_accuracies(accuracy: float, other: float, images: int) -> tuple[str, float]:
    """Whether ``accuracy`` is "higher" or "lower" than ``other`` (fractions on ``images`` test
    images each) by more than ``SIGNIFICANT`` standard errors of the difference, or "within error";
    and that standard error."""
    error = difference_standard_error(accuracy, other, images)
    if abs(accuracy - other) <= SIGNIFICANT * error:
        return "within error", error
    return ("higher" if accuracy > other else "lower"), error
