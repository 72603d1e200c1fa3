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
