"""Grade one submitted notebook, end to end, in a process of its own.

1. Read it (strictly) and find its lesson; restore its locked cells from the release.
2. Run it headlessly with nbclient in a sandbox kernel (:mod:`.kernel`): one
   cell at a time, each with a wall-clock limit, the whole run with another. A
   cell that errs does not stop the run; a cell that hangs or kills the kernel
   is skipped, the run starts again in a fresh kernel, and the exercise that
   cell belongs to gets ``timeout`` or ``kernel_died``.
3. Judge every exercise of the lesson here, in the grader: the exercise's own
   check runs in this process with a hidden seed, on a remote proxy of the
   learner's answer (:mod:`.remote`). Nothing the notebook printed, displayed,
   wrote or returned as a "result" counts. A request that hangs or kills the
   kernel costs only its exercise: the notebook is run again in a fresh kernel
   and grading goes on with the next one.

Feedback never shows hidden test values: decimal numbers (and whole numbers of
three or more digits) in a check's message are replaced by ``…``; the named
mistake, and where it shows, remain.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from backprop_course import exercises
from backprop_course.grading.discover import (
    InvalidNotebook,
    Prepared,
    Released,
    Submission,
    match_lesson,
    read_notebook,
    restore,
)
from backprop_course.grading.gradebook import Record
from backprop_course.grading.kernel import Kernel, kernel_environment
from backprop_course.grading.remote import (
    CannotSend,
    KernelDied,
    ProtocolError,
    RemoteTimeout,
    Session,
)
from backprop_course.outcome import Status, judge

__all__ = ["DEFAULT_SECRET", "Job", "Options", "Outcome", "grade_submission", "hidden_seed"]

DEFAULT_SECRET = b"backprop-course grader: hidden test inputs"
MAX_OUTPUT_BYTES = 8 * 2**20
MAX_FEEDBACK = 600

# Every lesson's checks are imported before any learner code runs anywhere.
_ALL = list(exercises.all_exercises())


@dataclass(frozen=True)
class Options:
    """Limits and secrets for grading one notebook."""

    timeout: float = 120.0  # running the notebook; checking it gets as long again
    cell_timeout: float = 60.0  # one cell, or one request to the kernel
    memory_mb: int = 4096  # address-space cap of a kernel (0: none)
    secret: bytes = DEFAULT_SECRET
    threads: int = 1

    @property
    def cpu_seconds(self) -> int:
        return int(4 * self.timeout + 60)


@dataclass
class Job:
    submission: Submission
    released: dict[str, str]  # lesson -> the released notebook's text
    released_names: dict[str, str]
    options: Options


@dataclass
class Outcome:
    records: list[Record]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"records": [asdict(r) for r in self.records], "notes": self.notes})

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        return cls([Record(**r) for r in data["records"]], list(data["notes"]))


def hidden_seed(secret: bytes, exercise_id: str) -> int:
    """The seed of an exercise's hidden test inputs: an HMAC, so it cannot be guessed."""
    digest = hmac.new(secret, exercise_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "little")


_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d{3,})"
    r"(?![\w])"
)


def redact(message: str) -> str:
    """A check's message without the hidden inputs and expected values it quotes."""
    text = _NUMBER.sub("…", message)
    return text if len(text) <= MAX_FEEDBACK else text[: MAX_FEEDBACK - 1] + "…"


class _Client(NotebookClient):
    """nbclient, with the outputs it keeps capped (a cell printing forever cannot fill memory)."""

    _kept = 0

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(str(content.get("text", ""))) + sum(
            len(str(v)) for v in content.get("data", {}).values()
        )
        self._kept += size
        if self._kept > MAX_OUTPUT_BYTES and msg.get("msg_type") != "error":
            return None
        return super().output(outs, msg, display_id, cell_index)


def _first_error(nb: nbformat.NotebookNode, indices: list[int]) -> str | None:
    for index in indices:
        for output in nb.cells[index].get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:300]
    return None


