"""A batch: grade a folder of submissions into a gradebook (see :mod:`.grading`)."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from backprop_course.grading import __all__  # noqa: F401 (the public names, one list)
from backprop_course.grading.discover import (
    InvalidNotebook,
    Released,
    Submission,
    find_submissions,
    match_lesson,
    parse_notebook,
    read_text,
)
from backprop_course.grading.gradebook import (
    FIELDS,
    STATUSES,
    GradebookLocked,  # noqa: F401 (public, see __all__)
    Record,
    locked,
    sort_key,
    summary_table,
    write_feedback,
    write_gradebook,
)
from backprop_course.grading.runner import Job, Options, Outcome
from backprop_course.grading.sandbox import INSTALL_HINT, Cgroup, probe

NO_SANDBOX_WARNING = (
    "graded WITHOUT a sandbox (--no-sandbox): every notebook ran as the grader's own user, "
    "able to read and change its files; use this only for notebooks you trust"
)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot build a sandbox here; the message says what to do."""


@dataclass
class GradeResult:
    records: list[Record]
    csv_path: Path
    json_path: Path
    feedback: list[Path]
    summary: str
    meta: dict


def released_notebooks(root: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """lesson -> text and lesson -> file name of each released exercises notebook."""
    from backprop_course import exercises
    from backprop_course.course import course_root

    folder = (root or course_root()) / "exercises"
    texts, names = {}, {}
    graded = set(exercises.lessons())
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        lesson = path.name[:2]
        if lesson in graded:
            texts[lesson] = path.read_text(encoding="utf-8")
            names[lesson] = path.name
    return texts, names


def _kill_group(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["backprop_course.grading.runner"])
    return ctx


def _lesson_rows(job: Job, status: str, message: str, *, counted: bool = True) -> Outcome:
    """One row per exercise of the job's lesson (or one row when it has none)."""
    from backprop_course import exercises

    sub = job.submission
    items = exercises.for_lesson(job.lesson) if job.lesson else []
    records = [
        Record(sub.student, sub.notebook, ex.id, 0, ex.points if counted else 0, status, message)
        for ex in items
    ] or [Record(sub.student, sub.notebook, "", 0, 0, status, message)]
    return Outcome(records)


def _failed(job: Job, status: str, message: str) -> Outcome:
    """Rows for a submission whose grading process had to be stopped."""
    return _lesson_rows(job, status, message)


def _validate(job: Job, data: object) -> Outcome:
    """The outcome a grading process sent, if it is exactly one for this job.

    Every row must be this submission's, name an exercise of its lesson once (or be the
    one row of a notebook with no lesson), with points between 0 and the exercise's
    points. Anything else raises ``ValueError`` saying what did not fit.
    """
    from backprop_course import exercises

    if not isinstance(data, dict) or set(data) != {"records", "notes"}:
        raise ValueError("not a grading result")
    rows, notes = data["records"], data["notes"]
    if not isinstance(rows, list) or not isinstance(notes, list):
        raise ValueError("not a grading result")
    if not all(isinstance(n, str) for n in notes) or len(notes) > 200:
        raise ValueError("bad notes")
    sub = job.submission
    items = {ex.id: ex for ex in exercises.for_lesson(job.lesson)} if job.lesson else {}
    records, seen = [], set()
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(FIELDS):
            raise ValueError("a row has the wrong fields")
        if row["submission"] != sub.student or row["notebook"] != sub.notebook:
            raise ValueError("a row names another submission")
        exercise, status = row["exercise"], row["status"]
        if not isinstance(row["feedback"], str) or status not in STATUSES:
            raise ValueError("a row has a bad status or feedback")
        points, top = row["points"], row["max_points"]
        for value in (points, top):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("points are not numbers")
            if not math.isfinite(value):
                raise ValueError("points are not finite")
        if exercise in seen:
            raise ValueError(f"exercise {exercise!r} appears twice")
        seen.add(exercise)
        if exercise == "":
            if points != 0 or top != 0:
                raise ValueError("a row without an exercise has points")
        else:
            ex = items.get(exercise)
            if ex is None:
                raise ValueError(f"{exercise!r} is not an exercise of this notebook's lesson")
            if top != ex.points or not 0 <= points <= top:
                raise ValueError(f"points out of range for {exercise}")
            if status != "correct" and points != 0:
                raise ValueError(f"points without a correct answer for {exercise}")
        records.append(Record(**row))
    if not records:
        raise ValueError("no rows")
    if "" in seen and len(records) > 1:
        raise ValueError("rows of several lessons")
    if "" not in seen and seen != set(items):
        raise ValueError("not every exercise of the lesson has its row")
    return Outcome(records, notes)


def _grade_one(ctx, job: Job, scratch: Path, index: int) -> Outcome:
    from backprop_course.grading.runner import child_main

    workdir = scratch / f"job-{index}"
    workdir.mkdir()
    # The result comes back through a pipe between two grader processes: no sandbox can
    # see it (own PID namespace, another uid, no /proc of ours).
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=child_main, args=(job, str(workdir), writer))
    process.start()
    writer.close()
    # The child enforces every limit itself; this is the backstop if it cannot.
    deadline = time.monotonic() + 3 * job.options.timeout + 120
    data = None
    while data is None and time.monotonic() < deadline:
        try:
            if reader.poll(1.0):
                data = json.loads(reader.recv_bytes(64 * 2**20).decode("utf-8"))
                break
        except (EOFError, OSError, ValueError, RecursionError):
            break
        if not process.is_alive() and not reader.poll(0):
            break
    reader.close()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    _kill_group(workdir / "kernel.pid")  # a kernel left behind by a stopped child
    _remove_cgroups(workdir)
    if data is None:
        if time.monotonic() >= deadline:
            return _failed(job, "timeout", "grading this notebook did not finish in time")
        return _failed(job, "error", f"the grader crashed (exit code {process.exitcode})")
    if isinstance(data, dict) and "crash" in data:
        print(f"grader error on {job.submission.path}: {data['crash']}", file=sys.stderr)
        return _failed(job, "error", f"the grader failed on this notebook: {data['crash']}")
    try:
        return _validate(job, data)
    except (ValueError, TypeError) as error:
        print(f"rejected the result for {job.submission.path}: {error}", file=sys.stderr)
        return _failed(job, "error", f"the result of grading this notebook was rejected: {error}")


