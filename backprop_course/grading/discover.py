"""From paths to submissions: finding notebooks, reading them, matching lessons, restoring.

- :func:`find_submissions`: a notebook, a folder of notebooks (each one a
  submission named after its file), or a folder of per-student folders (the
  student is the folder's name; every notebook below it is theirs).
  Checkpoints (``.ipynb_checkpoints``), hidden files and the ``NN_topic.new.ipynb``
  copies that ``start`` writes are skipped; a symbolic link, or anything that
  resolves outside the folder given, is a submission that is refused with the reason.
- :func:`read_notebook`: a strict reader (a regular file, never followed
  through a link, at most ``MAX_NOTEBOOK_BYTES`` read); anything that is not
  an nbformat 4 notebook is an :class:`InvalidNotebook` with the reason.
- :func:`match_lesson`: by file name (``NN_*.ipynb``), else by contents (the
  ``check("NN.id", ...)`` calls and the released cell ids it holds).
- :func:`restore`: rebuild the notebook to run from the released exercises
  notebook: every locked cell comes from the release (an edited locked code
  cell is reported), every answer cell and every cell the learner added comes
  from the submission.
"""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

__all__ = [
    "InvalidNotebook",
    "Prepared",
    "Released",
    "Submission",
    "find_submissions",
    "match_lesson",
    "read_notebook",
    "restore",
]

MAX_NOTEBOOK_BYTES = 32 * 2**20
CHECK_CALL = re.compile(r"""^check\(\s*["'](?P<id>\d\d\.\w+)["']\s*,\s*(?P<answer>\w+)\s*\)\s*$""")
NAME = re.compile(r"^(?P<lesson>\d\d)_")
_SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".git"}


class InvalidNotebook(ValueError):
    """A file that cannot be graded as a notebook; the message says why."""


@dataclass(frozen=True)
class Submission:
    """One notebook to grade: who submitted it, where it is, how the gradebook names it.

    ``refused`` says why it is not graded at all (a link, outside the folder given).
    """

    student: str
    path: Path
    notebook: str
    refused: str = ""


def _skipped(name: str) -> bool:
    return name in _SKIP_DIRS or name.startswith(".") or name.endswith(".new.ipynb")


def _refusal(path: Path, root: Path) -> str:
    """Why ``path`` (found under ``root``) may not be graded; empty when it may."""
    current = path
    while True:
        if current.is_symlink():
            return "it is a symbolic link (submit the notebook itself)"
        if current == root or current.parent == current:
            break
        current = current.parent
    try:
        path.resolve(strict=True).relative_to(root.resolve())
    except (OSError, ValueError, RuntimeError):
        return "it resolves outside the submissions folder"
    return ""


