"""Lesson 01, derivatives and the chain rule."""

from __future__ import annotations

import functools
import math

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_choice,
    assert_close,
    expect_mapping,
    is_stub,
    signed,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules, refuse_reference

# The package's finite differences are the reference answers of the two difference exercises.
_GRADCHECK = ("backprop_course.gradcheck",)


def _cube(x):
    return x**3 - 2 * x


# Smooth test functions, drawn at random by the checks.
_FUNCTIONS = {"sin": math.sin, "exp": math.exp, "cube": _cube, "tanh": math.tanh}


def _difference_cases(rng, count=6):
    for _ in range(count):
        name = str(rng.choice(list(_FUNCTIONS)))
        f = _FUNCTIONS[name]
        x = float(rng.uniform(-2, 2))
        h = float(10 ** rng.uniform(-3, -1))
        yield f, x, h, f"for f={name}, x={x:.4g}, h={h:.3g}"


@exercise(
    "01.forward_difference",
    title="Forward differences",
    points=2,
    answer="forward_difference",
    hints=(
        "A derivative is a slope: the change in f divided by the change in x.",
        "Move x forward by h only: compare f(x + h) with f(x).",
        "Return (f(x + h) - f(x)) / h.",
    ),
)
def _forward(answer, rng):
    refuse_reference(answer, _GRADCHECK)
    for f, x, h, where in _difference_cases(rng):
        got = call_under_rules(answer, f, x, h, forbid=_GRADCHECK)
        fp, f0, fm = f(x + h), f(x), f(x - h)
        assert_close(
            got,
            (fp - f0) / h,
            name="forward_difference",
            rtol=1e-9,
            context=where,
            mistakes={
                "the central difference; this exercise asks for the forward one": (fp - fm)
                / (2 * h),
                "forgot to divide by h": fp - f0,
                "divided by 2h; a forward step spans h": (fp - f0) / (2 * h),
                "a backward difference, (f(x) - f(x - h)) / h": (f0 - fm) / h,
            },
        )


@exercise(
    "01.central_difference",
    title="Central differences",
    points=2,
    answer="central_difference",
    hints=(
        "Step to both sides of x: evaluate f at x + h and at x - h.",
        "The two points are 2h apart, so divide their difference by 2h.",
        "Return (f(x + h) - f(x - h)) / (2 * h).",
    ),
)
def _central(answer, rng):
    refuse_reference(answer, _GRADCHECK)
    for f, x, h, where in _difference_cases(rng):
        got = call_under_rules(answer, f, x, h, forbid=_GRADCHECK)
        fp, f0, fm = f(x + h), f(x), f(x - h)
        assert_close(
            got,
            (fp - fm) / (2 * h),
            name="central_difference",
            rtol=1e-9,
            context=where,
            mistakes={
                "divided by h; the two points are 2h apart": (fp - fm) / h,
                "written as h * 2 without brackets: / 2 * h multiplies by h": (fp - fm) / 2 * h,
                "the forward difference; this exercise asks for the central one": (fp - f0) / h,
            },
        )


# The derivative exercises ask for the EXACT derivative. Correct formulas, written any way
# (math or numpy, x*x or x**2, any order of the factors), agree with the reference to 4e-15;
# a central difference is off by more than 10x the tolerance at the points drawn below, even
# with the luckiest step h (each point is tested against every h from 1e-10 to 0.1).
_EXACT_RTOL = 1e-13
_EXACT_ATOL = 5e-14
_EXACT_RULE = "this exercise asks for the exact derivative"
_BY_HAND = f"{_EXACT_RULE}, worked out with the chain rule"
# The package's ways to get a derivative without working it out: finite differences and the
# scalar engine. torch's autograd is refused by autograd=True (by importing it, in a kernel
# that has not loaded torch: see backprop_course.rules).
_DIFFERENTIATORS = ("backprop_course.gradcheck", "backprop_course.autograd")
_LOOKS_NUMERIC = (
    f"{_EXACT_RULE}; your answer looks like a finite difference (it is right to about "
    "{digits} digits, but an exact formula is right to all 16): use the chain rule to write "
    "the derivative as a formula"
)
_STEPS = np.logspace(-10, -1, 181)


def _best_central_error(f, x: float, exact: float) -> float:
    """The smallest error of a central difference at x, over every step h (f takes arrays)."""
    return float(np.min(np.abs((f(x + _STEPS) - f(x - _STEPS)) / (2 * _STEPS) - exact)))


