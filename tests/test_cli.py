"""The backprop-course command: doctor, progress, start, and the wheel it ships in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from backprop_course.cli import main
from backprop_course.course import copy_course, course_root, lessons
from conftest import ROOT


def test_doctor_reports_versions_and_device(capsys, home):
    """doctor lists versions, the device and the progress store, and exits 0 here."""
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("Python", "torch", "numpy", "jupyterlab", "device: cpu", "progress store"):
        assert name in out


def test_doctor_reports_missing_packages(capsys, home, monkeypatch):
    """A missing package is listed as a problem and doctor exits 1."""
    import backprop_course.cli as cli

    monkeypatch.setattr(cli, "REQUIRED", (*cli.REQUIRED, "surely-not-installed-pkg"))
    assert main(["doctor"]) == 1
    assert "surely-not-installed-pkg is not installed" in capsys.readouterr().out


def test_progress_when_empty_says_how_to_start(capsys, home):
    """progress with no store prints the empty table and how to begin."""
    assert main(["progress"]) == 0
    assert "open exercises/00_welcome.ipynb" in capsys.readouterr().out


def test_help_explains_start(capsys):
    """start --help explains the folder, solutions and browser options."""
    with pytest.raises(SystemExit):
        main(["start", "--help"])
    out = capsys.readouterr().out
    assert "--with-solutions" in out and "--no-browser" in out and "overwrites" in out


def test_start_copies_lessons_and_exercises(tmp_path, capsys):
    """start --copy-only copies notebooks and exercises, not solutions."""
    assert main(["start", str(tmp_path / "work"), "--copy-only"]) == 0
    work = tmp_path / "work"
    assert (work / "notebooks" / "00_welcome.ipynb").exists()
    assert (work / "exercises" / "01_derivatives.ipynb").exists()
    assert not (work / "solutions").exists()
    assert "jupyter lab notebooks/00_welcome.ipynb" in capsys.readouterr().out


def test_start_twice_keeps_learner_edits(tmp_path):
    """A changed notebook is kept; the new release is written beside it."""
    root = tmp_path / "release"
    for part in ("notebooks", "exercises"):
        (root / part).mkdir(parents=True)
        (root / part / "00_a.ipynb").write_text(f"{part} v1")
    work = tmp_path / "work"
    copy_course(work, root=root)
    (work / "exercises" / "00_a.ipynb").write_text("my answers")
    for part in ("notebooks", "exercises"):
        (root / part / "00_a.ipynb").write_text(f"{part} v2")
    report = copy_course(work, root=root)
    assert report.updated == ["notebooks/00_a.ipynb"]
    assert report.kept_with_new_beside == ["exercises/00_a.ipynb"]
    assert (work / "notebooks" / "00_a.ipynb").read_text() == "notebooks v2"
    assert (work / "exercises" / "00_a.ipynb").read_text() == "my answers"
    assert (work / "exercises" / "00_a.new.ipynb").read_text() == "exercises v2"
    again = copy_course(work, root=root)
    assert (work / "exercises" / "00_a.ipynb").read_text() == "my answers"
    assert again.kept_with_new_beside == ["exercises/00_a.ipynb"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_start_into_unwritable_folder(tmp_path, capsys):
    """An unwritable folder gets a clear message and exit 2."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["start", str(locked / "work"), "--copy-only"]) == 2
    assert "cannot write the course" in capsys.readouterr().err


