"""Test-wide settings: a private progress store and lessons in test mode.

Both are environment variables, so the Jupyter kernels that nbval starts for
the notebooks inherit them too.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from pathlib import Path

import pytest

from backprop_course import settings

ROOT = Path(__file__).resolve().parents[1]

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
# one run that executes them, not from a second execution. Under pytest-xdist (the
# README's command runs two workers, a notebook file each at a time) the workers share
# this folder: the log, and a marker per notebook whose run has finished.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
_SHARED = Path(tempfile.gettempdir()) / f"backprop-course-tests-{_RUN_ID}" if _RUN_ID else None
if _SHARED is not None:
    _SHARED.mkdir(exist_ok=True)
CHECK_LOG = (_SHARED or Path(_SESSION_HOME)) / "checks.jsonl"
os.environ[settings.CHECK_LOG_VARIABLE] = str(CHECK_LOG)
_FINISHED = (_SHARED or Path(_SESSION_HOME)) / "notebooks-finished"
_EXECUTED_NOTEBOOKS: set[Path] = set()
_LAST_CELL: dict[str, Path] = {}  # node id of a notebook's last collected cell -> notebook
NOTEBOOK_WAIT_S = 900.0  # the longest a score test waits for a notebook another worker runs


def _finished_marker(path: Path) -> Path:
    return _FINISHED / hashlib.sha256(str(path).encode()).hexdigest()[:32]


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``after_notebooks`` run last: they read what the notebooks scored."""
    late = [item for item in items if item.get_closest_marker("after_notebooks")]
    items[:] = [item for item in items if item not in late] + late
    last: dict[Path, str] = {}  # notebook -> its last cell that will run
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            last[Path(str(item.fspath)).resolve()] = item.nodeid
    _EXECUTED_NOTEBOOKS.update(last)
    _LAST_CELL.update({nodeid: path for path, nodeid in last.items()})


class _NotebookEnds:
    """A plugin for the whole session (a conftest's own run-test hooks see only the tests
    below it, and the notebooks are not): marks each notebook whose last cell has run."""

    def pytest_runtest_logfinish(self, nodeid, location):
        path = _LAST_CELL.get(nodeid)
        if path is not None:  # passed or not: its check() calls have all been logged
            _FINISHED.mkdir(exist_ok=True)
            _finished_marker(path).touch()


def pytest_configure(config):
    config.pluginmanager.register(_NotebookEnds(), "backprop-course-notebook-ends")


def _wait_until_finished(path: Path) -> bool:
    """Wait for the run of ``path`` (perhaps on another worker); False if it never ends."""
    deadline = time.monotonic() + NOTEBOOK_WAIT_S
    while not _finished_marker(path).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _execute_for_scores(path: Path, log: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    previous = os.environ.get(settings.CHECK_LOG_VARIABLE)
    os.environ[settings.CHECK_LOG_VARIABLE] = str(log)
    try:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        os.environ[settings.CHECK_LOG_VARIABLE] = previous or ""


def notebook_scores(path: Path, lesson: str, tmp_path: Path) -> dict[str, list[str]]:
    """Exercise id -> the statuses its check() calls reported when ``path`` ran.

    Read from this session's nbval run when it executed the notebook (waiting for it
    to finish if another worker runs it); otherwise (a partial run of the suite) the
    notebook is executed here, once.
    """
    import json

    path = path.resolve()
    log = CHECK_LOG
    if path not in _EXECUTED_NOTEBOOKS or not _wait_until_finished(path):
        log = tmp_path / "checks.jsonl"
        _execute_for_scores(path, log)
    scores: dict[str, list[str]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if Path(record["folder"]).resolve() == path.parent and record["id"][:2] == lesson:
                scores.setdefault(record["id"], []).append(record["status"])
    return scores


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
