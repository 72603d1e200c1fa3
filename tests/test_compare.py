"""compare: precise reasons for wrong answers."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    as_array,
    assert_choice,
    assert_close,
    call,
    call_each,
    check_gradients,
    distinct_sizes,
    expect_mapping,
    is_stub,
    signed,
    unpack,
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


def test_none_is_a_missing_return():
    """None where a value is expected says that a `return` may be missing."""
    for helper in (
        lambda: assert_close(None, [1.0, 2.0], name="grad"),
        lambda: as_array(None, "grad"),
        lambda: unpack(None, ["dx", "dw"], what="backward"),
        lambda: expect_mapping(None, ["a"], name="grads"),
    ):
        with pytest.raises(Wrong, match="`return` missing"):
            helper()


def test_constant_factor_only_for_arrays():
    """A single wrong number is not described as 'off by a constant factor'."""
    with pytest.raises(Wrong) as error:
        assert_close(2.0, 1.0, name="slope")
    assert "factor" not in str(error.value)
    with pytest.raises(Wrong, match="constant factor of 2"):
        assert_close([2.0, 4.0], [1.0, 2.0], name="grad")


def test_float32_answer_is_named():
    """An answer right only to float32 precision says so, not 'x, expected x'."""
    expected = np.array([0.0581238123456789, 1.0 / 3.0])
    with pytest.raises(Wrong, match="float32") as error:
        assert_close(expected.astype(np.float32), expected, name="grad", rtol=1e-10)
    assert "compute in float64" in str(error.value)


def test_scalar_messages_show_enough_digits():
    """Two close numbers are printed with enough digits to differ."""
    with pytest.raises(Wrong) as error:
        assert_close(0.05812381, 0.05812384, name="x", rtol=1e-10)
    assert "0.05812381" in str(error.value) and "0.05812384" in str(error.value)


def test_learner_exception_is_short_and_shows_the_line():
    """A crash is reported in a few lines: the exception, the call and the learner's line."""

    def learner(x):
        return np.ones((300, 300)) @ np.ones((7, 7)) + x

    with pytest.raises(Wrong) as error:
        call(learner, 1.0, what="learner")
    text = str(error.value)
    assert "ValueError" in text and "learner(1)" in text
    assert "np.ones((300, 300)) @ np.ones((7, 7))" in text
    assert len(text) < 600 and len(text.splitlines()) <= 4


def test_unpack_and_helpers():
    """unpack takes a tuple or dict; signed and distinct_sizes draw as promised."""
    assert unpack((1, 2), ["a", "b"]) == {"a": 1, "b": 2}
    assert unpack({"b": 2, "a": 1}, ["a", "b"]) == {"a": 1, "b": 2}
    with pytest.raises(Wrong, match=r"\(a, b\)"):
        unpack((1, 2, 3), ["a", "b"])
    with pytest.raises(NotAttempted):
        unpack((1, ...), ["a", "b"])
    rng = np.random.default_rng(0)
    assert all(0.5 <= abs(signed(rng, 0.5, 2.0)) <= 2.0 for _ in range(50))
    sizes = distinct_sizes(rng, 4)
    assert len(set(sizes)) == 4 and all(2 <= s < 9 for s in sizes)


def test_check_gradients_names_the_wrong_one():
    """Several gradients: the message names the wrong one and the right ones."""
    want = {"dx": np.ones((2, 3)), "dw": np.arange(6.0).reshape(3, 2)}
    got = {"dx": np.ones((2, 3)), "dw": 2 * np.arange(6.0).reshape(3, 2)}
    with pytest.raises(Wrong) as error:
        check_gradients(got, want)
    assert "dw is wrong" in str(error.value) and "dx is right" in str(error.value)
    with pytest.raises(Wrong, match="transposed"):
        check_gradients({"dx": np.ones((3, 2)), "dw": want["dw"]}, want)


def test_call_each_returns_results_up_to_the_first_call_that_raises():
    """call_each evaluates the answer at every point in one go and stops at the first error,
    so the check can repeat that one call to report it."""

    def answer(x):
        if x == 3:
            raise ValueError("three")
        return x * 2

    assert call_each(answer, [(0,), (1,), (2,)]) == [0, 2, 4]
    assert call_each(answer, [(1,), (3,), (4,)]) == [2]