def test_start_into_a_file_path(tmp_path, capsys):
    """A target that is a file, not a folder, is a clear error (works as root too)."""
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["start", str(target), "--copy-only"]) == 2
    assert "cannot" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_start_with_port_in_use(tmp_path, capsys):
    """A busy port is reported before anything starts, with what to do."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.listen()
        assert main(["start", str(tmp_path / "w"), "--port", str(port)]) == 2
    assert "already in use" in capsys.readouterr().err


@pytest.mark.slow
def test_start_opens_jupyterlab(tmp_path):
    """start serves JupyterLab on the copied course (stopped at the end)."""
    port = free_port()
    env = {**os.environ, "JUPYTER_TOKEN": "test-token"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backprop_course.cli",
            "start",
            str(tmp_path / "w"),
            "--no-browser",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/contents/notebooks?token=test-token"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    listing = json.load(response)
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "JupyterLab did not answer in 60 s"
                time.sleep(0.5)
        assert "00_welcome.ipynb" in {item["name"] for item in listing["content"]}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_course_root_in_a_clone():
    """From a clone, the course files are the repository's folders."""
    assert course_root() == ROOT
    stems = [lesson.stem for lesson in lessons()]
    assert stems[:2] == ["00_welcome", "01_derivatives"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    return next(out.glob("backprop_course-*.whl"))


def test_wheel_carries_the_course(wheel):
    """The wheel holds the lessons, exercises and the text corpus, and no solved notebook."""
    names = zipfile.ZipFile(wheel).namelist()
    for part, stem in (("notebooks", "00_welcome"), ("exercises", "01_derivatives")):
        assert f"backprop_course/_course/{part}/{stem}.ipynb" in names
    assert "backprop_course/data_files/tinyshakespeare.txt.gz" in names
    assert not [n for n in names if "solutions" in n]


def test_start_from_a_wheel_without_a_clone(wheel, tmp_path):
    """Installed from the wheel alone, start copies the bundled course."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from backprop_course.cli import main; "
            "sys.exit(main(['start', 'work', '--copy-only']))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        str(site)
        in subprocess.run(
            [sys.executable, "-c", "import backprop_course; print(backprop_course.__file__)"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert (tmp_path / "work" / "exercises" / "01_derivatives.ipynb").exists(), result.stdout


def test_start_help_covers_every_option_and_bad_input(capsys):
    """start --help names each option, gives examples and says what happens on bad input."""
    with pytest.raises(SystemExit):
        main(["start", "--help"])
    out = capsys.readouterr().out
    for text in ("--port", "--copy-only", "lesson 00", "examples:", "not writable", "in use"):
        assert text in out


def test_start_passes_options_to_jupyterlab(tmp_path, monkeypatch, capsys):
    """--no-browser and --port reach JupyterLab, which opens lesson 00 of the copied course."""
    import backprop_course.cli as cli

    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, cwd: calls.append(command) or 0)
    port = free_port()
    work = tmp_path / "work"
    assert main(["start", str(work), "--no-browser", "--port", str(port)]) == 0
    (command,) = calls
    assert command[1:3] == ["-m", "jupyterlab"]
    for option in (
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={work.resolve()}",
        "--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb",
        str(work.resolve() / "notebooks" / "00_welcome.ipynb"),
    ):
        assert option in command


def test_start_twice_from_the_cli_keeps_edits(tmp_path, capsys):
    """Running start again into the same folder leaves an edited notebook as it is."""
    work = tmp_path / "work"
    assert main(["start", str(work), "--copy-only"]) == 0
    mine = work / "exercises" / "00_welcome.ipynb"
    mine.write_text(mine.read_text() + " ", encoding="utf-8")  # the learner's edit
    edited = mine.read_text()
    capsys.readouterr()
    assert main(["start", str(work), "--copy-only"]) == 0
    assert mine.read_text() == edited
    assert "0 copied, 0 updated" in capsys.readouterr().out


def test_start_into_unwritable_folder_any_user(tmp_path, monkeypatch, capsys):
    """A folder that refuses writes (even for root) is one sentence saying what to do."""
    import backprop_course.course as course

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(course, "copy_course", refuse)
    assert main(["start", str(tmp_path / "w"), "--copy-only"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the course" in err and "a folder you can write to" in err
    assert "Traceback" not in err


def test_progress_lists_every_lesson_with_points_possible(capsys, home):
    """With nothing passed, every lesson still shows its exercises and points possible."""
    from backprop_course import exercises

    assert main(["progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "passed" in lines[0] and "points" in lines[0]
    for lesson in exercises.lessons():
        items = exercises.for_lesson(lesson)
        row = next(line for line in lines if line.startswith(lesson + " "))
        assert f"0/{len(items)}" in row and f"0/{sum(e.points for e in items)}" in row
    total = sum(e.points for e in exercises.all_exercises())
    assert any(line.startswith("total") and f"0/{total}" in line for line in lines)


def test_progress_counts_a_pass(capsys, home):
    """A passed exercise shows in its lesson's row; the how-to-start line goes away."""
    from backprop_course.progress import ProgressStore

    ProgressStore.default().record_attempt("00.slope", passed=True, points=1)
    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("00 "))
    assert row.split()[-2:] == ["1/2", "1/2"]  # exercises passed, points earned/possible
    assert "No exercise passed yet" not in out