def _exact_point(rng, f, exact, low: float, high: float) -> float:
    """A point in low <= |x| <= high where no central difference comes within 10x of the
    exact-answer tolerance (most points qualify; a few tries find one)."""
    for _ in range(100):
        x = float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))
        allowed = _EXACT_ATOL + _EXACT_RTOL * abs(exact(x))
        if _best_central_error(f, x, exact(x)) > 10 * allowed:
            break
    return x


def _assert_exact(got, expected, *, name: str, context: str, mistakes) -> None:
    """assert_close at the exact-answer tolerance; a near miss is named as a finite difference."""
    try:
        assert_close(
            got,
            expected,
            name=name,
            rtol=_EXACT_RTOL,
            atol=_EXACT_ATOL,
            context=context,
            mistakes=mistakes,
        )
    except Wrong as wrong:
        if "common mistake" in str(wrong) or getattr(got, "dtype", None) in _LOW_PRECISION:
            raise
        try:
            got_array = np.asarray(got, dtype=float)
            expected_array = np.asarray(expected, dtype=float)
            near = got_array.shape == expected_array.shape and np.allclose(
                got_array, expected_array, rtol=1e-5, atol=1e-8
            )
        except (TypeError, ValueError):
            near = False
        if not near:
            raise
        error = np.max(np.abs(got_array - expected_array) / (np.abs(expected_array) + 1e-300))
        digits = max(1, int(-math.log10(max(float(error), 1e-16))))
        raise Wrong(f"{_LOOKS_NUMERIC.format(digits=digits)} ({name} {context})") from None


_LOW_PRECISION = (np.dtype(np.float32), np.dtype(np.float16))


def _check_derivative(answer, rng, *, name, f, exact, mistakes, low=1.2, high=2.4):
    for _ in range(8):
        x = _exact_point(rng, f, exact, low, high)
        got = call_under_rules(answer, x, autograd=True, forbid=_DIFFERENTIATORS, rule=_BY_HAND)
        _assert_exact(
            got,
            exact(x),
            name=f"{name}(x)",
            context=f"at x={x!r}",
            mistakes={label: wrong(x) for label, wrong in mistakes.items()},
        )


@exercise(
    "01.chain_rule",
    title="Chain rule: d/dx cos(x**3)",
    points=2,
    answer="df_dx",
    hints=(
        "Name the inner function u = x**3, so f = cos(u).",
        "df/dx = (df/du) * (du/dx): the outer derivative at u times the inner derivative.",
        "d cos(u)/du = -sin(u) and du/dx = 3 * x**2.",
    ),
)
def _chain(answer, rng):
    _check_derivative(
        answer,
        rng,
        name="df_dx",
        f=lambda x: np.cos(x**3),
        exact=lambda x: -math.sin(x**3) * 3 * x**2,
        low=0.8,
        high=1.6,
        mistakes={
            "forgot the inner derivative du/dx = 3x**2": lambda x: -math.sin(x**3),
            "evaluated the outer derivative at x instead of at u = x**3": lambda x: (
                -math.sin(x) * 3 * x**2
            ),
            "a sign error: d cos(u)/du is -sin(u)": lambda x: math.sin(x**3) * 3 * x**2,
            "the power rule: d(x**3)/dx = 3x**2, not 3x": lambda x: -math.sin(x**3) * 3 * x,
        },
    )


@exercise(
    "01.chain_rule_three",
    title="Chain rule through three functions: d/dx cos(exp(2x))",
    points=2,
    answer="dg_dx",
    hints=(
        "Three stages: a = 2x, b = exp(a), g = cos(b).",
        "Multiply the three local derivatives: dg/db * db/da * da/dx.",
        "dg/db = -sin(b), db/da = exp(a), da/dx = 2.",
    ),
)
def _chain3(answer, rng):
    def exact(x):
        return -math.sin(math.exp(2 * x)) * math.exp(2 * x) * 2

    _check_derivative(
        answer,
        rng,
        name="dg_dx",
        f=lambda x: np.cos(np.exp(2 * x)),
        exact=exact,
        low=0.1,
        high=0.6,
        mistakes={
            "forgot the innermost derivative da/dx = 2": lambda x: (
                -math.sin(math.exp(2 * x)) * math.exp(2 * x)
            ),
            "forgot the middle derivative db/da = exp(2x)": lambda x: (
                -math.sin(math.exp(2 * x)) * 2
            ),
            "evaluated sin at 2x instead of at exp(2x)": lambda x: (
                -math.sin(2 * x) * math.exp(2 * x) * 2
            ),
            "a sign error: d cos(b)/db is -sin(b)": lambda x: (
                math.sin(math.exp(2 * x)) * math.exp(2 * x) * 2
            ),
        },
    )


