"""Shared assertions for the per-lesson feedback tests (tests/test_lessonNN_feedback.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from backprop_course import evaluate, exercises
from backprop_course.checking import CORRECT, NOT_ATTEMPTED, WRONG


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


def _stub(*args: Any, **kwargs: Any) -> Any:
    return ...


def lesson_feedback_tests(
    lessons: str | tuple[str, ...],
    correct: Mapping[str, Any],
    wrong: Sequence[tuple[str, Any, str]],
    *,
    also_correct: Sequence[tuple[str, Any]] = (),
    stubs: Mapping[str, Any] | None = None,
    several: bool = False,
    shortcuts: Sequence[tuple[str, Any, str]] = (),
    ruled: Sequence[str] = (),
    correct_seeds: int | Mapping[str, int] = 20,
    wrong_seeds: int = 5,
) -> dict[str, Callable]:
    """The standard feedback tests of a lesson, as test functions to bind in a test module::

        globals().update(lesson_feedback_tests("04", CORRECT_ANSWERS, WRONG_ANSWERS))

    - ``correct``: exercise id -> a correct answer (a list of them with ``several=True``);
      each passes on 20 seeds.
    - ``wrong``: (id, answer, reason): WRONG on 5 seeds, with ``reason`` in the message.
    - ``also_correct``: (id, answer): other correct forms, each passing on 5 seeds.
    - ``stubs``: id -> what release leaves for that answer (default, for answers that are
      functions: a function returning ``...``); it and ``...`` itself are NOT ATTEMPTED.
    - ``shortcuts``: (id, answer, reason): an answer that breaks the exercise's rule
      (delegating to the package, autograd where it is forbidden, a finite difference where
      the exact value is asked...) is NOT correct on 3 seeds, with ``reason`` in the message.
    - ``ruled``: the exercises whose text states a rule; each needs a row in ``shortcuts``.
    - ``correct_seeds``: how many draws a correct answer passes (per id for expensive checks).
    - ``wrong_seeds``: how many draws a wrong answer (and, at most 3, a shortcut) is refused
      on; fewer for checks that start processes.
    - every exercise of ``lessons`` appears in ``correct`` and ``wrong``.
    """
    lessons = (lessons,) if isinstance(lessons, str) else lessons
    ids = sorted(correct)
    answers = {k: list(v) if several else [v] for k, v in correct.items()}

    @pytest.mark.parametrize("exercise_id", ids)
    def test_correct_answers_pass(exercise_id, home):
        """Every correct answer passes on many fresh draws of the test inputs."""
        seeds = (
            correct_seeds.get(exercise_id, 20)
            if isinstance(correct_seeds, Mapping)
            else correct_seeds
        )
        for answer in answers[exercise_id]:
            assert_passes(exercise_id, answer, seeds=seeds)

    @pytest.mark.parametrize(
        ("exercise_id", "answer", "reason"), wrong, ids=[f"{w[0]}-{i}" for i, w in enumerate(wrong)]
    )
    def test_wrong_answers_say_why(exercise_id, answer, reason, home):
        """A typical mistake is reported with a reason, not just 'incorrect'."""
        assert_wrong_with_reason(exercise_id, answer, reason, seeds=wrong_seeds)

    @pytest.mark.parametrize("exercise_id", ids)
    def test_stubs_are_not_attempted(exercise_id, home):
        """What release leaves in place of an answer (and ``...`` itself) is not attempted."""
        stub = (stubs or {}).get(exercise_id)
        if stub is None and callable(answers[exercise_id][0]):
            stub = _stub
        for answer in (stub, ...) if stub is not None else (...,):
            result = evaluate(exercise_id, answer, seed=0)
            assert result.status == NOT_ATTEMPTED, result.message

    def test_every_exercise_has_feedback_tests():
        """Each exercise of the lesson appears in the tables of correct and wrong answers."""
        registered = {e.id for e in exercises.all_exercises() if e.lesson in lessons}
        assert registered == set(correct) == {w[0] for w in wrong}

    if shortcuts or ruled:

        @pytest.mark.parametrize(
            ("exercise_id", "answer", "reason"),
            shortcuts,
            ids=[f"{s[0]}-{i}" for i, s in enumerate(shortcuts)],
        )
        def test_shortcuts_are_refused(exercise_id, answer, reason, home):
            """An answer that breaks the exercise's rule earns nothing, and is told which rule."""
            for seed in range(min(3, wrong_seeds)):
                result = evaluate(exercise_id, answer, seed=seed)
                assert result.status != CORRECT and result.points == 0, result.message
                assert reason in result.message, result.message

        def test_every_stated_rule_has_shortcuts():
            """Each exercise whose text states a rule has at least one refused shortcut."""
            assert set(ruled) <= {s[0] for s in shortcuts}

        extra = {
            "test_shortcuts_are_refused": test_shortcuts_are_refused,
            "test_every_stated_rule_has_shortcuts": test_every_stated_rule_has_shortcuts,
        }
    else:
        extra = {}

    tests = {
        **extra,
        "test_correct_answers_pass": test_correct_answers_pass,
        "test_wrong_answers_say_why": test_wrong_answers_say_why,
        "test_stubs_are_not_attempted": test_stubs_are_not_attempted,
        "test_every_exercise_has_feedback_tests": test_every_exercise_has_feedback_tests,
    }
    if also_correct:

        @pytest.mark.parametrize(
            ("exercise_id", "answer"),
            also_correct,
            ids=[f"{a[0]}-{i}" for i, a in enumerate(also_correct)],
        )
        def test_other_correct_forms_pass(exercise_id, answer, home):
            """Equivalent ways of writing an answer are accepted too."""
            assert_passes(exercise_id, answer, seeds=5)

        tests["test_other_correct_forms_pass"] = test_other_correct_forms_pass
    return tests
