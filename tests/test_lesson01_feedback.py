"""Lessons 00 and 01: correct answers pass, shortcuts are refused, typical mistakes say why."""

from __future__ import annotations

import functools
import math

import numpy as np

from backprop_course import gradcheck
from backprop_course.autograd import Value as PackageValue
from feedback import lesson_feedback_tests


def central(f, x, h):
    """A central difference, as a learner might write it when an exact answer is asked."""
    return (f(x + h) - f(x - h)) / (2 * h)


def richardson(f, x, h=1e-3):
    """A fourth-order (Richardson) central difference: closer, still not exact."""
    return (8 * (f(x + h) - f(x - h)) - (f(x + 2 * h) - f(x - 2 * h))) / (12 * h)


def exp_by_engine(x):
    """d/dx cos(exp(2x)) with the package's engine for the inner part: not by hand."""
    v = PackageValue(x)
    inner = (v * 2).exp()
    inner.backward()
    return -math.sin(inner.data) * v.grad


def gradient_by_numerical_gradient(x, y):
    """The package's numerical gradient instead of the partial derivatives."""
    p = np.array([x, y])
    return tuple(
        gradcheck.numerical_gradient(lambda q: q[1] * np.sin(q[0]) + q[0] * np.exp(q[1]), p)
    )


def my_central(f, x, h):
    """A wrapper that hands the work to the package's reference function."""
    return gradcheck.central_difference(f, x, h)


def measured_best_step() -> float:
    """The learner's own measurement: the argmin of their plot, written another way."""
    hs = np.logspace(-12, -1, 221)
    x0, exact = 0.1, 10 * math.exp(1.0)
    errors = [
        abs(0.5 * (np.exp(10 * (x0 + h)) / h - np.exp(10 * (x0 - h)) / h) - exact) for h in hs
    ]
    return float(hs[int(np.argmin(errors))])


CORRECT_ANSWERS = {
    "00.slope": 3.0,
    "00.mean": lambda xs: sum(xs) / len(xs),
    # written differently from the solutions: other factor orders, numpy, no named stages
    "01.forward_difference": lambda f, x, h: (f(x + h) - f(x)) * (1 / h),
    "01.central_difference": lambda f, x, h: 0.5 * (f(x + h) - f(x - h)) / h,
    "01.chain_rule": lambda x: -3 * x * x * np.sin(x * x * x),
    "01.chain_rule_three": lambda x: -2 * np.exp(x + x) * np.sin(np.exp(2 * x)),
    "01.gradient": lambda x, y: [np.exp(y) + y * np.cos(x), x * np.exp(y) + np.sin(x)],
    "01.best_step": 1e-6,
    "01.error_curve": {
        "small_h_error": "round-off",
        "large_h_error": "truncation",
        "forward_slope": 1,
        "central_slope": 2,
    },
}

ALSO_CORRECT = [
    ("00.slope", 3),
    ("00.mean", lambda xs: float(np.mean(xs))),
    ("01.chain_rule", lambda x: math.cos(x**3 + math.pi / 2) * 3 * x**2),
    (
        "01.gradient",
        lambda x, y: np.array([y * math.cos(x) + math.exp(y), math.sin(x) + x * math.exp(y)]),
    ),
    # every h on the flat bottom of the learner's own plot
    ("01.best_step", 2e-7),
    ("01.best_step", 3e-6),
    ("01.best_step", measured_best_step()),
]


def torch_chain_rule(x):
    """df/dx of cos(x**3) from torch's autograd."""
    import torch

    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        return float(torch.autograd.grad(torch.cos(t**3), t)[0])


SHORTCUTS = [
    ("01.chain_rule", torch_chain_rule, "the answer called torch.autograd.grad"),
    ("01.forward_difference", gradcheck.forward_difference, "not the course's reference"),
    ("01.central_difference", gradcheck.central_difference, "not the course's reference"),
    ("01.central_difference", functools.partial(gradcheck.central_difference), "gradcheck"),
    ("01.central_difference", my_central, "the answer used backprop_course.gradcheck"),
    # finite differences where the exact derivative is asked
    (
        "01.chain_rule",
        lambda x: central(lambda t: math.cos(t**3), x, 1e-5),
        "looks like a finite difference",
    ),
    (
        "01.chain_rule",
        lambda x: central(lambda t: math.cos(t**3), x, 1e-6),
        "looks like a finite difference",
    ),
    ("01.chain_rule", lambda x: richardson(lambda t: math.cos(t**3), x), "exact derivative"),
    (
        "01.chain_rule",
        lambda x: gradcheck.central_difference(lambda t: math.cos(t**3), x),
        "the answer used backprop_course.gradcheck.central_difference",
    ),
    (
        "01.chain_rule_three",
        lambda x: central(lambda t: math.cos(math.exp(2 * t)), x, 1e-5),
        "looks like a finite difference",
    ),
    ("01.chain_rule_three", exp_by_engine, "the answer used backprop_course.autograd"),
    (
        "01.gradient",
        lambda x, y: (
            central(lambda t: y * math.sin(t) + t * math.exp(y), x, 1e-5),
            central(lambda t: t * math.sin(x) + x * math.exp(t), y, 1e-5),
        ),
        "looks like a finite difference",
    ),
    (
        "01.gradient",
        lambda x, y: (
            y * math.cos(x) + math.exp(y),
            central(lambda t: t * math.sin(x) + x * math.exp(t), y, 1e-6),
        ),
        "looks like a finite difference",
    ),
    ("01.gradient", gradient_by_numerical_gradient, "numerical_gradient"),
]

