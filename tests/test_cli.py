"""The backprop-course command: doctor, progress, start, and the wheel it ships in."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
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


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _api(url: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _setting(base: str, plugin: str) -> dict:
    """A JupyterLab plugin's settings in effect: its schema defaults (where overrides land)
    under the user's own settings."""
    answer = _api(f"{base}/lab/api/settings/{plugin}?token=test-token")
    defaults = {k: v.get("default") for k, v in answer["schema"]["properties"].items()}
    return {**defaults, **answer["settings"]}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_start_serves_the_course_and_stops_with_its_pid(tmp_path):
    """start serves the course with its overrides; `kill PID` leaves no server or kernel."""
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_TOKEN": "test-token",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
    }
    command = [sys.executable, "-m", "backprop_course.cli", "start", str(tmp_path / "w")]
    process = subprocess.Popen(
        [*command, "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # so that a failure can still clean up the whole group
    )
    base = f"http://127.0.0.1:{port}"
    kernels = set()
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine
        while True:
            try:
                listing = _api(f"{base}/api/contents/notebooks?token=test-token")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "JupyterLab did not answer in 120 s"
                time.sleep(0.5)
        assert "00_welcome.ipynb" in {item["name"] for item in listing["content"]}
        widgets = _setting(base, "@jupyter-widgets/jupyterlab-manager:plugin")
        assert widgets["saveState"] is True
        notification = _setting(base, "@jupyterlab/apputils-extension:notification")
        assert notification["fetchNews"] == "false" and notification["checkForUpdates"] is False
        _api(f"{base}/api/kernels?token=test-token", method="POST")
        deadline = time.monotonic() + 120
        while not (kernels := _children(process.pid)):  # start *is* the server: exec
            assert time.monotonic() < deadline, "no kernel process appeared"
            time.sleep(0.5)
        os.kill(process.pid, signal.SIGTERM)  # `kill PID`, as a learner would
        process.wait(timeout=120)
        deadline = time.monotonic() + 120
        while left := {pid for pid in kernels if _alive(pid)}:
            assert time.monotonic() < deadline, f"kernel processes {left} outlived the server"
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for pid in kernels:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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
    """The wheel holds the lessons, exercises, the text corpus and the LICENSE; no solutions."""
    names = zipfile.ZipFile(wheel).namelist()
    for part, stem in (("notebooks", "00_welcome"), ("exercises", "01_derivatives")):
        assert f"backprop_course/_course/{part}/{stem}.ipynb" in names
    assert "backprop_course/data_files/tinyshakespeare.txt.gz" in names
    assert not [n for n in names if "solutions" in n]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names[-8:]


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
    """--no-browser, --port, lesson 00 and the course's settings overrides reach JupyterLab."""

    from backprop_course import lab

    calls = []
    monkeypatch.setattr(lab, "launch", lambda command, env, cwd: calls.append((command, env)) or 0)
    port = free_port()
    work = tmp_path / "work"
    assert main(["start", str(work), "--no-browser", "--port", str(port)]) == 0
    ((command, env),) = calls
    assert command[1:3] == ["-m", "jupyterlab"]
    # The course's own JupyterLab settings come first on this server's config path only.
    config = Path(env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0])
    overrides = json.loads((config / "labconfig" / "default_setting_overrides.json").read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": True}
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert config.is_relative_to(work.resolve()) and "JUPYTER_CONFIG_PATH" not in os.environ
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


def _notebook(path: Path, sources: list[str]) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"display_name": "Python 3", "name": "python3"}}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def _as_jupyterlab_saves_it(path: Path) -> None:
    """What opening, running and autosaving does: metadata, outputs, ids, widget state."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.2"}
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for number, cell in enumerate(notebook.cells, 1):
        cell["id"] = f"renamed-{number}"
        cell.metadata["execution"] = {"iopub.status.idle": "2026-11-30T08:00:00Z"}
        if cell.cell_type == "code":
            cell.execution_count = number
            cell.outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    path.write_text(json.dumps(notebook, indent=2), encoding="utf-8")  # not nbformat's layout


def test_start_ignores_what_jupyterlab_rewrites(tmp_path, capsys):
    """A lesson that was only opened, run and autosaved counts as not edited: no .new.ipynb."""
    work = tmp_path / "work"
    assert main(["start", str(work), "--copy-only"]) == 0
    for path in sorted((work / "notebooks").glob("*.ipynb")):
        _as_jupyterlab_saves_it(path)
    _as_jupyterlab_saves_it(work / "exercises" / "00_welcome.ipynb")
    capsys.readouterr()
    assert main(["start", str(work), "--copy-only"]) == 0
    out = capsys.readouterr().out
    assert not list(work.rglob("*.new.ipynb"))
    assert "new release" not in out and "0 copied, 0 updated" in out and "edited" not in out


def test_start_writes_the_release_beside_only_when_it_changed(tmp_path, capsys):
    """An edited notebook gets NN.new.ipynb only when the release changed, with what changed."""
    root = tmp_path / "release"
    _notebook(root / "notebooks" / "00_a.ipynb", ["x = 1", "y = 2", "z = 3"])
    _notebook(root / "exercises" / "00_a.ipynb", ["answer = ..."])
    work = tmp_path / "work"
    copy_course(work, root=root)
    mine = work / "notebooks" / "00_a.ipynb"
    _notebook(mine, ["x = 1", "y = 20", "z = 3"])  # the learner's edit
    _as_jupyterlab_saves_it(mine)
    again = copy_course(work, root=root)
    assert again.edited == ["notebooks/00_a.ipynb"] and not again.kept_with_new_beside
    assert not list(work.rglob("*.new.ipynb"))
    _notebook(root / "notebooks" / "00_a.ipynb", ["x = 1", "y = 2", "z = 4", "w = 5"])
    _notebook(root / "exercises" / "00_a.ipynb", ["answer = ...", "check()"])
    report = copy_course(work, root=root)
    assert report.kept_with_new_beside == ["notebooks/00_a.ipynb"]
    assert report.changes["notebooks/00_a.ipynb"] == "1 cell changed, 1 cell added"
    assert (work / "notebooks" / "00_a.new.ipynb").read_bytes() == (
        root / "notebooks" / "00_a.ipynb"
    ).read_bytes()
    assert report.updated == ["exercises/00_a.ipynb"]  # never edited: simply updated
    assert "y = 20" in mine.read_text()


def test_start_upgrades_a_folder_from_an_older_start(tmp_path, home, capsys):
    """An older start's folder: noise is no edit, edits stay, user progress moves in."""
    from backprop_course import settings
    from backprop_course.course import LEGACY_MANIFEST
    from backprop_course.progress import ProgressStore

    root = tmp_path / "release"
    _notebook(root / "notebooks" / "00_a.ipynb", ["x = 1"])
    _notebook(root / "exercises" / "00_a.ipynb", ["answer = ..."])
    work = tmp_path / "work"
    for part in ("notebooks", "exercises"):
        (work / part).mkdir(parents=True)
        (work / part / "00_a.ipynb").write_bytes((root / part / "00_a.ipynb").read_bytes())
    legacy = {
        f"{part}/00_a.ipynb": hashlib.sha256((root / part / "00_a.ipynb").read_bytes()).hexdigest()
        for part in ("notebooks", "exercises")
    }
    (work / LEGACY_MANIFEST).write_text(json.dumps(legacy))
    _as_jupyterlab_saves_it(work / "notebooks" / "00_a.ipynb")
    _notebook(work / "exercises" / "00_a.ipynb", ["answer = 42"])
    ProgressStore.default().record_attempt("00.slope", passed=True, points=1)
    report = copy_course(work, root=root)
    assert report.unchanged == ["notebooks/00_a.ipynb"]
    assert report.edited == ["exercises/00_a.ipynb"] and not report.kept_with_new_beside
    assert not list(work.rglob("*.new.ipynb"))
    assert not (work / LEGACY_MANIFEST).exists() and settings.is_course_folder(work)
    store = ProgressStore(work / ".backprop_course" / "progress.json")
    assert store.entry("00.slope")["passed"] is True