class _Grader:
    def __init__(self, job: Job, workdir: Path):
        self.job = job
        self.options = job.options
        self.workdir = workdir
        self.sub = job.submission
        self.records: list[Record] = []
        self.notes: list[str] = []
        self.kernels = 0

    def record(self, exercise: str, points, max_points, status: str, feedback: str) -> None:
        self.records.append(
            Record(
                self.sub.student,
                self.sub.notebook,
                exercise,
                points,
                max_points,
                status,
                feedback,
            )
        )

    # ------------------------------------------------------------ running the notebook

    def _start_kernel(self) -> Kernel:
        self.kernels += 1
        folder = self.workdir / f"kernel-{self.kernels}"
        (folder / "cwd").mkdir(parents=True)
        return Kernel(
            folder, memory_mb=self.options.memory_mb, cpu_seconds=self.options.cpu_seconds
        )

    def _execute(self, prepared: Prepared, skipped: dict[int, str], deadline: float):
        """One run of the notebook in a fresh kernel: ("ok", kernel, nb) or (status, index)."""
        kernel = self._start_kernel()
        nb = nbformat.from_dict(json.loads(json.dumps(prepared.nb)))
        for index, status in skipped.items():
            nb.cells[index].source = f"# skipped by the grader: this cell caused a {status}"
        cwd = kernel.workdir / "cwd"
        env = kernel_environment(kernel.workdir, self.options.threads)
        client = _Client(
            nb,
            km=kernel.manager,
            timeout=int(self.options.cell_timeout),
            allow_errors=True,
            iopub_timeout=2,
            record_timing=False,
            store_widget_state=False,
            startup_timeout=60,
            resources={"metadata": {"path": str(cwd)}},
        )
        try:
            with client.setup_kernel(env=env, cwd=str(cwd)):
                pid = kernel.pid
                if pid is not None:
                    (self.workdir / "kernel.pid").write_text(str(pid))
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code" or index in skipped:
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining < 1:
                        kernel.kill()
                        return ("deadline", index)
                    client.timeout = max(1, int(min(self.options.cell_timeout, remaining)))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        kernel.kill()
                        late = remaining <= self.options.cell_timeout
                        return ("deadline" if late else "timeout", index)
                    except DeadKernelError:
                        kernel.kill()
                        return ("kernel_died", index)
                    except Exception:
                        alive = kernel.alive()
                        kernel.kill()
                        return ("error" if alive else "kernel_died", index)
                with contextlib.suppress(Exception):
                    client.kc.stop_channels()
        except Exception as error:  # the kernel did not start
            kernel.kill()
            self.notes.append(f"the kernel did not start: {type(error).__name__}: {error}"[:300])
            return ("start_failed", None)
        return ("ok", kernel, nb)

    def run_notebook(self, prepared, skipped, failures, deadline):
        """Run until the notebook gets through (skipping cells that hang or crash)."""
        while True:
            if time.monotonic() >= deadline - 1:
                return None
            result = self._execute(prepared, skipped, deadline)
            if result[0] == "ok":
                return result[1], result[2]
            status, index = result
            if status in ("deadline", "start_failed"):
                return None
            skipped[index] = status
            exercise = prepared.section[index]
            limit = f"{self.options.cell_timeout:g} s"
            message = {
                "timeout": f"a cell of this exercise ran longer than {limit}; it was stopped",
                "kernel_died": "a cell of this exercise crashed the Python kernel (os._exit, a "
                "segfault, or too much memory); it was skipped",
                "error": "a cell of this exercise could not be run; it was skipped",
            }[status]
            if exercise is None:
                self.notes.append(f"cell {index} was skipped: {message.split(';')[0]}")
            elif exercise not in failures:
                failures[exercise] = ("kernel_died" if status == "error" else status, message)

    # ------------------------------------------------------------ checking the answers

    def check(self, ex, session: Session, executed, prepared: Prepared) -> tuple[str, str]:
        session.reset()
        cell_error = _first_error(executed, prepared.answer_cells.get(ex.id, []))
        found, answer = session.lookup(ex.answer)
        if not found:
            message = f"`{ex.answer}` is not defined after running the notebook"
            if cell_error:
                message += f": its cell raised {cell_error}"
            return "error", redact(message)
        rng = np.random.default_rng(hidden_seed(self.options.secret, ex.id))
        status, message = judge(ex, answer, rng)  # GradingInterrupt passes through
        if status == Status.CORRECT:
            return status.value, "correct on the hidden test inputs"
        if status == Status.NOT_ATTEMPTED:
            message = f"not attempted: `{ex.answer}` is still the `...` placeholder"
        if cell_error:
            status = Status.ERROR
            message = f"your answer cell raised {cell_error}; then: {message}"
        return status.value, redact(message)

    def grade(self) -> Outcome:
        sub, job = self.sub, self.job
        released = {
            lesson: Released(lesson, job.released_names[lesson], text)
            for lesson, text in job.released.items()
        }
        try:
            nb = read_notebook(sub.path)
        except InvalidNotebook as error:
            lesson = match_lesson(sub.path.name, None, released)
            message = f"invalid notebook: {error}"
            if lesson is None:
                self.record("", 0, 0, "invalid_notebook", message)
            for ex in exercises.for_lesson(lesson) if lesson else []:
                self.record(ex.id, 0, ex.points, "invalid_notebook", message)
            return Outcome(self.records, self.notes)
        lesson = match_lesson(sub.path.name, nb, released)
        if lesson is None:
            self.record(
                "",
                0,
                0,
                "unknown_lesson",
                "the notebook matches no lesson (by its file name NN_*.ipynb or by its "
                "check cells)",
            )
            return Outcome(self.records, self.notes)
        items = exercises.for_lesson(lesson)
        prepared = restore(nb, released[lesson])
        self.notes.extend(prepared.notes)
        failures: dict[str, tuple[str, str]] = {}
        skipped: dict[int, str] = {}
        timeout = self.options.timeout
        up = self.run_notebook(prepared, skipped, failures, time.monotonic() + timeout)
        check_deadline = time.monotonic() + timeout
        kernel = session = executed = None
        if up is not None:
            kernel, executed = up
            session = self._session(kernel, check_deadline)
        ran_out = up is None
        try:
            for ex in items:
                if ex.id in failures:
                    status, message = failures[ex.id]
                    self.record(ex.id, 0, ex.points, status, message)
                    continue
                if ex.id in prepared.edited_checks:
                    self.record(
                        ex.id,
                        0,
                        ex.points,
                        "tampered",
                        "the exercise's check cell was edited: it was restored from the release, "
                        "and by the course's policy an exercise whose check cell was changed "
                        "earns no points",
                    )
                    continue
                if kernel is None and not ran_out:
                    up = self.run_notebook(prepared, skipped, failures, check_deadline)
                    if up is None:
                        ran_out = True
                    else:
                        kernel, executed = up
                        session = self._session(kernel, check_deadline)
                if ran_out or kernel is None:
                    self.record(
                        ex.id,
                        0,
                        ex.points,
                        "timeout",
                        f"not graded: the notebook did not finish within the time limit "
                        f"({timeout:g} s)",
                    )
                    continue
                try:
                    status, message = self.check(ex, session, executed, prepared)
                except RemoteTimeout:
                    status = "timeout"
                    message = (
                        f"checking this answer took longer than {self.options.cell_timeout:g} s "
                        f"(an endless loop?)"
                    )
                except KernelDied:
                    status = "kernel_died"
                    message = "the Python kernel died while this answer was being checked"
                except ProtocolError as error:
                    status, message = "error", f"the answer could not be checked: {error}"
                except CannotSend as error:
                    status = "error"
                    message = (
                        "this exercise cannot be checked by the grader (a bug in the "
                        f"course): {error}"
                    )
                if status in ("timeout", "kernel_died") or (
                    status == "error" and message.startswith("the answer could not")
                ):
                    kernel.kill()
                    kernel = None
                points = ex.points if status == "correct" else 0
                self.record(ex.id, points, ex.points, status, message)
        finally:
            if kernel is not None:
                kernel.kill()
        return Outcome(self.records, self.notes)

    def _session(self, kernel: Kernel, deadline: float) -> Session:
        return Session(
            kernel.run,
            kernel.workdir / "rpc",
            request_timeout=self.options.cell_timeout,
            deadline=deadline,
        )


def grade_submission(job: Job, workdir: Path | None = None) -> Outcome:
    """Grade one submission; never raises for anything the submission does."""
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="bpc-grade-")) if own else Path(workdir)
    grader = _Grader(job, folder)
    try:
        return grader.grade()
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def child_main(job: Job, workdir: str, connection) -> None:
    """Entry point of the per-submission process (see :func:`backprop_course.grading.grade`).

    The outcome goes back as JSON bytes through ``connection`` (a pipe end).
    """
    try:
        outcome = grade_submission(job, Path(workdir))
        text = outcome.to_json()
    except BaseException as error:  # report, never hang the batch
        text = json.dumps(
            {
                "crash": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-4000:],
            }
        )
    connection.send_bytes(text.encode("utf-8"))
    connection.close()
