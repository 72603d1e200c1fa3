"""Every lesson through the grader: each solution earns full marks on hidden inputs.

This is the proof that every exercise's check works on remote proxies of the
learner's answers (from outside the learner's kernel, with its rules enforced
inside it), lesson by lesson. That untouched exercises score zero is read from the
suite's own run of exercises/ (tests/test_exercises.py); a blank submission through
the grader is covered by tests/test_grading.py.
"""

from __future__ import annotations

import shutil

from backprop_course import exercises
from backprop_course.grading import grade
from conftest import ROOT

STEMS = sorted(
    p.stem
    for p in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")
    if p.stem[:2] in exercises.lessons()
)


def test_every_solution_earns_full_marks_through_the_grader(tmp_path):
    """One batch of every lesson's solution: every exercise is correct, with full points."""
    (tmp_path / "in" / "solutions").mkdir(parents=True)
    for stem in STEMS:
        shutil.copy(ROOT / "solutions" / f"{stem}.ipynb", tmp_path / "in" / "solutions")
    result = grade(
        [tmp_path / "in"],
        tmp_path / "out",
        timeout=300,
        cell_timeout=240,
        workers=2,
        progress=False,
    )
    got = {r.exercise: (r.status, r.points, r.max_points) for r in result.records}
    expected = {
        ex.id: ("correct", ex.points, ex.points)
        for stem in STEMS
        for ex in exercises.for_lesson(stem[:2])
    }
    wrong = {
        k: (v, next(r.feedback for r in result.records if r.exercise == k))
        for k, v in got.items()
        if expected.get(k) != v
    }
    assert got == expected, wrong
    assert all(r.feedback for r in result.records), "every row has feedback"
