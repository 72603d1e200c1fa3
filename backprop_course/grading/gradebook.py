"""Gradebook records, their CSV and JSON files, feedback files and the summary table.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so an interrupted run leaves either the old file or the new
one, never half of one. Records are sorted, so the same grading gives
byte-identical files. ``gradebook.json`` is a list of the records; what the
run was (its secret, the sandbox, warnings) goes beside it in
``gradebook.meta.json``. A CSV cell that a spreadsheet would read as a
formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is written with a leading ``'``, as spreadsheets expect;
:func:`read_csv` takes it off again. :func:`locked` keeps a second grader out
of the same folder.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "FIELDS",
    "META_NAME",
    "STATUSES",
    "GradebookLocked",
    "Record",
    "read_csv",
    "summary_table",
    "write_feedback",
    "write_gradebook",
]

FIELDS = ("submission", "notebook", "exercise", "points", "max_points", "status", "feedback")
STATUSES = (
    "correct",
    "wrong",
    "not_attempted",
    "error",
    "timeout",
    "kernel_died",
    "invalid_notebook",
    "unknown_lesson",
    "tampered",
    "duplicate",
    "kernel_start_failed",
)
META_NAME = "gradebook.meta.json"
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")


@dataclass(frozen=True)
class Record:
    """One row: how one submission did on one exercise."""

    submission: str
    notebook: str
    exercise: str
    points: int | float
    max_points: int | float
    status: str
    feedback: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def sort_key(record: Record, order: dict[str, int]) -> tuple:
    return (record.submission, record.notebook, order.get(record.exercise, 10**6), record.exercise)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _cell(value):
    """A CSV cell no spreadsheet runs as a formula (a leading ``'`` where one could)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _uncell(value: str) -> str:
    if len(value) > 1 and value[0] == "'" and value[1] in "".join(_FORMULA):
        return value[1:]
    return value


def write_gradebook(
    records: list[Record], out: Path, meta: dict | None = None
) -> tuple[Path, Path]:
    """Write ``gradebook.csv`` and ``gradebook.json`` (and, given ``meta``,
    ``gradebook.meta.json``) into ``out``; return the first two paths."""
    rows = [
        {**asdict(r), "points": _number(r.points), "max_points": _number(r.max_points)}
        for r in records
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    if meta is not None:
        text = json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        _atomic_write(out / META_NAME, text)
    csv_path, json_path = out / "gradebook.csv", out / "gradebook.json"
    _atomic_write(json_path, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    _atomic_write(csv_path, buffer.getvalue())
    return csv_path, json_path


def read_csv(path: Path) -> list[dict]:
    """The CSV gradebook as dicts with numbers as numbers (for comparing with the JSON)."""
    with open(path, encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for key in ("points", "max_points"):
            row[key] = _number(float(row[key]))
        for key in FIELDS:
            if isinstance(row[key], str):
                row[key] = _uncell(row[key])
    return rows


class GradebookLocked(RuntimeError):
    """Another grader is writing into the same folder."""


@contextlib.contextmanager
def locked(out: Path):
    """Hold ``out/.gradebook.lock`` (an advisory lock) while a batch is graded into ``out``.

    A second grader on the same folder gets :class:`GradebookLocked` at once, instead of
    overwriting the first one's files. The lock goes when the process does, even killed.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".gradebook.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise GradebookLocked(
                    f"another `backprop-course grade` is writing into {out} (it holds "
                    f"{out / '.gradebook.lock'}); wait for it to finish or choose another --out"
                ) from None
            raise
        yield
    finally:
        os.close(fd)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LABEL = {
    "correct": "correct",
    "wrong": "wrong",
    "not_attempted": "not attempted",
    "error": "error",
    "timeout": "timed out",
    "kernel_died": "kernel died",
    "invalid_notebook": "invalid notebook",
    "unknown_lesson": "unknown lesson",
    "tampered": "tampered",
    "duplicate": "duplicate (not graded)",
    "kernel_start_failed": "kernel did not start",
}


def _md(text: str) -> str:
    """Learner-controlled text, made inert in Markdown."""
    text = text.replace("\r", " ").replace("\n", " ")
    return re.sub(r"([\\`*_{}\[\]<>()#+!|])", r"\\\1", text)


def write_feedback(
    records: list[Record], out: Path, notes: dict[tuple[str, str], list[str]] | None = None
) -> list[Path]:
    """One Markdown file per submission in ``out/feedback/``: every exercise, result, why."""
    notes = notes or {}
    by_student: dict[str, list[Record]] = {}
    for record in records:
        by_student.setdefault(record.submission, []).append(record)
    written, used = [], set()
    for student in sorted(by_student):
        name = _UNSAFE.sub("_", student).strip("._") or "submission"
        candidate, n = name, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate.lower())
        mine = by_student[student]
        total = sum(r.points for r in mine)
        possible = sum(r.max_points for r in mine)
        lines = [
            f"# Feedback for {_md(student)}",
            "",
            f"Total: **{_number(total):g} / {_number(possible):g}** points.",
            "",
        ]
        notebooks: dict[str, list[Record]] = {}
        for record in mine:
            notebooks.setdefault(record.notebook, []).append(record)
        for notebook, items in notebooks.items():
            got = sum(r.points for r in items)
            top = sum(r.max_points for r in items)
            lines += [f"## {_md(notebook)}: {_number(got):g} / {_number(top):g}", ""]
            for note in notes.get((student, notebook), []):
                lines.append(f"> Note: {_md(note)}")
            if notes.get((student, notebook)):
                lines.append("")
            lines += ["| exercise | result | points | feedback |", "| --- | --- | --- | --- |"]
            for r in items:
                lines.append(
                    f"| {_md(r.exercise) or '-'} | {_LABEL[r.status]} | "
                    f"{_number(r.points):g} / {_number(r.max_points):g} | {_md(r.feedback)} |"
                )
            lines.append("")
        path = out / "feedback" / f"{candidate}.md"
        _atomic_write(path, "\n".join(lines))
        written.append(path)
    return written


def summary_table(records: Iterable[Record]) -> str:
    """Points and statuses per submission, as a plain-text table."""
    per: dict[str, list[Record]] = {}
    for record in records:
        per.setdefault(record.submission, []).append(record)
    header = ("submission", "notebooks", "points", "statuses")
    rows = []
    for student in sorted(per):
        items = per[student]
        counts = Counter(r.status for r in items)
        rows.append(
            (
                student,
                str(len({r.notebook for r in items})),
                f"{_number(sum(r.points for r in items)):g}/"
                f"{_number(sum(r.max_points for r in items)):g}",
                ", ".join(f"{k} {counts[k]}" for k in STATUSES if counts[k]),
            )
        )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)
