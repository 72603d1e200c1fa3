"""Lesson 01: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

from feedback import lesson_feedback_tests

CORRECT_ANSWERS = {
    "00.slope": 3.0,
    "00.mean": lambda xs: sum(xs) / len(xs),
    "01.forward_difference": lambda f, x, h: (f(x + h) - f(x)) / h,
    "01.central_difference": lambda f, x, h: (f(x + h) - f(x - h)) / (2 * h),
    "01.chain_rule": lambda x: math.cos(x**2) * 2 * x,
    "01.chain_rule_three": lambda x: math.exp(math.sin(3 * x)) * math.cos(3 * x) * 3,
    "01.gradient": lambda x, y: (2 * x * y, x**2 + math.cos(y)),
    "01.best_step": 1e-5,
    "01.error_curve": {
        "small_h_error": "round-off",
        "large_h_error": "truncation",
        "forward_slope": 1,
        "central_slope": 2,
    },
}

WRONG_ANSWERS = [
    ("00.slope", 1 / 3, "run over rise"),
    ("00.slope", -3.0, "sign error"),
    ("00.mean", lambda xs: sum(xs), "not divided by the length"),
    ("00.mean", lambda xs: sum(xs) / (len(xs) - 1), "len(xs) - 1"),
    (
        "01.forward_difference",
        lambda f, x, h: (f(x + h) - f(x - h)) / (2 * h),
        "the central difference",
    ),
    ("01.forward_difference", lambda f, x, h: f(x + h) - f(x), "forgot to divide by h"),
    ("01.forward_difference", lambda f, x, h: (f(x) - f(x - h)) / h, "backward difference"),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x - h)) / h, "2h apart"),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x - h)) / 2 * h, "without brackets"),
    ("01.central_difference", lambda f, x, h: (f(x + h) - f(x)) / h, "the forward difference"),
    ("01.chain_rule", lambda x: math.cos(x**2), "forgot the inner derivative"),
    ("01.chain_rule", lambda x: math.cos(x) * 2 * x, "at x instead of at u"),
    ("01.chain_rule", lambda x: -math.cos(x**2) * 2 * x, "sign error"),
    ("01.chain_rule", lambda x: math.sin(x**2), "expected"),
    (
        "01.chain_rule_three",
        lambda x: math.exp(math.sin(3 * x)) * math.cos(3 * x),
        "innermost derivative",
    ),
    ("01.chain_rule_three", lambda x: 3 * math.exp(math.sin(3 * x)), "middle derivative"),
    ("01.gradient", lambda x, y: (x**2 + math.cos(y), 2 * x * y), "swapped"),
    ("01.gradient", lambda x, y: (2 * x * y, x**2), "derivative of sin(y)"),
    ("01.gradient", lambda x, y: 2 * x * y, "two numbers"),
    ("01.best_step", 1e-12, "round-off dominates"),
    ("01.best_step", 1e-2, "truncation error dominates"),
    ("01.best_step", -1.0, "positive number"),
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


globals().update(lesson_feedback_tests(("00", "01"), CORRECT_ANSWERS, WRONG_ANSWERS))
