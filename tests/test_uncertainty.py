import math

import pytest

from dyninf.uncertainty import binomial_standard_error, difference_standard_error


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
