"""The learner's path in a real browser: start, lesson 00's feedback, explorers that redraw
and survive a reopen, and a second start.

``backprop-course start --no-browser`` serves a fresh copy of the course with JupyterLab
on a free loopback port, behind a token, with the course's own JupyterLab settings
(widget state saved, no news pop-up): the test adds no UI setting of its own, so the
screenshots show what a learner sees. Its private user-settings folder only shortens
JupyterLab's autosave interval, so that "reopen after autosave" takes seconds. Debian's
Chromium, driven headless by Playwright (``executable_path``; no browser download),
opens the lessons, runs every cell from the Run menu, and checks what a learner would
see. Screenshots go to ``test-artifacts/browser/`` (or ``$BACKPROP_COURSE_ARTIFACTS``);
their paths are printed.

Every wait has an explicit limit fitted to a loaded 2-core machine (Playwright's
``expect`` ignores the context's default timeout: its own default is 5 s). One server
serves the whole module. Without a ``chromium`` executable or the ``playwright``
package the tests are skipped, and the reason says which is missing. JupyterLab is
shut down at the end, pass or fail.
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

SERVER_START_S = 180  # JupyterLab's first start on a busy 2-core machine
UI_TIMEOUT_MS = 120_000  # any single wait in the page: a page load, a kernel start, a redraw
RUN_ALL_TIMEOUT_MS = 300_000  # running every cell of a lesson
SAVE_TIMEOUT_S = 120  # until autosave has written the notebook
COMMAND_TIMEOUT_S = 180  # a `backprop-course start` that returns
AUTOSAVE_S = 5  # JupyterLab's autosave interval for this test (its default is 120 s)
ARTIFACTS = Path(os.environ.get("BACKPROP_COURSE_ARTIFACTS") or ROOT / "test-artifacts") / "browser"

expect = sync_api.expect
expect.set_options(timeout=UI_TIMEOUT_MS)  # and each call below passes its limit too


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
        # Loopback only, exactly this port.
        _write_json(
            config / "jupyter_server_config.json",
            {"ServerApp": {"ip": "127.0.0.1", "port_retries": 0}},
        )
        # A private, empty user-settings folder (the machine's own JupyterLab settings must
        # not decide what the test sees) that only shortens autosave; the news pop-up and
        # widget state are left to the course's own settings.
        lab_settings = base / "lab-settings"
        _write_json(
            lab_settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings",
            {"autosaveInterval": AUTOSAVE_S},
        )
        self.env = {
            **os.environ,
            "JUPYTER_TOKEN": self.token,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(base / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(lab_settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
            settings.TEST_MODE_VARIABLE: "1",
        }
        # Progress goes where a learner's does: the course folder's own store.
        self.env.pop(settings.HOME_VARIABLE, None)
        self.env.pop("JUPYTER_CONFIG_PATH", None)
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
        """Close every notebook session and shut down every kernel, so that the next test
        starts on a quiet machine and a notebook opened again gets a new session."""
        for kind in ("sessions", "kernels"):
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(self.api(kind), timeout=60) as response:
                    items = json.load(response)
                for item in items:
                    request = urllib.request.Request(
                        self.api(f"{kind}/{item['id']}"), method="DELETE"
                    )
                    urllib.request.urlopen(request, timeout=60).close()

    def run_start(self, *options: str) -> subprocess.CompletedProcess:
        """Run ``backprop-course start`` on this course folder again, as a learner would."""
        return subprocess.run(
            [*_start_command(), str(self.course), *options],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )

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
                urllib.request.urlopen(request, timeout=30).close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # stragglers, or a server that hung
        process.wait(timeout=30)


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


def new_page(browser):
    """A fresh browser context (no shared storage) and its page, with the limits above."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.set_default_navigation_timeout(UI_TIMEOUT_MS)
    return context.new_page()


@pytest.fixture
def page(browser, lab, capsys):
    page = new_page(browser)
    try:
        yield page
    finally:
        page.context.close()
        lab.stop_kernels()
        with capsys.disabled():  # shown even when pytest captures output
            for path in _SAVED:
                print(f"\n  screenshot: {path}", end="")
        _SAVED.clear()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), timeout=UI_TIMEOUT_MS)
    _SAVED.append(path)
    return path


