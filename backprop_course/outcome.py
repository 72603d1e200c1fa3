"""One model of an exercise's outcome, shared by ``check()`` and the grader.

:func:`judge` runs an exercise's check on an answer and classifies what
happened into a :class:`Status` and a message. ``check()`` in a notebook and
``backprop-course grade`` both call it, so a result means the same in both.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import numpy as np

from backprop_course.compare import NotAttempted, Wrong, answering

if TYPE_CHECKING:
    from backprop_course.exercises import Exercise

__all__ = ["Status", "judge"]


class Status(str, enum.Enum):
    """What became of one answer (or of one notebook, for the grader-only statuses)."""

    CORRECT = "correct"
    WRONG = "wrong"
    NOT_ATTEMPTED = "not_attempted"
    ERROR = "error"  # the check itself failed: a bug in the course, never the learner's fault
    UNKNOWN = "unknown_exercise"

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        """The status in words: ``"not attempted"``."""
        return self.value.replace("_", " ")


def judge(exercise: Exercise, answer: Any, rng: np.random.Generator) -> tuple[Status, str]:
    """Run ``exercise``'s check on ``answer``; the outcome and the message for the learner.

    Never raises an ``Exception``: a wrong answer is ``WRONG`` with the check's reason,
    the release stub is ``NOT_ATTEMPTED``, and a check that fails in a way it did not
    plan for is ``ERROR`` (the course's fault, reported as such). ``BaseException``s
    that are not errors (``KeyboardInterrupt``, the grader's own interrupts) pass through.
    """
    try:
        with answering(exercise.answer), np.errstate(all="ignore"):
            exercise.checker(answer, rng)
    except NotAttempted:
        return Status.NOT_ATTEMPTED, (
            f"Replace the `...` placeholder with your answer (it is bound to "
            f"`{exercise.answer}`), then run this cell again."
        )
    except Wrong as wrong:
        return Status.WRONG, str(wrong)
    except RecursionError:
        return Status.WRONG, "your code recursed too deeply (an infinite recursion?)"
    except Exception as error:  # a bug in a check must never reach the learner as a traceback
        text = str(error).splitlines()[0][:200] if str(error) else ""
        return Status.ERROR, (
            f"checking your answer failed ({type(error).__name__}: {text}). If your answer has "
            f"the type and shape the exercise asks for, this is a bug in the course: please "
            f"report it."
        )
    return Status.CORRECT, "Correct: it matches the reference on fresh random inputs."