def _remove_cgroups(workdir: Path) -> None:
    for listing in workdir.glob("kernel-*/cgroups"):
        try:
            folders = [Path(line) for line in listing.read_text().splitlines() if line]
        except OSError:
            continue
        Cgroup(folders, "v2" if len(folders) == 1 else "v1").remove()


def read_secret(path: str | Path) -> bytes:
    """The secret in ``path``: a ``gradebook.meta.json``, or hex digits, or raw bytes."""
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            return bytes.fromhex(json.loads(text)["secret"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is JSON without a hex 'secret'") from None
    try:
        return bytes.fromhex(text)
    except ValueError:
        if not raw:
            raise ValueError(f"{path} is empty") from None
        return raw


def _plan(submissions: list[Submission], released: dict[str, Released], names: dict[str, str]):
    """Read every notebook once; (job fields, or refusal rows) per submission, in order.

    One notebook per lesson per learner is graded: the one named like the release
    (``NN_topic.ipynb``), else the one with the shortest path, else the first by name.
    """
    plans = []
    for sub in submissions:
        text, invalid, lesson = None, "", None
        if sub.refused:
            invalid = sub.refused
        else:
            try:
                text = read_text(sub.path)
                nb = parse_notebook(text)
            except InvalidNotebook as error:
                invalid, nb = str(error), None
            lesson = match_lesson(sub.path.name, nb, released)
        if invalid:
            lesson = match_lesson(sub.path.name, None, released)
        plans.append({"sub": sub, "text": text, "invalid": invalid, "lesson": lesson})
    graded: dict[tuple[str, str], dict] = {}
    for plan in plans:
        if plan["invalid"] or plan["lesson"] is None:
            continue
        key = (plan["sub"].student, plan["lesson"])
        rank = (
            plan["sub"].path.name != names.get(plan["lesson"]),
            len(plan["sub"].notebook),
            plan["sub"].notebook,
        )
        best = graded.get(key)
        if best is None or rank < best["rank"]:
            graded[key] = {"rank": rank, "plan": plan}
    for plan in plans:
        if plan["invalid"] or plan["lesson"] is None:
            continue
        chosen = graded[(plan["sub"].student, plan["lesson"])]["plan"]
        if chosen is not plan:
            plan["duplicate"] = chosen["sub"].notebook
    return plans


def _log(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr)


def grade(
    paths: list[str | Path],
    out: str | Path = "gradebook",
    *,
    timeout: float = 120.0,
    cell_timeout: float | None = None,
    workers: int = 1,
    memory_mb: int | None = None,
    secret: bytes | None = None,
    sandbox: bool = True,
    progress: bool = True,
    root: Path | None = None,
) -> GradeResult:
    """Grade every submission under ``paths`` into ``out``; see the module docstring.

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` when there is
    nothing to grade, :class:`SandboxUnavailable` when ``sandbox`` is on and bubblewrap
    cannot be used, and :class:`GradebookLocked` when another grader writes into ``out``
    (the command line turns them all into usage errors).
    """
    submissions: list[Submission] = find_submissions(paths)
    if not submissions:
        raise ValueError("no notebooks (*.ipynb) found under " + ", ".join(map(str, paths)))
    info = probe()
    if sandbox and not info.available:
        raise SandboxUnavailable(INSTALL_HINT.format(reason=info.reason))
    if not sandbox:
        print(f"WARNING: {NO_SANDBOX_WARNING}", file=sys.stderr)
    else:
        _log(f"sandbox: {info.describe()}", progress)
    out = Path(out)
    with locked(out):
        return _grade_locked(
            submissions,
            out,
            timeout=timeout,
            cell_timeout=cell_timeout,
            workers=workers,
            memory_mb=memory_mb,
            secret=secret,
            info=info if sandbox else None,
            progress=progress,
            root=root,
        )


def _grade_locked(
    submissions, out, *, timeout, cell_timeout, workers, memory_mb, secret, info, progress, root
) -> GradeResult:
    from backprop_course import __version__, exercises

    texts, names = released_notebooks(root)
    released = {k: Released(k, names[k], v) for k, v in texts.items()}
    workers = max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if memory_mb is None:
        memory_mb = 4096
    secret = secret or secrets.token_bytes(32)
    options = Options(
        timeout=float(timeout),
        cell_timeout=float(cell_timeout if cell_timeout else min(60.0, float(timeout))),
        memory_mb=int(memory_mb),
        secret=secret,
        threads=threads,
        sandbox=info,
    )
    outcomes: list[Outcome | None] = []
    jobs: list[tuple[int, Job]] = []
    all_jobs: list[Job] = []
    for plan in _plan(submissions, released, names):
        job = Job(plan["sub"], texts, names, options, plan["text"], plan["lesson"])
        all_jobs.append(job)
        if plan["invalid"]:
            message = f"invalid notebook: {plan['invalid']}"
            outcomes.append(_lesson_rows(job, "invalid_notebook", message))
        elif plan.get("duplicate"):
            message = (
                f"not graded: one notebook per lesson is graded, and this learner's "
                f"{plan['duplicate']} was (this copy counts for nothing)"
            )
            outcomes.append(_lesson_rows(job, "duplicate", message, counted=False))
        else:
            outcomes.append(None)
            jobs.append((len(outcomes) - 1, job))
    ctx = _context()
    scratch = Path(tempfile.mkdtemp(prefix="bpc-grading-"))
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="grading", unit="notebook", disable=not progress)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_grade_one, ctx, job, scratch, i): i for i, job in jobs}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcomes[index] = future.result()
                except Exception as error:  # a bug of ours costs one notebook, not the batch
                    print(f"grader error: {error!r}", file=sys.stderr)
                    message = f"the grader failed on this notebook: {type(error).__name__}"
                    outcomes[index] = _failed(all_jobs[index], "error", message)
                bar.update(1)
        bar.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    order = {e.id: i for i, e in enumerate(exercises.all_exercises())}
    records = sorted(
        (r for o in outcomes if o is not None for r in o.records),
        key=lambda r: sort_key(r, order),
    )
    notes = {
        (job.submission.student, job.submission.notebook): o.notes
        for job, o in zip(all_jobs, outcomes)
        if o is not None and o.notes
    }
    meta = {
        "backprop_course": __version__,
        "secret": secret.hex(),
        "sandbox": info.describe() if info is not None else "off",
        "warnings": [] if info is not None else [NO_SANDBOX_WARNING],
        "limits": {
            "timeout": options.timeout,
            "cell_timeout": options.cell_timeout,
            "memory_mb": options.memory_mb,
        },
        "reproduce": "grade the same folder with --secret-file gradebook.meta.json",
    }
    csv_path, json_path = write_gradebook(records, out, meta)
    feedback = write_feedback(records, out, notes)
    return GradeResult(records, csv_path, json_path, feedback, summary_table(records), meta)