def _gradient_point(rng) -> tuple[float, float]:
    """(x, y) where a central difference misses a partial by more than 10x the tolerance
    (over 8 points, each partial is caught at several of them)."""
    for _ in range(100):
        x, y = signed(rng, 0.3, 1.5), signed(rng, 0.3, 1.5)
        dfdx, dfdy = y * math.cos(x) + math.exp(y), math.sin(x) + x * math.exp(y)
        along_x = _best_central_error(lambda t, y=y: y * np.sin(t) + t * np.exp(y), x, dfdx)
        along_y = _best_central_error(lambda t, x=x: t * np.sin(x) + x * np.exp(t), y, dfdy)
        if along_x > 10 * (_EXACT_ATOL + _EXACT_RTOL * abs(dfdx)) or along_y > 10 * (
            _EXACT_ATOL + _EXACT_RTOL * abs(dfdy)
        ):
            break
    return x, y


@exercise(
    "01.gradient",
    title="The gradient of f(x, y) = y * sin(x) + x * exp(y)",
    points=3,
    answer="grad_f",
    hints=(
        "The gradient collects both partial derivatives: (df/dx, df/dy).",
        "For df/dx treat y as a constant; for df/dy treat x as a constant.",
        "df/dx = y * cos(x) + exp(y) and df/dy = sin(x) + x * exp(y).",
    ),
)
def _gradient(answer, rng):
    for _ in range(8):
        x, y = _gradient_point(rng)
        got = call_under_rules(answer, x, y, autograd=True, forbid=_DIFFERENTIATORS, rule=_BY_HAND)
        if isinstance(got, dict) or np.ndim(got) != 1 or np.size(got) != 2:
            raise Wrong(f"grad_f should return two numbers (df/dx, df/dy), got {got!r}")
        dfdx, dfdy = y * math.cos(x) + math.exp(y), math.sin(x) + x * math.exp(y)
        _assert_exact(
            got,
            [dfdx, dfdy],
            name="grad_f(x, y)",
            context=f"at x={x!r}, y={y!r}",
            mistakes={
                "the two partials are swapped: return (df/dx, df/dy)": [dfdy, dfdx],
                "df/dx: the partial of y * sin(x) keeps the constant y": [
                    math.cos(x) + math.exp(y),
                    dfdy,
                ],
                "df/dy: the partial of x * exp(y) keeps the constant x": [
                    dfdx,
                    math.sin(x) + math.exp(y),
                ],
                "df/dx: d sin(x)/dx is +cos(x)": [-y * math.cos(x) + math.exp(y), dfdy],
                "a constant was not treated as one: d(x * exp(y))/dx is exp(y), and "
                "d(y * sin(x))/dy is sin(x)": [y * math.cos(x) + x * math.exp(y), dfdy],
            },
        )


# 01.best_step: the central difference of f(x) = exp(10 x) at x = 0.1, in float64. Its third
# derivative is 1000 f, so truncation error sets in at a ten times smaller h than for sin at 1
# (the lesson's example): copying the lesson's best h does not work here.
BEST_STEP_X = 0.1


def _best_step_f(x):
    return np.exp(10 * x)


def _relative_errors(hs: np.ndarray) -> np.ndarray:
    """Relative error of the central difference at BEST_STEP_X, two ways of writing it."""
    x, exact = BEST_STEP_X, 10 * np.exp(10 * BEST_STEP_X)
    f = _best_step_f
    plain = np.abs((f(x + hs) - f(x - hs)) / (2 * hs) - exact) / exact
    split = np.abs(0.5 * (f(x + hs) / hs - f(x - hs) / hs) - exact) / exact
    return np.maximum(plain, split)


