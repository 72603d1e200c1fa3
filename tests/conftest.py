"""Test-wide settings: a private progress store and lessons in test mode.

Both are environment variables, so the Jupyter kernels that nbval starts for
the notebooks inherit them too.
"""

from __future__ import annotations

import os
import tempfile
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
# one run that executes them, not from a second execution.
CHECK_LOG = Path(_SESSION_HOME) / "checks.jsonl"
os.environ[settings.CHECK_LOG_VARIABLE] = str(CHECK_LOG)
_EXECUTED_NOTEBOOKS: set[Path] = set()


def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``after_notebooks`` run last: they read what the notebooks scored."""
    late = [item for item in items if item.get_closest_marker("after_notebooks")]
    items[:] = [item for item in items if item not in late] + late
    _EXECUTED_NOTEBOOKS.update(
        Path(str(item.fspath)).resolve() for item in items if str(item.fspath).endswith(".ipynb")
    )


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

    Read from this session's nbval run when it executed the notebook; otherwise (a
    partial run of the suite) the notebook is executed here, once.
    """
    import json

    path = path.resolve()
    log = CHECK_LOG
    if path not in _EXECUTED_NOTEBOOKS:
        log = tmp_path / "checks.jsonl"
        _execute_for_scores(path, log)
    scores: dict[str, list[str]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if Path(record["folder"]).resolve() == path.parent and record["id"][:2] == lesson:
                scores.setdefault(record["id"], []).append(record["status"])
    return scores
