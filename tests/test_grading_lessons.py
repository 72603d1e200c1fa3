"""Every lesson through the grader: solutions earn full marks, untouched exercises zero.

This is the proof that every exercise's check works on remote proxies of the
learner's answers (from outside the learner's kernel), lesson by lesson.
"""

from __future__ import annotations

import shutil

import pytest

from backprop_course import exercises
from backprop_course.grading import grade
from conftest import ROOT

STEMS = sorted(
    p.stem
    for p in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")
    if (ROOT / "exercises" / p.name).exists() and p.stem[:2] in exercises.lessons()
)


@pytest.mark.parametrize("stem", STEMS)
def test_solutions_full_marks_exercises_not_attempted(stem, tmp_path):
    for part in ("solutions", "exercises"):
        (tmp_path / "in" / part).mkdir(parents=True)
        shutil.copy(ROOT / part / f"{stem}.ipynb", tmp_path / "in" / part)
    result = grade(
        [tmp_path / "in"],
        tmp_path / "out",
        timeout=300,
        cell_timeout=240,
        workers=2,
        progress=False,
    )
    ids = [e.id for e in exercises.for_lesson(stem[:2])]
    got = {(r.submission, r.exercise): (r.status, r.points, r.max_points) for r in result.records}
    expected = {}
    for ex in exercises.for_lesson(stem[:2]):
        expected[("solutions", ex.id)] = ("correct", ex.points, ex.points)
        expected[("exercises", ex.id)] = ("not_attempted", 0, ex.points)
    assert got == expected, {k: v for k, v in got.items() if expected.get(k) != v} or ids
    feedback = {(r.submission, r.exercise): r.feedback for r in result.records}
    assert all(feedback[k] for k in feedback), "every row has feedback"
