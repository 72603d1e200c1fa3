"""Where the course keeps its state, and how it knows it runs under test.

Everything that an environment variable can change is read here, so a reader
finds every knob in one place.

| variable | meaning | default |
| --- | --- | --- |
| ``BACKPROP_COURSE_HOME`` | folder for the progress store, wherever check() runs | see below |
| ``BACKPROP_COURSE_TEST_MODE`` | ``1``: lessons shrink their work to seconds | unset |
| ``BACKPROP_COURSE_NO_RECORD`` | ``1``: ``check()`` records nothing (the grader) | unset |
| ``BACKPROP_COURSE_CHECK_LOG`` | file that ``check()`` appends results to (tests) | unset |

Progress is kept per course folder. ``backprop-course start`` marks the folder it
makes with ``.backprop_course/course.json``; ``check()`` run from a notebook inside
such a folder (a kernel's working folder is its notebook's folder) keeps progress in
that folder's ``.backprop_course/progress.json``. Outside a course folder it uses the
user store, ``~/.backprop_course/progress.json``. ``BACKPROP_COURSE_HOME``, when set,
wins over both.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "BACKPROP_COURSE_HOME"
TEST_MODE_VARIABLE = "BACKPROP_COURSE_TEST_MODE"
NO_RECORD_VARIABLE = "BACKPROP_COURSE_NO_RECORD"
CHECK_LOG_VARIABLE = "BACKPROP_COURSE_CHECK_LOG"
GRADING_VARIABLE = "BACKPROP_COURSE_GRADING"

# The state folder has the same name in a course folder and in the user's home.
STATE_FOLDER = ".backprop_course"
COURSE_MARKER = "course.json"  # inside STATE_FOLDER: this folder was made by `start`


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def home_dir() -> Path:
    """The user store: ``$BACKPROP_COURSE_HOME``, else ``~/.backprop_course``."""
    configured = os.environ.get(HOME_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / STATE_FOLDER


def is_course_folder(folder: Path) -> bool:
    """True when ``folder`` was made by ``backprop-course start`` (it has the marker)."""
    return (Path(folder) / STATE_FOLDER / COURSE_MARKER).is_file()


def course_folder(start: Path | None = None) -> Path | None:
    """The course folder that holds ``start`` (default: the working folder), or None."""
    try:
        here = Path(start if start is not None else Path.cwd()).resolve()
    except OSError:  # the working folder was deleted under us
        return None
    return next((folder for folder in (here, *here.parents) if is_course_folder(folder)), None)


def state_dir(start: Path | None = None) -> Path:
    """The folder of the progress store in use for ``start`` (default: the working folder)."""
    if os.environ.get(HOME_VARIABLE, "").strip():
        return home_dir()
    folder = course_folder(start)
    return folder / STATE_FOLDER if folder is not None else home_dir()


def progress_path(start: Path | None = None) -> Path:
    """The JSON file of the progress store in use (see the module docstring)."""
    return state_dir(start) / "progress.json"


def test_mode() -> bool:
    """True when lessons should shrink their work (set by the test suite)."""
    return _flag(TEST_MODE_VARIABLE)


def recording_enabled() -> bool:
    """False when ``check()`` must not write progress (set by the grader)."""
    return not _flag(NO_RECORD_VARIABLE)


def grading_kernel() -> bool:
    """True in a kernel the grader runs: there ``check()`` only says that the grader checks."""
    return _flag(GRADING_VARIABLE)


def check_log() -> Path | None:
    """The file ``check()`` appends its results to, if one is set."""
    configured = os.environ.get(CHECK_LOG_VARIABLE, "").strip()
    return Path(configured) if configured else None
