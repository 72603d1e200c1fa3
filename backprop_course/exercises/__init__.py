"""The registry of graded exercises: one place for ids, points, checks and hints.

Each lesson with exercises has a module here, ``lessonNN.py`` (found by that
name, no list to update), that registers its exercises with the :func:`exercise` decorator::

    @exercise("01.central_difference", title="Central differences", points=2,
              answer="central_difference", hints=("...", "..."))
    def _(answer, rng):
        ...  # raise Wrong("why") or NotAttempted; return None when correct

A check receives the learner's answer and a ``numpy.random.Generator`` for
fresh test inputs. ``check()`` in a notebook and the grader both look
exercises up here, so an exercise is defined exactly once.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Exercise", "all_exercises", "exercise", "for_lesson", "get", "lessons"]

ID_PATTERN = re.compile(r"^(?P<lesson>\d\d)\.[a-z][a-z0-9_]*$")

Checker = Callable[[Any, np.random.Generator], None]

_REGISTRY: dict[str, Exercise] = {}

# Lesson modules are found by name: every ``lessonNN.py`` in this package.
_LESSON_MODULE = re.compile(r"^lesson\d\d$")


@dataclass(frozen=True)
class Exercise:
    """One graded exercise.

    ``answer`` is the name the notebook binds the answer to (a function or a
    variable), which the notebook passes to ``check`` and the grader reads.
    """

    id: str
    title: str
    points: int
    answer: str
    hints: tuple[str, ...]
    checker: Checker

    @property
    def lesson(self) -> str:
        """The two-digit lesson number, e.g. ``"01"``."""
        return self.id[:2]


def exercise(
    id: str, *, title: str, points: int, answer: str, hints: tuple[str, ...] | list[str]
) -> Callable[[Checker], Checker]:
    """Register the decorated check function as exercise ``id``."""
    if not ID_PATTERN.match(id):
        raise ValueError(f"exercise id {id!r} must look like 'NN.snake_case_name'")
    if points <= 0:
        raise ValueError(f"exercise {id!r}: points must be positive, got {points}")
    if not hints:
        raise ValueError(f"exercise {id!r}: give at least one hint")

    def register(checker: Checker) -> Checker:
        if id in _REGISTRY:
            raise ValueError(f"exercise id {id!r} is registered twice")
        _REGISTRY[id] = Exercise(
            id=id, title=title, points=points, answer=answer, hints=tuple(hints), checker=checker
        )
        return checker

    return register


def _load() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if _LESSON_MODULE.match(module.name):
            importlib.import_module(f"{__name__}.{module.name}")


def all_exercises() -> Iterator[Exercise]:
    """Every registered exercise, in course order."""
    _load()
    return iter(sorted(_REGISTRY.values(), key=lambda e: (e.lesson, _order(e))))


def _order(ex: Exercise) -> int:
    return list(_REGISTRY).index(ex.id)


def for_lesson(lesson: str) -> list[Exercise]:
    """The exercises of lesson ``"NN"``, in the order they were registered."""
    return [e for e in all_exercises() if e.lesson == lesson]


def lessons() -> list[str]:
    """The lesson numbers that have exercises."""
    return sorted({e.lesson for e in all_exercises()})


def get(exercise_id: str) -> Exercise:
    """The exercise with this id; a ``KeyError`` that suggests close ids otherwise."""
    _load()
    try:
        return _REGISTRY[exercise_id]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(exercise_id), list(_REGISTRY), n=3)
        suggestion = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"no exercise with id {exercise_id!r}{suggestion}") from None
