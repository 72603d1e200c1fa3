"""Headless grading of submitted notebooks into a gradebook (``backprop-course grade``).

Python cannot be sandboxed inside one process, so judgement never happens
where learner code runs:

- each submission is graded by its own process (forked from a server that
  imported every exercise check before any submission ran);
- that process runs the notebook in a sandbox kernel (own process group,
  memory and CPU caps, private home, wall-clock limits enforced from outside,
  see :mod:`.kernel`);
- then it runs every exercise's check itself, with hidden inputs, on remote
  proxies of the learner's answers (:mod:`.remote`); only strict JSON comes
  back from the kernel (:mod:`.codec`).

:func:`grade` does a whole batch: ``--workers`` submissions at a time, a
progress bar, the gradebook (:mod:`.gradebook`) and feedback files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from backprop_course.grading.discover import Submission, find_submissions, match_lesson
from backprop_course.grading.gradebook import (
    Record,
    sort_key,
    summary_table,
    write_feedback,
    write_gradebook,
)
from backprop_course.grading.runner import DEFAULT_SECRET, Job, Options, Outcome

__all__ = ["GradeResult", "Options", "grade", "released_notebooks"]


@dataclass
class GradeResult:
    records: list[Record]
    csv_path: Path
    json_path: Path
    feedback: list[Path]
    summary: str


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


def _failed(job: Job, status: str, message: str) -> Outcome:
    """Rows for a submission whose grading process had to be stopped."""
    from backprop_course import exercises
    from backprop_course.grading.discover import Released, read_notebook

    sub = job.submission
    released = {k: Released(k, job.released_names[k], v) for k, v in job.released.items()}
    try:
        nb = read_notebook(sub.path)
    except Exception:
        nb = None
    lesson = match_lesson(sub.path.name, nb, released)
    records = [
        Record(sub.student, sub.notebook, ex.id, 0, ex.points, status, message)
        for ex in (exercises.for_lesson(lesson) if lesson else [])
    ] or [Record(sub.student, sub.notebook, "", 0, 0, status, message)]
    return Outcome(records)


def _grade_one(ctx, job: Job, scratch: Path, index: int) -> Outcome:
    from backprop_course.grading.runner import child_main

    workdir = scratch / f"job-{index}"
    workdir.mkdir()
    # The result comes back through a pipe that no kernel can reach (its descriptors are
    # not inherited), not through a file that a learner's process could overwrite.
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
        except (EOFError, OSError, ValueError):
            break
        if not process.is_alive() and not reader.poll(0):
            break
    reader.close()
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    _kill_group(workdir / "kernel.pid")  # a kernel left behind by a stopped child
    if data is None:
        if time.monotonic() >= deadline:
            return _failed(job, "timeout", "grading this notebook did not finish in time")
        return _failed(job, "error", f"the grader crashed (exit code {process.exitcode})")
    if "crash" in data:
        print(f"grader error on {job.submission.path}: {data['crash']}", file=sys.stderr)
        return _failed(job, "error", f"the grader failed on this notebook: {data['crash']}")
    return Outcome.from_json(json.dumps(data))


def grade(
    paths: list[str | Path],
    out: str | Path = "gradebook",
    *,
    timeout: float = 120.0,
    cell_timeout: float | None = None,
    workers: int = 1,
    memory_mb: int | None = None,
    secret: bytes | None = None,
    progress: bool = True,
    root: Path | None = None,
) -> GradeResult:
    """Grade every submission under ``paths`` into ``out``; see the module docstring.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` when there is
    nothing to grade (the command line turns both into usage errors).
    """
    submissions: list[Submission] = find_submissions(paths)
    if not submissions:
        raise ValueError("no notebooks (*.ipynb) found under " + ", ".join(map(str, paths)))
    texts, names = released_notebooks(root)
    workers = max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if memory_mb is None:
        memory_mb = 4096
    options = Options(
        timeout=float(timeout),
        cell_timeout=float(cell_timeout if cell_timeout else min(60.0, float(timeout))),
        memory_mb=int(memory_mb),
        secret=secret or DEFAULT_SECRET,
        threads=threads,
    )
    jobs = [Job(s, texts, names, options) for s in submissions]
    ctx = _context()
    scratch = Path(tempfile.mkdtemp(prefix="bpc-grading-"))
    outcomes: list[Outcome | None] = [None] * len(jobs)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="grading", unit="notebook", disable=not progress)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_grade_one, ctx, job, scratch, i): i for i, job in enumerate(jobs)
            }
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update(1)
        bar.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    from backprop_course import exercises

    order = {e.id: i for i, e in enumerate(exercises.all_exercises())}
    records = sorted(
        (r for o in outcomes if o is not None for r in o.records),
        key=lambda r: sort_key(r, order),
    )
    notes = {
        (job.submission.student, job.submission.notebook): o.notes
        for job, o in zip(jobs, outcomes)
        if o is not None and o.notes
    }
    out = Path(out)
    csv_path, json_path = write_gradebook(records, out)
    feedback = write_feedback(records, out, notes)
    return GradeResult(records, csv_path, json_path, feedback, summary_table(records))
