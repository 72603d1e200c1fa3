"""Every solution and released exercise notebook, scored from the suite's own run of it.

These tests run after every notebook (marker ``after_notebooks``, in a file of their
own, so that pytest-xdist hands them out last): each reads what the check() calls of
the notebook's nbval run reported (see ``notebook_scores`` in conftest.py).
"""

from __future__ import annotations

import pytest

from backprop_course import exercises
from backprop_course.checking import CORRECT, NOT_ATTEMPTED
from conftest import ROOT, notebook_scores

GRADED = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.after_notebooks
@pytest.mark.parametrize("stem", GRADED)
def test_solutions_earn_full_marks(stem, tmp_path):
    """Every solution notebook ran to the end and every one of its checks passed."""
    scores = notebook_scores(ROOT / "solutions" / f"{stem}.ipynb", stem[:2], tmp_path)
    ids = [e.id for e in exercises.for_lesson(stem[:2])]
    assert sorted(scores) == sorted(ids), f"checks that did not run: {set(ids) - set(scores)}"
    assert {k: set(v) for k, v in scores.items()} == {k: {CORRECT} for k in ids}, scores


@pytest.mark.after_notebooks
@pytest.mark.parametrize("stem", GRADED)
def test_untouched_exercises_are_not_attempted(stem, tmp_path):
    """Every released exercise notebook ran to the end and every check said not attempted."""
    scores = notebook_scores(ROOT / "exercises" / f"{stem}.ipynb", stem[:2], tmp_path)
    ids = [e.id for e in exercises.for_lesson(stem[:2])]
    assert sorted(scores) == sorted(ids), f"checks that did not run: {set(ids) - set(scores)}"
    assert {k: set(v) for k, v in scores.items()} == {k: {NOT_ATTEMPTED} for k in ids}, scores
