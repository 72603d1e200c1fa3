"""Where the course keeps its state, and how it knows it runs under test.

Everything that an environment variable can change is read here, so a reader
finds every knob in one place.

| variable | meaning | default |
| --- | --- | --- |
| ``BACKPROP_COURSE_HOME`` | folder for the progress store | ``~/.backprop_course`` |
| ``BACKPROP_COURSE_TEST_MODE`` | ``1``: lessons shrink their work to seconds | unset |
| ``BACKPROP_COURSE_NO_RECORD`` | ``1``: ``check()`` records nothing (the grader) | unset |
| ``BACKPROP_COURSE_CHECK_LOG`` | file that ``check()`` appends results to (tests) | unset |
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "BACKPROP_COURSE_HOME"
TEST_MODE_VARIABLE = "BACKPROP_COURSE_TEST_MODE"
NO_RECORD_VARIABLE = "BACKPROP_COURSE_NO_RECORD"
CHECK_LOG_VARIABLE = "BACKPROP_COURSE_CHECK_LOG"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home_dir() -> Path:
    """The folder that holds the learner's progress (created on first write)."""
    configured = os.environ.get(HOME_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".backprop_course"


def progress_path() -> Path:
    """The JSON file of the progress store."""
    return home_dir() / "progress.json"


def test_mode() -> bool:
    """True when lessons should shrink their work (set by the test suite)."""
    return _flag(TEST_MODE_VARIABLE)


def recording_enabled() -> bool:
    """False when ``check()`` must not write progress (set by the grader)."""
    return not _flag(NO_RECORD_VARIABLE)


def check_log() -> Path | None:
    """The file ``check()`` appends its results to, if one is set."""
    configured = os.environ.get(CHECK_LOG_VARIABLE, "").strip()
    return Path(configured) if configured else None
