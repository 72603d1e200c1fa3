"""settings: every environment knob in one place."""

from __future__ import annotations

from pathlib import Path

from backprop_course import settings


def test_home_defaults_to_user_folder(monkeypatch):
    """Without BACKPROP_COURSE_HOME the store lives in ~/.backprop_course."""
    monkeypatch.delenv(settings.HOME_VARIABLE, raising=False)
    assert settings.progress_path() == Path.home() / ".backprop_course" / "progress.json"


def test_home_override(monkeypatch, tmp_path):
    """BACKPROP_COURSE_HOME moves the progress file."""
    monkeypatch.setenv(settings.HOME_VARIABLE, str(tmp_path))
    assert settings.progress_path() == tmp_path / "progress.json"


def test_flags(monkeypatch):
    """Test mode and no-record mode read common truthy spellings."""
    monkeypatch.setenv(settings.TEST_MODE_VARIABLE, "yes")
    monkeypatch.setenv(settings.NO_RECORD_VARIABLE, "0")
    assert settings.test_mode() and settings.recording_enabled()
    monkeypatch.setenv(settings.TEST_MODE_VARIABLE, "")
    monkeypatch.setenv(settings.NO_RECORD_VARIABLE, "true")
    assert not settings.test_mode() and not settings.recording_enabled()


def _course(folder: Path) -> Path:
    (folder / settings.STATE_FOLDER).mkdir(parents=True)
    (folder / settings.STATE_FOLDER / settings.COURSE_MARKER).write_text("{}")
    return folder


def test_course_folder_is_found_from_inside(monkeypatch, tmp_path):
    """Below a folder marked by start, the store is that folder's; elsewhere the user's."""
    monkeypatch.delenv(settings.HOME_VARIABLE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    course = _course(tmp_path / "course")
    (course / "notebooks").mkdir()
    assert settings.course_folder(course / "notebooks") == course.resolve()
    assert settings.progress_path(course / "notebooks") == (
        course.resolve() / ".backprop_course" / "progress.json"
    )
    assert settings.course_folder(tmp_path) is None
    assert settings.progress_path(tmp_path) == tmp_path / "user" / ".backprop_course" / (
        "progress.json"
    )
    monkeypatch.chdir(course / "notebooks")
    assert settings.progress_path().parent == course.resolve() / ".backprop_course"


def test_home_override_wins_over_a_course_folder(monkeypatch, tmp_path):
    """BACKPROP_COURSE_HOME, when set, is used even inside a course folder."""
    course = _course(tmp_path / "course")
    monkeypatch.setenv(settings.HOME_VARIABLE, str(tmp_path / "elsewhere"))
    assert settings.progress_path(course) == tmp_path / "elsewhere" / "progress.json"
