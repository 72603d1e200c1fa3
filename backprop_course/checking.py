"""``check()``, ``hint()`` and ``progress()``: feedback inside a notebook.

``check(exercise_id, answer)`` runs the exercise's check on fresh random
inputs, shows the result (HTML in Jupyter, text in a terminal), records it in
the progress store and never raises. ``evaluate`` does the same work without
showing or recording anything, for tests and the grader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from backprop_course import exercises, settings
from backprop_course.outcome import Status, judge
from backprop_course.progress import ProgressStore

__all__ = ["CheckResult", "check", "evaluate", "hint", "progress"]

CORRECT, WRONG, NOT_ATTEMPTED, ERROR, UNKNOWN = (
    Status.CORRECT,
    Status.WRONG,
    Status.NOT_ATTEMPTED,
    Status.ERROR,
    Status.UNKNOWN,
)

# status: (text colour, background, label, CSS class). The label carries the verdict in
# words and a symbol, so it reads the same without colour (or in a terminal); the CSS
# classes (``bpc-check`` plus one of these) are stable for tests and custom styles.
_STYLE = {
    CORRECT: ("#1b5e20", "#e8f5e9", "✔ PASS", "bpc-pass"),
    WRONG: ("#b71c1c", "#ffebee", "✘ FAIL", "bpc-fail"),
    NOT_ATTEMPTED: ("#5d4037", "#fff8e1", "… NOT ATTEMPTED", "bpc-not-attempted"),
    ERROR: ("#e65100", "#fff3e0", "⚠ CHECK FAILED", "bpc-error"),
    UNKNOWN: ("#4a148c", "#f3e5f5", "? UNKNOWN EXERCISE", "bpc-unknown"),
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one answer."""

    exercise_id: str
    title: str
    status: Status
    message: str
    points: float
    max_points: float
    next_hint: str | None = None
    hint_number: int = 0  # which hint next_hint is (1-based), of hint_total
    hint_total: int = 0
    label: str | None = None  # replaces the status's label (a call of check() it cannot use)

    @property
    def passed(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        label = self.label or _STYLE[self.status][2]
        if self.status == UNKNOWN:
            return f"{label}  {self.message}"
        lines = [
            f"{label}  {self.exercise_id} ({self.title}): "
            f"{_fmt(self.points)}/{_fmt(self.max_points)} points",
            *(f"  {line}" for line in self.message.splitlines()),
        ]
        if self.next_hint and not self.passed:
            lines.append(f"  Stuck? hint({self.exercise_id!r}) shows a hint.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        color, background, label, css = _STYLE[self.status]
        label = self.label or label
        if self.status == UNKNOWN:
            return (
                f"<div class='bpc-check {css}' role='status' "
                f"style='border-left:6px solid {color};background:{background};"
                f"padding:6px 10px;margin:4px 0;font-family:sans-serif;color:#212121'>"
                f"<b class='bpc-label' style='color:{color}'>{label}</b> "
                f"<span class='bpc-message'>{html.escape(self.message)}</span></div>"
            )
        hint_html = ""
        if self.next_hint and not self.passed:
            which = f" {self.hint_number} of {self.hint_total}" if self.hint_total else ""
            hint_html = (
                "<details class='bpc-next-hint' style='margin-top:6px'>"
                f"<summary style='cursor:pointer'>Stuck? Show hint{which}</summary>"
                f"<div style='margin:4px 0 0 14px'>{html.escape(self.next_hint)}</div>"
                f"<div style='margin:4px 0 0 14px;font-size:90%;color:#424242'>"
                f"<code>hint({html.escape(repr(self.exercise_id))})</code> "
                "reveals the hints one at a time.</div></details>"
            )
        return (
            f"<div class='bpc-check {css}' role='status' "
            f"style='border-left:6px solid {color};background:{background};"
            f"padding:6px 10px;margin:4px 0;font-family:sans-serif;color:#212121'>"
            f"<b class='bpc-label' style='color:{color}'>{label}</b> "
            f"<code>{html.escape(self.exercise_id)}</code> {html.escape(self.title)}: "
            f"<b>{_fmt(self.points)}/{_fmt(self.max_points)}</b> points"
            f"<div class='bpc-message' style='margin-top:4px;white-space:pre-wrap'>"
            f"{html.escape(self.message)}</div>"
            f"{hint_html}</div>"
        )

    def __repr__(self) -> str:
        return str(self)


def _fmt(points: float) -> str:
    return f"{points:g}"


def _fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def evaluate(exercise_id: str, answer: Any, *, seed: int | None = None) -> CheckResult:
    """Check ``answer`` for ``exercise_id`` and return the result; never raises.

    ``seed`` fixes the random test inputs (the grader and tests use it);
    by default every call draws fresh ones.
    """
    try:
        ex = exercises.get(exercise_id)
    except KeyError as error:
        return CheckResult(str(exercise_id), "", UNKNOWN, str(error.args[0]), 0, 0)
    rng = np.random.default_rng(_fresh_seed() if seed is None else seed)
    status, message = judge(ex, answer, rng)
    points = ex.points if status == CORRECT else 0
    return CheckResult(
        ex.id,
        ex.title,
        status,
        message,
        points,
        ex.points,
        next_hint=ex.hints[0] if ex.hints else None,
        hint_number=1 if ex.hints else 0,
        hint_total=len(ex.hints),
    )


def _show(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(obj)
        return
    if get_ipython() is None:
        print(obj)
    else:
        display(obj)


_MISSING = object()


def check(exercise_id: Any = _MISSING, answer: Any = _MISSING, *args: Any, **kwargs: Any) -> None:
    """Check your answer to an exercise, show why it is right or wrong, record progress.

    ``answer`` is what the exercise asks for: usually the function or value
    you just wrote. This never raises: a wrong or unfinished answer, or a call
    with the wrong arguments, is reported.
    """
    if exercise_id is _MISSING or answer is _MISSING or args or kwargs:
        _show(_usage(exercise_id, answer, args, kwargs))
        return
    if settings.grading_kernel():  # what counts is the grader's own check, on hidden inputs
        name = repr(exercise_id) if isinstance(exercise_id, str) else "..."
        print(f"check({name}, ...): not run here; the grader checks this answer itself")
        return
    result = evaluate(exercise_id, answer)
    _log(result)
    if result.status != UNKNOWN and settings.recording_enabled():
        store = ProgressStore.default()
        try:
            if result.status != NOT_ATTEMPTED:
                store.record_attempt(result.exercise_id, passed=result.passed, points=result.points)
        except OSError as error:
            print(f"(progress not saved: {error})")
        shown = _SESSION_HINTS.get(_session_key(result.exercise_id), 0)
        ex = exercises.get(result.exercise_id)
        nxt = ex.hints[shown] if shown < len(ex.hints) else None
        result = dataclasses.replace(result, next_hint=nxt, hint_number=shown + 1 if nxt else 0)
    _show(result)


def _log(result: CheckResult) -> None:
    """One JSON line per check() for the test suite (``BACKPROP_COURSE_CHECK_LOG``)."""
    path = settings.check_log()
    if path is None:
        return
    line = json.dumps(
        {
            "folder": os.getcwd(),
            "id": result.exercise_id,
            "status": str(result.status),
            "message": result.message,
        }
    )
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(line + "\n")
    except OSError:
        pass


def _usage(exercise_id: Any, answer: Any, args: tuple, kwargs: dict) -> CheckResult:
    if exercise_id is _MISSING:
        got = "no arguments"
    elif answer is _MISSING:
        got = f"only {exercise_id!r}"
    else:
        got = f"{2 + len(args) + len(kwargs)} arguments"
    message = (
        "check() takes two things: the exercise id and your answer, e.g. "
        f'check("01.central_difference", central_difference); it got {got}.'
    )
    return CheckResult(
        str(exercise_id if exercise_id is not _MISSING else ""), "", UNKNOWN, message, 0, 0
    )


@dataclass(frozen=True)
class Hint:
    """One revealed hint, displayed as text or HTML."""

    exercise_id: str
    number: int
    total: int
    text: str

    def __str__(self) -> str:
        return f"Hint {self.number}/{self.total} for {self.exercise_id}: {self.text}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return (
            f"<div class='bpc-hint' style='border-left:6px solid #0d47a1;background:#e3f2fd;"
            "padding:6px 10px;"
            f"font-family:sans-serif;color:#212121'><b>Hint {self.number}/{self.total}</b> "
            f"<code>{html.escape(self.exercise_id)}</code>: {html.escape(self.text)}</div>"
        )


# Hints revealed in this process, that is this kernel session, keyed by (progress store,
# exercise id). A restarted kernel ("Restart Kernel and Run All") starts again at hint 1,
# as the lesson text expects; passes persist in the store.
_SESSION_HINTS: dict[tuple[str, str], int] = {}


def _session_key(exercise_id: str) -> tuple[str, str]:
    return (str(settings.progress_path()), exercise_id)


def hint(exercise_id: str) -> None:
    """Reveal the next hint for an exercise (each call shows one more, in this session)."""
    try:
        ex = exercises.get(exercise_id)
    except KeyError as error:
        _show(f"hint: {error.args[0]}")
        return
    if not ex.hints:
        _show(f"hint: {ex.id} has no hints; the lesson notebook works through the idea.")
        return
    key = _session_key(ex.id)
    number = min(_SESSION_HINTS.get(key, 0) + 1, len(ex.hints))
    _SESSION_HINTS[key] = number
    if settings.recording_enabled():
        with contextlib.suppress(OSError):  # a hint is shown even if it cannot be recorded
            ProgressStore.default().record_hint(ex.id, number)
    text = ex.hints[number - 1]
    if number == len(ex.hints):
        text += "  (That was the last hint; the lesson notebook works through the idea.)"
    _show(Hint(ex.id, number, len(ex.hints), text))


START_HINT = (
    "No exercise passed yet: open exercises/00_welcome.ipynb and run its check() cells "
    "(`backprop-course start` copies the course and opens JupyterLab)."
)


def _lesson_names() -> dict[str, str]:
    """``{"01": "derivatives", ...}`` from the course's notebooks; empty if not found."""
    try:
        from backprop_course.course import lessons

        return {lesson.number: lesson.stem[3:].replace("_", " ") for lesson in lessons()}
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class ProgressReport:
    """Points per lesson from the progress store, as a table.

    Every lesson with exercises has a row, passed or not, so the table also shows
    what there is still to earn.
    """

    rows: tuple[tuple[str, int, int, float, float], ...]  # lesson, passed, count, points, max
    names: tuple[tuple[str, str], ...] = ()  # (lesson, name) pairs, e.g. ("01", "derivatives")

    @classmethod
    def collect(cls, store: ProgressStore | None = None) -> ProgressReport:
        records = (store or ProgressStore.default()).load()["exercises"]
        rows = []
        for lesson in exercises.lessons():
            items = exercises.for_lesson(lesson)
            passed = [e for e in items if records.get(e.id, {}).get("passed")]
            rows.append(
                (
                    lesson,
                    len(passed),
                    len(items),
                    sum(e.points for e in passed),
                    sum(e.points for e in items),
                )
            )
        return cls(tuple(rows), tuple(_lesson_names().items()))

    @property
    def started(self) -> bool:
        return any(row[1] for row in self.rows)

    def _label(self, lesson: str) -> str:
        return f"{lesson} {dict(self.names).get(lesson, '')}".strip()

    def _totals(self) -> tuple[int, int, float, float]:
        return (
            sum(r[1] for r in self.rows),
            sum(r[2] for r in self.rows),
            sum(r[3] for r in self.rows),
            sum(r[4] for r in self.rows),
        )

    def __str__(self) -> str:
        width = max([len(self._label(r[0])) for r in self.rows] + [8]) + 2
        lines = [f"{'lesson':<{width}}{'passed':>10}{'points (earned/possible)':>26}"]
        for lesson, passed, count, points, possible in self.rows:
            lines.append(
                f"{self._label(lesson):<{width}}{f'{passed}/{count}':>10}"
                f"{f'{points:g}/{possible:g}':>26}"
            )
        passed, count, points, possible = self._totals()
        lines.append(f"{'total':<{width}}{f'{passed}/{count}':>10}{f'{points:g}/{possible:g}':>26}")
        if not self.started:
            lines.append(START_HINT)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cell = "style='padding:2px 10px;text-align:{}'"
        left, right = cell.format("left"), cell.format("right")

        def row(label, passed, count, points, possible, tag="td"):
            return (
                f"<tr><{tag} {left}>{html.escape(label)}</{tag}>"
                f"<{tag} {right}>{passed}/{count}</{tag}>"
                f"<{tag} {right}>{points:g}</{tag}><{tag} {right}>{possible:g}</{tag}>"
                f"<{tag} {left}><progress value='{points:g}' max='{possible:g}'></progress>"
                f"</{tag}></tr>"
            )

        body = "".join(row(self._label(r[0]), *r[1:]) for r in self.rows)
        note = (
            ""
            if self.started
            else "<p class='bpc-progress-empty'>"
            + re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(START_HINT))
            + "</p>"
        )
        return (
            "<div class='bpc-progress' style='font-family:sans-serif'><table>"
            f"<thead><tr><th {left}>lesson</th><th {right}>exercises passed</th>"
            f"<th {right}>points earned</th><th {right}>points possible</th><th></th></tr>"
            f"</thead><tbody>{body}</tbody><tfoot>{row('total', *self._totals(), tag='th')}"
            f"</tfoot></table>{note}</div>"
        )


def progress() -> None:
    """Show your progress: exercises passed and points, per lesson."""
    if settings.grading_kernel():  # no progress is kept where the grader runs a notebook
        print("progress(): not shown here; the grader's gradebook has the points")
        return
    _show(ProgressReport.collect())
