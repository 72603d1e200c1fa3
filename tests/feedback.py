"""Shared assertions for the per-lesson feedback tests (tests/test_lessonNN_feedback.py)."""

from __future__ import annotations

from typing import Any

from backprop_course import evaluate
from backprop_course.checking import CORRECT, WRONG


def assert_passes(exercise_id: str, answer: Any, seeds: int = 20) -> None:
    """The answer is CORRECT on ``seeds`` different draws of the hidden test inputs."""
    for seed in range(seeds):
        result = evaluate(exercise_id, answer, seed=seed)
        assert result.status == CORRECT, result.message


def assert_wrong_with_reason(exercise_id: str, answer: Any, reason: str, seeds: int = 5) -> None:
    """The answer is WRONG on every draw, and the message contains ``reason``."""
    for seed in range(seeds):
        result = evaluate(exercise_id, answer, seed=seed)
        assert result.status == WRONG, result.message
        assert reason in result.message, result.message
