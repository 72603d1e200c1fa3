"""Lesson 01, derivatives and the chain rule."""

from __future__ import annotations

import math

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_choice,
    assert_close,
    call,
    expect_mapping,
    is_stub,
)
from backprop_course.exercises import exercise


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
    for f, x, h, where in _difference_cases(rng):
        got = call(answer, f, x, h, what="forward_difference")
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
    for f, x, h, where in _difference_cases(rng):
        got = call(answer, f, x, h, what="central_difference")
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


def _check_derivative(answer, rng, *, name, exact, mistakes):
    for _ in range(8):
        x = float(rng.uniform(-2.5, 2.5))
        got = call(answer, x, what=name)
        assert_close(
            got,
            exact(x),
            name=f"{name}(x)",
            rtol=1e-7,
            atol=1e-10,
            context=f"at x={x:.4g}",
            mistakes={label: wrong(x) for label, wrong in mistakes.items()},
        )


@exercise(
    "01.chain_rule",
    title="Chain rule: d/dx sin(x**2)",
    points=2,
    answer="df_dx",
    hints=(
        "Name the inner function u = x**2, so f = sin(u).",
        "df/dx = (df/du) * (du/dx): the outer derivative at u times the inner derivative.",
        "d sin(u)/du = cos(u) and du/dx = 2x.",
    ),
)
def _chain(answer, rng):
    _check_derivative(
        answer,
        rng,
        name="df_dx",
        exact=lambda x: math.cos(x**2) * 2 * x,
        mistakes={
            "forgot the inner derivative du/dx = 2x": lambda x: math.cos(x**2),
            "evaluated the outer derivative at x instead of at u = x**2": lambda x: (
                math.cos(x) * 2 * x
            ),
            "a sign error: d sin(u)/du is +cos(u)": lambda x: -math.cos(x**2) * 2 * x,
        },
    )


@exercise(
    "01.chain_rule_three",
    title="Chain rule through three functions: d/dx exp(sin(3x))",
    points=2,
    answer="dg_dx",
    hints=(
        "Three stages: a = 3x, b = sin(a), g = exp(b).",
        "Multiply the three local derivatives: dg/db * db/da * da/dx.",
        "dg/db = exp(b), db/da = cos(a), da/dx = 3.",
    ),
)
def _chain3(answer, rng):
    def exact(x):
        return math.exp(math.sin(3 * x)) * math.cos(3 * x) * 3

    _check_derivative(
        answer,
        rng,
        name="dg_dx",
        exact=exact,
        mistakes={
            "forgot the innermost derivative da/dx = 3": lambda x: (
                math.exp(math.sin(3 * x)) * math.cos(3 * x)
            ),
            "forgot the middle derivative db/da = cos(3x)": lambda x: math.exp(math.sin(3 * x)) * 3,
            "evaluated cos at x instead of at 3x": lambda x: (
                math.exp(math.sin(3 * x)) * math.cos(x) * 3
            ),
        },
    )


@exercise(
    "01.gradient",
    title="The gradient of f(x, y) = x**2 * y + sin(y)",
    points=3,
    answer="grad_f",
    hints=(
        "The gradient collects both partial derivatives: (df/dx, df/dy).",
        "For df/dx treat y as a constant; for df/dy treat x as a constant.",
        "df/dx = 2xy and df/dy = x**2 + cos(y).",
    ),
)
def _gradient(answer, rng):
    for _ in range(8):
        x, y = (float(v) for v in rng.uniform(-2, 2, size=2))
        got = call(answer, x, y, what="grad_f")
        if isinstance(got, dict) or np.ndim(got) != 1 or np.size(got) != 2:
            raise Wrong(f"grad_f should return two numbers (df/dx, df/dy), got {got!r}")
        dfdx, dfdy = 2 * x * y, x**2 + math.cos(y)
        assert_close(
            got,
            [dfdx, dfdy],
            name="grad_f(x, y)",
            rtol=1e-7,
            atol=1e-10,
            context=f"at x={x:.4g}, y={y:.4g}",
            mistakes={
                "the two partials are swapped: return (df/dx, df/dy)": [dfdy, dfdx],
                "df/dy forgot the derivative of sin(y)": [dfdx, x**2],
                "df/dx kept y out: the partial of x**2 * y is 2xy": [2 * x, dfdy],
            },
        )


def _central_error_model(h: float) -> float:
    """Round-off eps/h plus truncation h**2 * |third derivative| / 6, for f = sin at x = 1."""
    eps = float(np.finfo(np.float64).eps)
    return eps / h + h**2 * abs(math.cos(1)) / 6


@exercise(
    "01.best_step",
    title="The best step size for central differences",
    points=1,
    answer="h_best",
    hints=(
        "Measure: compute the central-difference error of sin at x = 1 for many h "
        "(np.logspace) and pick the h with the smallest error.",
        "Too small an h loses digits to round-off; too large an h has truncation error.",
        "In float64 the best h for central differences is near eps ** (1/3), about 1e-5.",
    ),
)
def _best_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    try:
        h = float(answer)
    except (TypeError, ValueError) as error:
        raise Wrong(f"h_best should be a positive number, got {answer!r}") from error
    if not (h > 0 and math.isfinite(h)):
        raise Wrong(f"h_best should be a positive number, got {h!r}")
    # Measured errors are noisy near the optimum, so judge h by the error model: within
    # 10x of the best the model allows (about 7e-7 <= h <= 6e-5).
    best = min(_central_error_model(float(c)) for c in np.logspace(-10, -1, 2000))
    error = _central_error_model(h)
    if error <= 10 * best:
        return
    side = (
        "round-off dominates: h is too small"
        if h < 1e-5
        else ("truncation error dominates: h is too large")
    )
    raise Wrong(
        f"with h={h:.3g} the expected error is about {error:.1g}, but a better h gets "
        f"it down to {best:.1g}; {side}"
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
