"""Lesson 00, welcome: two warm-up exercises that show how checking works."""

from __future__ import annotations

import numpy as np

from backprop_course.compare import NotAttempted, Wrong, assert_close, call, is_stub
from backprop_course.exercises import exercise


@exercise(
    "00.slope",
    title="Slope of a line",
    points=1,
    answer="slope",
    hints=(
        "The slope is rise over run: how much y changes divided by how much x changes.",
        "Between (1, 2) and (4, 11): the rise is 11 - 2 and the run is 4 - 1.",
    ),
)
def _slope(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.floating, np.integer)):
        raise Wrong(f"expected a number, got {type(answer).__name__}: {answer!r}")
    assert_close(
        answer,
        3.0,
        name="slope",
        rtol=1e-9,
        mistakes={
            "run over rise (dx / dy) instead of rise over run (dy / dx)": 1 / 3,
            "a sign error: (2 - 11) / (4 - 1)": -3.0,
            "the rise alone, not divided by the run": 9.0,
        },
    )


@exercise(
    "00.mean",
    title="The mean of a list",
    points=1,
    answer="mean",
    hints=(
        "Add the numbers up, then divide by how many there are.",
        "sum(xs) / len(xs) works for a list of numbers.",
    ),
)
def _mean(answer, rng):
    for _ in range(5):
        xs = [float(v) for v in rng.normal(size=int(rng.integers(2, 12)))]
        got = call(answer, list(xs), what="mean")
        n = len(xs)
        assert_close(
            got,
            np.mean(xs),
            name="mean(xs)",
            context=f"for xs of length {n}",
            mistakes={
                "the sum, not divided by the length": np.sum(xs),
                "divided by len(xs) - 1 instead of len(xs)": np.sum(xs) / (n - 1),
            },
        )