WRONG_ANSWERS = [
    ("00.slope", 1 / 3, "run over rise"),
    ("00.slope", -3.0, "sign error"),
    ("00.mean", lambda xs: sum(xs), "not divided by the length"),
    ("00.mean", lambda xs: sum(xs) / (len(xs) - 1), "len(xs) - 1"),
    ("00.mean", lambda xs: None, "return"),
    (
        "01.forward_difference",
        lambda f, x, h: (f(x + h) - f(x - h)) / (2 * h),
        "the central difference",
    ),
    ("01.forward_difference", lambda f, x, h: f(x + h) - f(x), "forgot to divide by h"),
    ("01.forward_difference", lambda f, x, h: (f(x) - f(x - h)) / h, "backward difference"),
    (
        "01.forward_difference",
        lambda f, x, h: (f(x + h) - f(x)) / (2 * h),
        "a forward step spans h",
    ),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x - h)) / h, "2h apart"),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x - h)) / 2 * h, "without brackets"),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x)) / h, "the forward difference"),
    ("01.central_difference", lambda f, x, h: None, "return"),
    ("01.chain_rule", lambda x: -math.sin(x**3), "forgot the inner derivative"),
    ("01.chain_rule", lambda x: -math.sin(x) * 3 * x**2, "at x instead of at u"),
    ("01.chain_rule", lambda x: math.sin(x**3) * 3 * x**2, "sign error"),
    ("01.chain_rule", lambda x: -math.sin(x**3) * 3 * x, "3x**2, not 3x"),
    ("01.chain_rule", lambda x: math.cos(x**3), "expected"),
    ("01.chain_rule", lambda x: None, "return"),
    ("01.chain_rule", lambda x: np.float32(-math.sin(x**3) * 3 * x**2), "float32"),
    (
        "01.chain_rule_three",
        lambda x: -math.sin(math.exp(2 * x)) * math.exp(2 * x),
        "innermost derivative",
    ),
    ("01.chain_rule_three", lambda x: -math.sin(math.exp(2 * x)) * 2, "middle derivative"),
    ("01.chain_rule_three", lambda x: -math.sin(2 * x) * math.exp(2 * x) * 2, "sin at 2x"),
    (
        "01.chain_rule_three",
        lambda x: math.sin(math.exp(2 * x)) * math.exp(2 * x) * 2,
        "sign error",
    ),
    (
        "01.gradient",
        lambda x, y: (math.sin(x) + x * math.exp(y), y * math.cos(x) + math.exp(y)),
        "swapped",
    ),
    (
        "01.gradient",
        lambda x, y: (math.cos(x) + math.exp(y), math.sin(x) + x * math.exp(y)),
        "keeps the constant y",
    ),
    (
        "01.gradient",
        lambda x, y: (y * math.cos(x) + math.exp(y), math.sin(x) + math.exp(y)),
        "keeps the constant x",
    ),
    (
        "01.gradient",
        lambda x, y: (y * math.cos(x) + x * math.exp(y), math.sin(x) + x * math.exp(y)),
        "constant was not treated",
    ),
    ("01.gradient", lambda x, y: y * math.cos(x) + math.exp(y), "two numbers"),
    ("01.best_step", 1e-5, "best h for sin at x = 1"),
    ("01.best_step", 1e-12, "round-off dominates"),
    ("01.best_step", 1e-2, "truncation error dominates"),
    ("01.best_step", -1.0, "positive number"),
    ("01.best_step", None, "is None"),
    (
        "01.error_curve",
        {
            "small_h_error": "truncation",
            "large_h_error": "truncation",
            "forward_slope": 1,
            "central_slope": 2,
        },
        "small_h_error",
    ),
    (
        "01.error_curve",
        {
            "small_h_error": "round-off",
            "large_h_error": "truncation",
            "forward_slope": 1,
            "central_slope": 1,
        },
        "central_slope is 1",
    ),
    ("01.error_curve", {"small_h_error": "round-off"}, "missing the key(s)"),
]

RULED = [
    "01.forward_difference",
    "01.central_difference",
    "01.chain_rule",
    "01.chain_rule_three",
    "01.gradient",
]

globals().update(
    lesson_feedback_tests(
        ("00", "01"),
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        ruled=RULED,
    )
)
