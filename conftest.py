"""Test-wide settings: a private progress store and lessons in test mode.

Both are environment variables, so the Jupyter kernels that nbval starts for
the notebooks inherit them too. This file sits at the repository's root so that
they hold for every run, also ``pytest solutions/06_numpy_mlp.ipynb`` on its own.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import pytest

from backprop_course import settings

ROOT = Path(__file__).resolve().parent

_SESSION_HOME = tempfile.mkdtemp(prefix="backprop-course-test-home-")
os.environ[settings.HOME_VARIABLE] = _SESSION_HOME
os.environ[settings.TEST_MODE_VARIABLE] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty progress store for one test."""
    folder = tmp_path / "home"
    monkeypatch.setenv(settings.HOME_VARIABLE, str(folder))
    return folder


# ---------------------------------------------------------------- what the notebooks scored

# Every check() in a kernel that nbval starts appends its result here (the kernels
# inherit the variable), so the scores of solutions/ and exercises/ are read from the
# one run that executes them, not from a second execution.
CHECK_LOG = Path(_SESSION_HOME) / "checks.jsonl"
os.environ[settings.CHECK_LOG_VARIABLE] = str(CHECK_LOG)

# What each graded notebook's checks must all have said.
EXPECTED_STATUS = {"solutions": "correct", "exercises": "not_attempted"}


def notebook_scores(path: Path, lesson: str) -> dict[str, list[str]]:
    """Exercise id -> the statuses its check() calls reported when nbval ran ``path``."""
    path = Path(path).resolve()
    scores: dict[str, list[str]] = {}
    if CHECK_LOG.exists():
        for line in CHECK_LOG.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if Path(record["folder"]).resolve() == path.parent and record["id"][:2] == lesson:
                scores.setdefault(record["id"], []).append(record["status"])
    return scores


class NotebookScores(pytest.Item):
    """Every check() in a graded notebook's run said what it must: ``correct`` in a
    solutions notebook, ``not_attempted`` in an untouched exercises notebook.

    One such item follows the last cell of each graded notebook, in the notebook's own
    file, so it runs right after the notebook and on the same pytest-xdist worker
    (whose log it reads), whatever order the files are handed out in.
    """

    def __init__(self, *, notebook: Path, lesson: str, expected: str, **kwargs):
        super().__init__(**kwargs)
        self.notebook, self.lesson, self.expected = notebook, lesson, expected

    def runtest(self) -> None:
        from backprop_course import exercises

        scores = notebook_scores(self.notebook, self.lesson)
        ids = [e.id for e in exercises.for_lesson(self.lesson)]
        missing = sorted(set(ids) - set(scores))
        if missing:
            pytest.fail(f"checks that did not run (or did not log): {missing}", pytrace=False)
        bad = {k: v for k, v in scores.items() if set(v) != {self.expected}}
        if bad:
            pytest.fail(f"every check must say {self.expected!r}; these did not: {bad}", False)

    def reportinfo(self):
        return self.path, None, f"{self.name}: every check() {self.expected}"


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """After the last cell of each graded notebook in solutions/ and exercises/, an item
    that reads what the notebook's checks reported (see :class:`NotebookScores`)."""
    from backprop_course import exercises

    graded = set(exercises.lessons())
    last: dict[Path, int] = {}
    for index, item in enumerate(items):
        path = Path(str(item.fspath)).resolve()
        graded_notebook = path.suffix == ".ipynb" and path.name[:2] in graded
        if graded_notebook and path.parent.name in EXPECTED_STATUS and path.parents[1] == ROOT:
            last[path] = index
    for path, index in sorted(last.items(), key=lambda kv: -kv[1]):
        cell = items[index]
        score = NotebookScores.from_parent(
            cell.parent,
            name="scores",
            notebook=path,
            lesson=path.name[:2],
            expected=EXPECTED_STATUS[path.parent.name],
        )
        items.insert(index + 1, score)


# ---------------------------------------------------------------- the grader's sandbox


@functools.cache
def grading_sandbox() -> bool:
    """Whether bubblewrap can sandbox the grader's kernels here (CI installs it).

    Grading tests use the sandbox where it works and grade without it elsewhere (a
    laptop without bubblewrap); tests/test_grading_hostile.py needs it, and fails on
    CI when it is missing.
    """
    from backprop_course.grading.sandbox import probe

    return probe().available
