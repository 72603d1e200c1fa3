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
