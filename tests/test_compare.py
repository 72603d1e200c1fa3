"""compare: precise reasons for wrong answers."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_choice,
    assert_close,
    call,
    is_stub,
)


def wrong_message(got, expected, **kwargs) -> str:
    with pytest.raises(Wrong) as info:
        assert_close(got, expected, **kwargs)
    return str(info.value)


def test_close_values_pass():
    """Values within tolerance pass silently."""
    assert_close([1.0, 2.0 + 1e-12], [1.0, 2.0])
    assert_close(np.float32(0.5), 0.5)


def test_scalar_message_says_expected_and_got():
    """A wrong number names both values and the test input."""
    message = wrong_message(2.5, 3.0, name="slope", context="for x=1")
    assert "slope is 2.5, expected 3 for x=1" in message


def test_array_message_names_worst_element():
    """A wrong array names how many elements differ and the worst index."""
    expected = np.arange(6.0).reshape(2, 3)
    got = expected.copy()
    got[1, 2] += 5
    message = wrong_message(got, expected)
    assert "1 of 6 elements" in message
    assert "(1, 2)" in message and "got 10" in message and "expected 5" in message


def test_transposed_shape_is_named():
    """A (3, 2) answer to a (2, 3) question is called transposed."""
    expected = np.ones((2, 3))
    assert "transposed" in wrong_message(expected.T, expected)


def test_sign_error_is_named():
    """An answer that is exactly the negative is called a sign error."""
    assert "sign error" in wrong_message([-1.0, 2.0, -3.0], [1.0, -2.0, 3.0])


def test_constant_factor_is_named():
    """An answer off by a constant factor says the factor."""
    assert "factor of 2" in wrong_message([2.0, 4.0], [1.0, 2.0])


def test_named_mistake_wins():
    """A value matching a registered common mistake names that mistake."""
    message = wrong_message(1 / 3, 3.0, mistakes={"run over rise": 1 / 3})
    assert "common mistake: run over rise" in message


def test_nan_is_reported():
    """nan in an answer is reported with its index."""
    assert "nan or inf at index (1,)" in wrong_message([1.0, np.nan], [1.0, 2.0])


def test_non_numeric_answer_is_reported():
    """A string where a number belongs says what type came."""
    assert "got str" in wrong_message("three", 3.0)


def test_stub_is_not_attempted():
    """The release placeholder ... is recognised everywhere."""
    assert is_stub(...)
    with pytest.raises(NotAttempted):
        assert_close(..., 1.0)
    with pytest.raises(NotAttempted):
        call(...)
    with pytest.raises(NotAttempted):
        call(lambda: ...)


def test_call_reports_exceptions_with_arguments():
    """A crash in learner code becomes feedback naming the error and the call."""
    with pytest.raises(Wrong) as info:
        call(lambda x: 1 / 0, 0.5, what="f")
    assert "ZeroDivisionError" in str(info.value) and "0.5" in str(info.value)


def test_call_rejects_non_callable():
    """A number where a function belongs says so."""
    with pytest.raises(Wrong, match="expected f to be a function, got int"):
        call(3, what="f")


def test_choice_explains_wrong_option():
    """A wrong multiple-choice key says which and why."""
    choices = {"a": "first", "b": "second"}
    assert_choice("A ", "a", choices, name="q")
    with pytest.raises(Wrong, match=r"'b' \(second\) is not right\. because"):
        assert_choice("b", "a", choices, name="q", why={"b": "because"})
    with pytest.raises(Wrong, match="should be one of 'a', 'b'"):
        assert_choice("c", "a", choices, name="q")
