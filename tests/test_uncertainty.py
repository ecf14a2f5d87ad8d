import math

import pytest

from dyninf.measure.uncertainty import binomial_standard_error, compare_accuracies, difference_standard_error


def test_binomial_standard_error_by_hand():
    assert binomial_standard_error(0.5, 100) == pytest.approx(0.05)                  # sqrt(.25 / 100)
    assert binomial_standard_error(0.65, 2000) == pytest.approx(0.0106654, rel=1e-5)  # the course's ~1.1 points
    assert binomial_standard_error(1.0, 50) == 0.0


def test_difference_error_adds_the_two_variances():
    assert difference_standard_error(0.5, 0.5, 100) == pytest.approx(math.sqrt(2) * 0.05)
    assert difference_standard_error(0.9, 0.5, 100) == pytest.approx(math.sqrt(0.0009 + 0.0025))


@pytest.mark.parametrize("accuracy, images, message", [(65.0, 2000, "fraction in"), (0.6, 0, "positive count")])
def test_bad_input_names_what_was_expected(accuracy, images, message):
    with pytest.raises(ValueError, match=message):
        binomial_standard_error(accuracy, images)


def test_accuracies_differ_only_beyond_two_standard_errors_of_the_difference():
    # at 0.65 on 2,000 images each accuracy has a standard error of 0.01067, the difference 0.01508
    assert compare_accuracies(0.70, 0.65, 2000)[0] == "higher"          # 3.3 standard errors
    assert compare_accuracies(0.62, 0.65, 2000)[0] == "within error"    # 2.0 standard errors
    assert compare_accuracies(0.61, 0.65, 2000)[0] == "lower"           # 2.7 standard errors
    assert compare_accuracies(0.65, 0.65, 2000) == ("within error", pytest.approx(0.015085, rel=1e-3))
