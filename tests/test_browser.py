"""The learner's path in a real browser: start, lesson 00's feedback, explorers that redraw.

``backprop-course start --no-browser`` serves a fresh copy of the course with JupyterLab
on a free loopback port, behind a token. Debian's Chromium, driven headless by
Playwright (``executable_path``; no browser download), opens lesson 00 and the lessons
with an explorer, runs every cell from the Run menu, and checks what a learner would
see: the check() feedback with its collapsible hint, and a plot that changes when a
slider moves. Screenshots go to ``test-artifacts/browser/`` (or
``$BACKPROP_COURSE_ARTIFACTS``); their paths are printed.

Without a ``chromium`` executable or the ``playwright`` package the tests are skipped,
and the reason says which is missing. JupyterLab is shut down at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from backprop_course import settings
from conftest import ROOT

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
if CHROMIUM is None:
    pytest.skip(
        "no chromium executable on PATH: install it (apt-get install -y chromium) "
        "to run the browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed: pip install playwright (no browser download needed)",
)

pytestmark = pytest.mark.slow

SERVER_START_S = 90  # JupyterLab's first start on a busy 2-core machine
UI_TIMEOUT_MS = 60_000  # any single wait in the page (a kernel start, a run of a lesson)
ARTIFACTS = Path(os.environ.get("BACKPROP_COURSE_ARTIFACTS") or ROOT / "test-artifacts") / "browser"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_command() -> list[str]:
    """The installed console script, as a learner runs it (else the module)."""
    script = Path(sys.executable).with_name("backprop-course")
    if script.exists():
        return [str(script), "start"]
    return [sys.executable, "-m", "backprop_course.cli", "start"]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


class Lab:
    """A JupyterLab started by ``backprop-course start`` in a private folder."""

    def __init__(self, base: Path):
        self.base = base
        self.course = base / "course"
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "jupyterlab.log"
        config = base / "jupyter-config"
        # Loopback only, exactly this port; no news or update checks popping up over the page.
        _write_json(
            config / "jupyter_server_config.json",
            {"ServerApp": {"ip": "127.0.0.1", "port_retries": 0}},
        )
        lab_settings = base / "lab-settings"
        _write_json(
            lab_settings
            / "@jupyterlab"
            / "apputils-extension"
            / "notification.jupyterlab-settings",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        self.env = {
            **os.environ,
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(lab_settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
            settings.HOME_VARIABLE: str(base / "home"),
            settings.TEST_MODE_VARIABLE: "1",
        }
        self.env.pop("MPLBACKEND", None)  # the kernel draws inline, as for a learner
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [*_start_command(), str(self.course), "--no-browser", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.base,
                start_new_session=True,  # one process group: stopped together at the end
            )
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(self.api("status"), timeout=2) as response:
                    json.load(response)
                return
            except OSError:
                if self.process.poll() is not None:
                    pytest.fail(f"backprop-course start exited early:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in {SERVER_START_S} s:\n{self.log_tail()}"
                    )
                time.sleep(0.5)

    def api(self, path: str) -> str:
        return f"{self.url}/api/{path}?token={self.token}"

    def stop_kernels(self) -> None:
        """Shut down every kernel, so the next test starts on a quiet machine."""
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(self.api("kernels"), timeout=5) as response:
                kernels = json.load(response)
            for kernel in kernels:
                request = urllib.request.Request(
                    self.api(f"kernels/{kernel['id']}"), method="DELETE"
                )
                urllib.request.urlopen(request, timeout=15).close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Ask the server to shut down (kernels included), else terminate, then kill.

        Whatever is left of the process group afterwards is killed too.
        """
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                request = urllib.request.Request(self.api("shutdown"), method="POST")
                urllib.request.urlopen(request, timeout=5).close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers, or a server that hung
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("browser"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # root in CI containers needs --no-sandbox; /dev/shm is small in containers
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


_SAVED: list[Path] = []  # screenshots of the running test, listed when it ends


@pytest.fixture
def page(browser, lab, capsys):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
        lab.stop_kernels()
        with capsys.disabled():  # shown even when pytest captures output
            for path in _SAVED:
                print(f"\n  screenshot: {path}", end="")
        _SAVED.clear()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    _SAVED.append(path)
    return path


def bring_into_view(page, locator) -> None:
    """Scroll ``locator`` to the top of the notebook and wait until it stays there.

    Cells above it may still be growing (offscreen cells are laid out lazily and images
    load), which moves it again; a few rounds settle it.
    """
    previous = None
    for _ in range(10):
        locator.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(250)
        top = locator.bounding_box()["y"]
        if previous is not None and abs(top - previous) < 1:
            return
        previous = top


@contextlib.contextmanager
def screenshot_on_failure(page, lab: Lab, name: str):
    """On a failure, keep what the page showed and the end of JupyterLab's log."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            screenshot(page, f"FAILED_{name}")
        print(f"JupyterLab log (end):\n{lab.log_tail()}")
        raise


# The status bar names the kernel and says "Idle": it is connected and waiting.
KERNEL_IDLE_JS = """() => [
    ...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')
].some(item => /\\|\\s*Idle$/.test(item.textContent.trim()))"""
# Every code cell has an execution count ("[12]:"), none is queued or running ("[*]:").
ALL_CELLS_RAN_JS = """() => {
    const prompts = [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
    return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
}"""


def _run_all_cells(page) -> None:
    """Run > Run All Cells, as a learner would; retried while the command is not yet enabled."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    menu_item = page.locator(".lm-Menu-item[data-command='runmenu:run-all']")
    while True:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        menu_item.wait_for()
        if "lm-mod-disabled" not in (menu_item.get_attribute("class") or ""):
            menu_item.click()
            return
        page.keyboard.press("Escape")
        assert time.monotonic() < deadline, "Run All Cells stayed disabled"
        page.wait_for_timeout(500)


def open_and_run_all(page, lab: Lab, path: str, url: str | None = None) -> None:
    """Open a notebook, wait for its kernel, run every cell from the Run menu, wait for all.

    ``url`` opens the notebook some other way (it must end up on ``path``); by default
    ``lab/tree/path`` in a fresh workspace, so tabs from an earlier test are not reopened.
    """
    page.goto(url or f"{lab.url}/lab/tree/{path}?reset&token={lab.token}")
    sync_api.expect(page.locator(".jp-mod-current .lm-TabBar-tabLabel").first).to_have_text(
        Path(path).name
    )
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    page.wait_for_function(KERNEL_IDLE_JS)
    if page.locator("#jp-left-stack").is_visible():
        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.keyboard.press("Escape")  # command mode, so the shortcut reaches the shell
        page.keyboard.press("Control+b")  # hide the file browser: more notebook per screenshot
    _run_all_cells(page)
    page.wait_for_function(ALL_CELLS_RAN_JS)
    page.wait_for_function(KERNEL_IDLE_JS)
    errors = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
    assert errors.count() == 0, f"{path}: a cell failed:\n{errors.first.inner_text()}"


def test_lesson00_shows_check_feedback_and_hint(lab, page):
    """Lesson 00 runs in JupyterLab; its check() shows FAIL with the reason and a hint to open."""
    expect = sync_api.expect
    with screenshot_on_failure(page, lab, "00_welcome"):
        # What a learner does after `start --no-browser`: open the address it printed.
        printed = "/lab/tree/notebooks/00_welcome.ipynb?token="
        assert printed in lab.log_tail(20_000), "start did not print lesson 00's address"
        open_and_run_all(
            page, lab, "notebooks/00_welcome.ipynb", url=f"{lab.url}/?token={lab.token}"
        )
        feedback = page.locator(".bpc-check.bpc-fail").first
        expect(feedback).to_be_visible()
        expect(feedback).to_contain_text("✘ FAIL")  # the verdict in words, not only in red
        expect(feedback).to_contain_text("run over rise")  # the named mistake
        expect(page.locator(".bpc-check.bpc-not-attempted").first).to_contain_text("NOT ATTEMPTED")
        hint_box = feedback.locator("details.bpc-next-hint")
        hint_text = hint_box.locator("div").first
        expect(hint_text).to_be_hidden()  # collapsed until asked for
        hint_box.locator("summary").click()
        expect(hint_text).to_be_visible()
        expect(hint_text).not_to_be_empty()
        bring_into_view(page, page.locator(".jp-Cell", has=feedback))
        screenshot(page, "00_welcome_check_feedback")
        table = page.locator(".bpc-progress table").first
        bring_into_view(page, page.locator(".jp-Cell", has=table))
        expect(table).to_contain_text("exercises passed")
        screenshot(page, "00_welcome_progress")


@pytest.mark.parametrize(
    ("notebook", "slider"),
    [("07_training_dynamics", "depth"), ("08_optimizers", "learning rate")],
)
def test_explorer_redraws_when_a_slider_moves(lab, page, notebook, slider):
    """The lesson's explorer renders, and moving one slider redraws its plot."""
    expect = sync_api.expect
    with screenshot_on_failure(page, lab, notebook):
        open_and_run_all(page, lab, f"notebooks/{notebook}.ipynb")
        explorer = page.locator(".widget-interact").first
        row = explorer.locator(".widget-slider", has=page.locator(".widget-label", has_text=slider))
        readout = row.locator(".widget-readout")
        image = explorer.locator(".widget-output img").first
        expect(image).to_be_visible()
        expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        before, readout_before = image.get_attribute("src"), readout.text_content()
        bring_into_view(page, page.locator(".jp-Cell", has=explorer))
        screenshot(page, f"{notebook}_explorer_before")
        row.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(readout).not_to_have_text(readout_before)
        expect(image).not_to_have_attribute("src", before)  # a new picture, drawn by the kernel
        bring_into_view(page, page.locator(".jp-Cell", has=explorer))
        screenshot(page, f"{notebook}_explorer_after")