@functools.lru_cache(maxsize=1)
def best_step_band() -> tuple[float, float, float]:
    """(low, high, bottom): the steps on the flat bottom of the measured error curve.

    Measured errors near the bottom are noise, with lucky dips far below the curve, so the
    curve is judged by its upper envelope (the largest error within 0.15 decades): every h
    whose envelope is within 10x of the lowest envelope is on the flat bottom that a plot of
    the errors shows. The band is widened by a factor 1.25 for the spacing of a plot's grid.
    """
    hs = np.logspace(-12, -1, 1101)
    errors = _relative_errors(hs)
    window = 15
    envelope = np.array([errors[max(0, i - window) : i + window + 1].max() for i in range(len(hs))])
    bottom = float(envelope.min())
    flat = hs[envelope <= 10 * bottom]
    return float(flat.min()) / 1.25, float(flat.max()) * 1.25, bottom


@exercise(
    "01.best_step",
    title="The best step size for central differences",
    points=1,
    answer="h_best",
    hints=(
        "Read your plot: the error falls as h shrinks (truncation), then rises again "
        "(round-off). Pick an h at the bottom of the V, or take hs[np.argmin(errors)].",
        "Too small an h loses digits to round-off; too large an h has truncation error.",
        "The best h depends on f: truncation grows like h**2 * |f'''| / 6, and here "
        "f''' = 1000 f, so the bottom sits near 1e-6, not near the 1e-5 of sin at x = 1.",
    ),
)
def _best_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    if answer is None:
        raise Wrong("h_best is None: set it to a number, your best step size")
    try:
        h = float(answer)
    except (TypeError, ValueError) as error:
        raise Wrong(f"h_best should be a positive number, got {answer!r}") from error
    if not (h > 0 and math.isfinite(h)):
        raise Wrong(f"h_best should be a positive number, got {h!r}")
    low, high, bottom = best_step_band()
    if low <= h <= high:
        return
    error = float(_relative_errors(np.array([h]))[0])
    where = (
        f"the flat bottom of the curve, h from {low:.1g} to {high:.1g}, gets it down to "
        f"about {bottom:.0e}"
    )
    if h < low:
        raise Wrong(
            f"with h={h:.3g} the relative error is about {error:.0e}: round-off dominates, "
            f"h is too small; {where}"
        )
    lesson = (
        ". That is about the best h for sin at x = 1 in the lesson; exp(10 x) curves much "
        "faster (f''' = 1000 f), so truncation takes over at a smaller h: read your own plot"
        if 3e-6 <= h <= 3e-5
        else ""
    )
    raise Wrong(
        f"with h={h:.3g} the relative error is about {error:.0e}: truncation error "
        f"dominates, h is too large; {where}{lesson}"
    )


_CAUSES = {"round-off": "floating-point round-off", "truncation": "truncation of the Taylor series"}


@exercise(
    "01.error_curve",
    title="Reading the error curve",
    points=2,
    answer="error_curve",
    hints=(
        "On the right of the V (large h) the error falls as h shrinks; on the left it rises.",
        "The Taylor series says forward differences drop an h * f''/2 term and central "
        "differences an h**2 * f'''/6 term: the slopes of the right side on log-log axes.",
        "Small h: two nearly equal numbers are subtracted and their last digits are noise.",
    ),
)
def _error_curve(answer, rng):
    keys = ("small_h_error", "large_h_error", "forward_slope", "central_slope")
    expect_mapping(answer, keys, name="error_curve")
    if any(is_stub(answer[k]) for k in keys):
        raise NotAttempted
    assert_choice(
        answer["small_h_error"],
        "round-off",
        _CAUSES,
        name="small_h_error",
        why={
            "truncation": "Truncation error shrinks with h; what grows as h gets "
            "tiny is the noise of subtracting two nearly equal numbers."
        },
    )
    assert_choice(
        answer["large_h_error"],
        "truncation",
        _CAUSES,
        name="large_h_error",
        why={
            "round-off": "Round-off is about eps / h, tiny when h is large; what "
            "remains is the dropped Taylor terms."
        },
    )
    for key, expected in (("forward_slope", 1), ("central_slope", 2)):
        value = answer[key]
        try:
            value = float(value)
        except (TypeError, ValueError) as error:
            raise Wrong(f"{key} should be a number, got {value!r}") from error
        if abs(value - expected) > 0.25:
            flipped = " (the slope is positive: error grows with h)" if value < 0 else ""
            raise Wrong(
                f"{key} is {value:g}: count the power of h in the first dropped "
                f"Taylor term{flipped}"
            )