def test_bare_command_lists_every_command(capsys):
    """`backprop-course` alone prints its commands, each with a one-line description."""
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("start", "doctor", "release", "progress", "bench", "grade"):
        assert re.search(rf"^\s+{command}\s+\w", out, re.MULTILINE), command


def test_every_subcommand_help_has_a_description():
    """Each subcommand's --help opens with a description, not just the usage line."""
    import argparse

    from backprop_course.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) >= {"start", "doctor", "release", "progress", "bench", "grade"}
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 40, name
        assert sub.description.split()[0] in sub.format_help(), name


def test_version_comes_from_the_package_metadata(capsys):
    """--version prints the installed metadata's version, written only in pyproject.toml."""
    import importlib.metadata

    import backprop_course

    installed = importlib.metadata.version("backprop-course")
    assert backprop_course.__version__ == installed
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"backprop-course {installed}"
    source = (ROOT / "backprop_course" / "__init__.py").read_text()
    assert installed not in source


def test_progress_reads_the_course_folder_store(tmp_path, monkeypatch, capsys):
    """progress shows the store of the course folder given, or of ./backprop-course-work."""
    from backprop_course import settings
    from backprop_course.progress import ProgressStore

    monkeypatch.delenv(settings.HOME_VARIABLE)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    assert main(["start", "--copy-only"]) == 0  # ./backprop-course-work
    store = tmp_path / "backprop-course-work" / ".backprop_course" / "progress.json"
    ProgressStore(store).record_attempt("00.slope", passed=True, points=1)
    capsys.readouterr()
    for argv in (["progress"], ["progress", "backprop-course-work"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "No exercise passed yet" not in out and str(store.resolve()) in out
    assert main(["progress", str(tmp_path / "user")]) == 2
    assert "not a course folder" in capsys.readouterr().err


def test_a_dead_servers_runtime_file_is_not_a_running_server(tmp_path, monkeypatch):
    """A runtime file whose server no longer answers (a reused pid) does not stop a start."""
    from backprop_course import lab

    runtime = tmp_path / "runtime"
    runtime.mkdir()
    info = {
        "pid": os.getpid(),  # alive, but not a Jupyter server
        "root_dir": str(tmp_path / "course"),
        "url": f"http://127.0.0.1:{free_port()}/",
        "token": "t",
    }
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(info))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    assert lab.running_server(tmp_path / "course") is None