def bring_into_view(page, locator) -> None:
    """Scroll ``locator`` to the top of the notebook and wait until it stays there.

    Cells above it may still be growing (offscreen cells are laid out lazily and images
    load), which moves it again; a few rounds settle it.
    """
    previous = None
    for _ in range(10):
        locator.evaluate(
            "element => element.scrollIntoView({block: 'start'})", timeout=UI_TIMEOUT_MS
        )
        page.wait_for_timeout(250)
        box = locator.bounding_box(timeout=UI_TIMEOUT_MS)
        top = box["y"] if box else None
        if previous is not None and top is not None and abs(top - previous) < 1:
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
# JupyterLab's news question ("Would you like to get notified about official Jupyter
# news?"), news items and update notices are toasts.
NEWS_TOAST = ".Toastify__toast"
NEWS_TEXT = re.compile(r"news|update", re.IGNORECASE)


def run_menu_command(page, menu: str, command: str) -> None:
    """Open a menu of the menu bar and click one of its items, as a learner would; retried
    while the item is not yet enabled (the kernel is still starting)."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    item = page.locator(f".lm-Menu-item[data-command='{command}']")
    while True:
        label = page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$"))
        label.click(timeout=UI_TIMEOUT_MS)
        item.wait_for(timeout=UI_TIMEOUT_MS)
        if "lm-mod-disabled" not in (item.get_attribute("class", timeout=UI_TIMEOUT_MS) or ""):
            item.click(timeout=UI_TIMEOUT_MS)
            return
        page.keyboard.press("Escape")
        assert time.monotonic() < deadline, f"{menu} > {command} stayed disabled"
        page.wait_for_timeout(500)


def open_notebook(page, lab: Lab, path: str, url: str | None = None) -> None:
    """Open a notebook and wait until its cells show and its kernel is idle.

    ``url`` opens the notebook some other way (it must end up on ``path``); by default
    ``lab/tree/path`` in a fresh workspace, so tabs from an earlier test are not reopened.
    """
    page.goto(url or f"{lab.url}/lab/tree/{path}?reset&token={lab.token}", timeout=UI_TIMEOUT_MS)
    expect(page.locator(".jp-mod-current .lm-TabBar-tabLabel").first).to_have_text(
        Path(path).name, timeout=UI_TIMEOUT_MS
    )
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=UI_TIMEOUT_MS)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=UI_TIMEOUT_MS)


def wait_until_all_cells_ran(page, path: str) -> None:
    page.wait_for_function(ALL_CELLS_RAN_JS, timeout=RUN_ALL_TIMEOUT_MS)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=UI_TIMEOUT_MS)
    errors = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
    assert errors.count() == 0, f"{path}: a cell failed:\n{errors.first.inner_text()}"


def open_and_run_all(page, lab: Lab, path: str, url: str | None = None) -> None:
    """Open a notebook, wait for its kernel, run every cell from the Run menu, wait for all."""
    open_notebook(page, lab, path, url)
    run_menu_command(page, "Run", "runmenu:run-all")
    wait_until_all_cells_ran(page, path)


def _saved_picture(notebook: Path, call: str) -> bool:
    """True when the notebook file holds the whole widget state of the explorer made by
    ``call``: its widget, every widget that one refers to, and a picture in its output."""
    try:
        saved = json.loads(notebook.read_text(encoding="utf-8"))
        state = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        (view,) = [
            output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
            for cell in saved["cells"]
            if cell["cell_type"] == "code" and call in "".join(cell["source"])
            for output in cell["outputs"]
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {})
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    seen, todo = set(), [view]
    while todo:  # the explorer's widget and everything it refers to must be saved
        model_id = todo.pop()
        if model_id in seen:
            continue
        if model_id not in state:
            return False
        seen.add(model_id)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model_id]["state"]))
    return any(
        state[m].get("model_name") == "OutputModel"
        and any("image/png" in o.get("data", {}) for o in state[m]["state"].get("outputs", []))
        for m in seen
    )


def wait_for_saved_picture(page, notebook: Path, call: str) -> None:
    """Wait until JupyterLab has saved the explorer's widget state into the notebook file.

    Autosave comes first. But a widget's own changes do not mark a notebook as changed, so
    when the explorer is the last cell that ran (lesson 07), the last autosave may predate
    its widgets settling; then the learner's File > Save Notebook saves it.
    """
    deadline = time.monotonic() + 6 * AUTOSAVE_S
    while not _saved_picture(notebook, call) and time.monotonic() < deadline:
        time.sleep(1)
    if not _saved_picture(notebook, call):
        run_menu_command(page, "File", "docmanager:save")
    deadline = time.monotonic() + SAVE_TIMEOUT_S
    while not _saved_picture(notebook, call):
        assert time.monotonic() < deadline, (
            f"{notebook.name}: no widget state with the explorer's picture was saved "
            f"within {SAVE_TIMEOUT_S} s"
        )
        time.sleep(1)


def test_lesson00_feedback_hints_and_progress_as_a_learner_sees_them(lab, page):
    """Lesson 00 as a learner sees it: feedback, no news pop-up, hint 1 after a restart."""
    with screenshot_on_failure(page, lab, "00_welcome"):
        # What a learner does after `start --no-browser`: open the address it printed.
        printed = "/lab/tree/notebooks/00_welcome.ipynb?token="
        assert printed in lab.log_tail(20_000), "start did not print lesson 00's address"
        open_and_run_all(
            page, lab, "notebooks/00_welcome.ipynb", url=f"{lab.url}/?token={lab.token}"
        )
        feedback = page.locator(".bpc-check.bpc-fail").first
        expect(feedback).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(feedback).to_contain_text("✘ FAIL", timeout=UI_TIMEOUT_MS)  # a word, not a colour
        expect(feedback).to_contain_text("run over rise", timeout=UI_TIMEOUT_MS)  # the mistake
        expect(page.locator(".bpc-check.bpc-not-attempted").first).to_contain_text(
            "NOT ATTEMPTED", timeout=UI_TIMEOUT_MS
        )
        hint_box = feedback.locator("details.bpc-next-hint")
        hint_text = hint_box.locator("div").first
        expect(hint_text).to_be_hidden(timeout=UI_TIMEOUT_MS)  # collapsed until asked for
        hint_box.locator("summary").click(timeout=UI_TIMEOUT_MS)
        expect(hint_text).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(hint_text).not_to_be_empty(timeout=UI_TIMEOUT_MS)
        # The course's own settings, not this test, keep JupyterLab's news question away.
        expect(page.locator(NEWS_TOAST, has_text=NEWS_TEXT)).to_have_count(0, timeout=UI_TIMEOUT_MS)
        bring_into_view(page, page.locator(".jp-Cell", has=feedback).first)
        screenshot(page, "00_welcome_check_feedback")
        store = lab.course / settings.STATE_FOLDER / "progress.json"
        assert "00.slope" in json.loads(store.read_text(encoding="utf-8"))["exercises"]

        # "Restart Kernel and Run All", as the lesson recommends: hints start again at 1.
        first_hint = page.locator(".bpc-hint").first
        expect(first_hint).to_contain_text("Hint 1/", timeout=UI_TIMEOUT_MS)
        first_hint.evaluate("element => element.setAttribute('data-before-restart', '')")
        run_menu_command(page, "Kernel", "runmenu:restart-and-run-all")
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=UI_TIMEOUT_MS)
        after = page.locator(".bpc-hint:not([data-before-restart])").first
        expect(after).to_contain_text("Hint 1/", timeout=RUN_ALL_TIMEOUT_MS)
        wait_until_all_cells_ran(page, "notebooks/00_welcome.ipynb")
        bring_into_view(page, page.locator(".jp-Cell", has=after).first)
        screenshot(page, "00_welcome_hint_after_restart")
        table = page.locator(".bpc-progress table").first
        bring_into_view(page, page.locator(".jp-Cell", has=table).first)
        expect(table).to_contain_text("exercises passed", timeout=UI_TIMEOUT_MS)
        screenshot(page, "00_welcome_progress")


@pytest.mark.parametrize(
    ("notebook", "slider", "call"),
    [
        ("07_training_dynamics", "depth", "gradient_flow_explorer("),
        ("08_optimizers", "learning rate", "learning_rate_explorer("),
    ],
)
def test_explorer_redraws_and_shows_its_picture_when_reopened(
    lab, page, browser, notebook, slider, call
):
    """The explorer redraws on a slider move and shows its picture when reopened."""
    path = f"notebooks/{notebook}.ipynb"
    with screenshot_on_failure(page, lab, notebook):
        open_and_run_all(page, lab, path)
        explorer = page.locator(".widget-interact").first
        row = explorer.locator(".widget-slider", has=page.locator(".widget-label", has_text=slider))
        readout = row.locator(".widget-readout")
        image = explorer.locator(".widget-output img").first
        expect(image).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(image).to_have_attribute(
            "src", re.compile(r"^data:image/png;base64,"), timeout=UI_TIMEOUT_MS
        )
        before = image.get_attribute("src", timeout=UI_TIMEOUT_MS)
        readout_before = readout.text_content(timeout=UI_TIMEOUT_MS)
        bring_into_view(page, page.locator(".jp-Cell", has=explorer))
        screenshot(page, f"{notebook}_explorer_before")
        row.locator(".noUi-handle").focus(timeout=UI_TIMEOUT_MS)
        page.keyboard.press("ArrowRight")
        expect(readout).not_to_have_text(readout_before, timeout=UI_TIMEOUT_MS)
        # A new picture, drawn by the kernel.
        expect(image).not_to_have_attribute("src", before, timeout=UI_TIMEOUT_MS)
        bring_into_view(page, page.locator(".jp-Cell", has=explorer))
        screenshot(page, f"{notebook}_explorer_after")
        wait_for_saved_picture(page, lab.course / path, call)  # the course's saveState at work
        # The same output also holds the starting picture as a plain PNG (GitHub, nbviewer).
        saved = json.loads((lab.course / path).read_text(encoding="utf-8"))
        code = [c for c in saved["cells"] if c["cell_type"] == "code"]
        outputs = [o for c in code if call in "".join(c["source"]) for o in c["outputs"]]
        assert any(
            {"image/png", "application/vnd.jupyter.widget-view+json"} <= set(o.get("data", {}))
            for o in outputs
        ), f"{path}: the explorer's output has no static PNG beside the widget"
    page.close()
    lab.stop_kernels()  # the reopened notebook gets a new kernel that knows no widget

    reopened = new_page(browser)
    try:
        with screenshot_on_failure(reopened, lab, f"{notebook}_reopened"):
            open_notebook(reopened, lab, path)
            cell = reopened.locator(
                ".jp-CodeCell", has=reopened.locator(".jp-InputArea", has_text=call)
            ).first
            bring_into_view(reopened, cell)  # scrolled to, as a learner would
            picture = cell.locator(".widget-output img").first  # the widget, from saved state
            expect(picture).to_be_visible(timeout=UI_TIMEOUT_MS)
            expect(picture).to_have_attribute(
                "src", re.compile(r"^data:image/png;base64,"), timeout=UI_TIMEOUT_MS
            )
            expect(cell).not_to_contain_text("Error displaying widget", timeout=UI_TIMEOUT_MS)
            bring_into_view(reopened, cell)
            screenshot(reopened, f"{notebook}_explorer_reopened")
    finally:
        reopened.context.close()


def test_start_again_finds_the_running_server_and_keeps_the_lessons(lab):
    """A second start prints the running server; --copy-only writes no .new.ipynb."""
    again = lab.run_start("--no-browser")
    assert again.returncode == 0, again.stdout + again.stderr
    address = f":{lab.port}/lab/tree/notebooks/00_welcome.ipynb?token={lab.token}"
    assert "already serves" in again.stdout and address in again.stdout, again.stdout
    assert len(list((lab.base / "jupyter-runtime").glob("jpserver-*.json"))) == 1
    copy = lab.run_start("--copy-only")
    assert copy.returncode == 0, copy.stdout + copy.stderr
    assert "0 copied, 0 updated" in copy.stdout and "new release" not in copy.stdout, copy.stdout
    assert not list(lab.course.rglob("*.new.ipynb"))