def _notebooks_below(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*.ipynb")):
        parts = path.relative_to(folder).parts
        if any(_skipped(p) for p in parts):
            continue
        if path.is_file() or path.is_symlink():
            found.append(path)
    return found


def find_submissions(paths: Iterable[str | Path]) -> list[Submission]:
    """Every submission under ``paths``; ``FileNotFoundError`` for a path that does not exist."""
    out: list[Submission] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if not path.is_dir() or (path.is_symlink() and path.suffix == ".ipynb"):
            out.append(Submission(path.stem, path, path.name, _refusal(path, path.parent)))
            continue
        for entry in sorted(path.iterdir()):
            if _skipped(entry.name):
                continue
            if entry.suffix == ".ipynb" and (entry.is_symlink() or entry.is_file()):
                out.append(Submission(entry.stem, entry, entry.name, _refusal(entry, path)))
            elif entry.is_symlink() and entry.is_dir():
                reason = "its folder is a symbolic link (submit the notebooks themselves)"
                out.append(Submission(entry.name, entry, entry.name, reason))
            elif entry.is_dir():
                for notebook in _notebooks_below(entry):
                    name = notebook.relative_to(path).as_posix()
                    out.append(Submission(entry.name, notebook, name, _refusal(notebook, path)))
    return out


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, or :class:`InvalidNotebook` saying what is wrong with it."""
    return parse_notebook(read_text(path))


def read_text(path: Path) -> str:
    """The text of the notebook file at ``path``, read safely (see the module docstring)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if os.path.islink(path):
            raise InvalidNotebook("it is a symbolic link (submit the notebook itself)") from None
        raise InvalidNotebook(f"the file cannot be read ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidNotebook("it is not a regular file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(2**20, MAX_NOTEBOOK_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_NOTEBOOK_BYTES:
                raise InvalidNotebook(
                    f"the file is too large to be a notebook (over {MAX_NOTEBOOK_BYTES} bytes)"
                )
    except OSError as error:
        raise InvalidNotebook(f"the file cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidNotebook("the file is not UTF-8 text, so not a notebook") from None


def parse_notebook(text: str) -> nbformat.NotebookNode:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidNotebook(f"the file is not valid JSON ({error})") from None
    if not isinstance(data, dict) or ("cells" not in data and "worksheets" not in data):
        raise InvalidNotebook("the file is JSON but not a Jupyter notebook (it has no cells)")
    version = data.get("nbformat")
    if version != 4:
        raise InvalidNotebook(
            f"nbformat {version!r} is not supported: open it in a current Jupyter and save it "
            "again (nbformat 4)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
    except Exception as error:  # nbformat raises several kinds for a malformed notebook
        message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise InvalidNotebook(f"the notebook does not follow nbformat 4 ({message})") from None
    return nb


def check_calls(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(exercise id, answer name) of every check cell, in order."""
    calls = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            match = CHECK_CALL.match(cell.source.strip())
            if match:
                calls.append((match["id"], match["answer"]))
    return calls


@dataclass
class Released:
    """A released exercises notebook, parsed once before any submission runs."""

    lesson: str
    name: str
    text: str
    nb: nbformat.NotebookNode = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nb = nbformat.reads(self.text, as_version=4)

    @property
    def exercise_ids(self) -> list[str]:
        return [i for i, _ in check_calls(self.nb)]

    @property
    def cell_ids(self) -> set[str]:
        return {c.get("id") for c in self.nb.cells if c.get("id")}


def match_lesson(
    path_name: str, nb: nbformat.NotebookNode | None, released: dict[str, Released]
) -> str | None:
    """The lesson a notebook belongs to: by name, else by contents; ``None`` when unknown."""
    match = NAME.match(Path(path_name).name)
    if match and match["lesson"] in released:
        return match["lesson"]
    if nb is None:
        return None
    ids = {i for i, _ in check_calls(nb)}
    cells = {c.get("id") for c in nb.cells if c.get("id")}
    scores = {}
    for lesson, rel in released.items():
        scores[lesson] = (len(ids & set(rel.exercise_ids)), len(cells & rel.cell_ids))
    best = max(scores.values(), default=(0, 0))
    if best == (0, 0):
        return None
    winners = [lesson for lesson, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else None


def _is_locked(cell) -> bool:
    return bool(cell.get("metadata", {}).get("backprop_course", {}).get("locked"))


def _is_answer(cell) -> bool:
    return bool(cell.get("metadata", {}).get("backprop_course", {}).get("answer"))


@dataclass
class Prepared:
    """The notebook to run, and what restoring it found."""

    nb: nbformat.NotebookNode
    section: list[str | None]  # per cell: the exercise whose part of the notebook it is in
    answer_cells: dict[str, list[int]]  # exercise id -> indices of its answer and added cells
    edited_checks: set[str]  # exercises whose check cell was edited
    notes: list[str]


def _same_source(a: str, b: str) -> bool:
    def norm(s):
        return "\n".join(line.rstrip() for line in s.strip().splitlines())

    return norm(a) == norm(b)


def restore(submission: nbformat.NotebookNode, release: Released) -> Prepared:
    """The release's cells, with the learner's answer cells and added cells in place."""
    released = release.nb
    sub_cells = list(submission.cells)
    by_id = {c.get("id"): c for c in sub_cells if c.get("id")}
    released_code = [c for c in released.cells if c.cell_type == "code"]
    present = sum(1 for c in released_code if c.get("id") in by_id)
    notes: list[str] = []
    edited_checks: set[str] = set()
    check_of = {}
    for cell in released.cells:
        match = CHECK_CALL.match(cell.source.strip()) if cell.cell_type == "code" else None
        if match:
            check_of[cell.id] = match["id"]

    cells = []
    kinds = []  # "locked", "answer" or "added", per output cell
    if present * 2 < max(len(released_code), 1):
        notes.append(
            "the notebook's cell ids do not match the release, so its cells were run as "
            "submitted: locked cells could not be restored"
        )
        for cell in sub_cells:
            cells.append(cell)
            match = CHECK_CALL.match(cell.source.strip()) if cell.cell_type == "code" else None
            kinds.append("check:" + match["id"] if match else "answer")
    else:
        released_ids = {c.id for c in released.cells}
        # the learner's own cells go after the released cell they followed
        after: dict[str | None, list] = {}
        anchor = None
        for cell in sub_cells:
            cid = cell.get("id")
            if cid in released_ids:
                anchor = cid
            else:
                after.setdefault(anchor, []).append(cell)
        for cell in after.get(None, []):
            cells.append(cell)
            kinds.append("added")
        for rel in released.cells:
            mine = by_id.get(rel.id)
            if _is_answer(rel):
                chosen = mine if mine is not None and mine.cell_type == "code" else rel
                cells.append(chosen)
                kinds.append("answer")
            else:
                cells.append(rel)
                kinds.append("check:" + check_of[rel.id] if rel.id in check_of else "locked")
                if rel.cell_type == "code" and _is_locked(rel):
                    if mine is None:
                        notes.append(f"locked cell {rel.id} was deleted; it was restored")
                    elif mine.cell_type != "code" or not _same_source(mine.source, rel.source):
                        if rel.id in check_of:
                            edited_checks.add(check_of[rel.id])
                        else:
                            notes.append(f"locked cell {rel.id} was edited; it was restored")
            for cell in after.get(rel.id, []):
                cells.append(cell)
                kinds.append("added")

    nb = nbformat.v4.new_notebook()
    nb.metadata = dict(released.metadata)
    out_cells = []
    for index, cell in enumerate(cells):
        copy = nbformat.from_dict(json.loads(json.dumps(cell)))
        copy["id"] = f"graded-{index}"
        if copy.cell_type == "code":
            copy.outputs = []
            copy.execution_count = None
        out_cells.append(copy)
    nb.cells = out_cells

    # Sections: every cell up to and including an exercise's check cell is that exercise's.
    section: list[str | None] = [None] * len(cells)
    current = None
    for index in range(len(cells) - 1, -1, -1):
        if kinds[index].startswith("check:"):
            current = kinds[index].removeprefix("check:")
        section[index] = current
    # ... except after the last check cell: those belong to no exercise.
    answer_cells: dict[str, list[int]] = {}
    for index, kind in enumerate(kinds):
        if kind in ("answer", "added") and section[index] is not None:
            answer_cells.setdefault(section[index], []).append(index)
    return Prepared(nb, section, answer_cells, edited_checks, notes)
