"""Generate ``exercises/`` from ``solutions/``: the one source of every exercise.

In a solution notebook, each answer sits between two whole lines::

    ### BEGIN SOLUTION
    ...the answer...
    ### END SOLUTION

Release replaces each region with a stub that ``check()`` reports as *not
attempted*, at the region's indentation:

- inside a function (indented): ``return ...  # YOUR CODE HERE``, so calling
  the function returns the placeholder ``...``;
- at the top of a cell: ``name = ...  # YOUR CODE HERE`` for every name the
  region assigns, so the check cell below still runs.

It also clears outputs and execution counts and marks every cell in
``metadata["backprop_course"]``: ``{"answer": true}`` for a cell the learner
fills in, ``{"locked": true}`` for the rest (the grader restores those). The
output is byte-identical from run to run.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["ReleaseError", "release", "release_notebook", "stub_source"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_COMMENT = "# YOUR CODE HERE"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (BEGIN|END) SOLUTION)[ \t]*$")


class ReleaseError(ValueError):
    """A solution notebook whose markers cannot be released."""


def _assigned_names(region: list[str], where: str) -> list[str]:
    """Top-level names a region binds (assignments, defs, classes, imports)."""
    try:
        tree = ast.parse("\n".join(region))
    except SyntaxError as error:
        raise ReleaseError(
            f"{where}: the solution region is not valid Python on its own "
            f"({error.msg}, line {error.lineno})"
        ) from error
    names: list[str] = []
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and sub.id not in names:
                    names.append(sub.id)
    if not names:
        raise ReleaseError(
            f"{where}: a top-level solution region must assign the answer "
            "to a name (e.g. `slope = 3.0`)"
        )
    return names


def stub_source(source: str, where: str = "cell") -> tuple[str, bool]:
    """Replace every solution region in ``source``; return (new source, had a region)."""
    lines = source.split("\n")
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    begin_line = 0
    found = False
    for number, line in enumerate(lines, start=1):
        match = _MARKER.match(line)
        if match and match["marker"] == BEGIN:
            if region is not None:
                raise ReleaseError(
                    f"{where}, line {number}: '{BEGIN}' inside another solution "
                    f"region (opened on line {begin_line}); regions cannot nest"
                )
            region, indent, begin_line, found = [], match["indent"], number, True
        elif match and match["marker"] == END:
            if region is None:
                raise ReleaseError(f"{where}, line {number}: '{END}' without a matching '{BEGIN}'")
            if match["indent"] != indent:
                raise ReleaseError(
                    f"{where}, line {number}: '{END}' is indented differently "
                    f"from its '{BEGIN}' on line {begin_line}"
                )
            if indent:
                out.append(f"{indent}return ...  {STUB_COMMENT}")
            else:
                names = _assigned_names(region, f"{where}, lines {begin_line}-{number}")
                out.extend(f"{name} = ...  {STUB_COMMENT}" for name in names)
            region = None
        elif region is not None:
            region.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
        elif "BEGIN SOLUTION" in line or "END SOLUTION" in line:
            raise ReleaseError(
                f"{where}, line {number}: a solution marker must be a whole line "
                f"of its own, exactly '{BEGIN}' or '{END}', got {line.strip()!r}"
            )
        else:
            out.append(line)
    if region is not None:
        raise ReleaseError(f"{where}, line {begin_line}: '{BEGIN}' is never closed by '{END}'")
    return "\n".join(out), found


def release_notebook(solution: Path) -> str:
    """The exercise notebook for ``solution``, as the exact text to write."""
    try:
        nb = nbformat.read(str(solution), as_version=4)
    except Exception as error:  # nbformat raises several kinds for a broken file
        raise ReleaseError(f"{solution}: not a readable notebook ({error})") from error
    answers = 0
    for index, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{index}")
        meta = cell.metadata
        meta.pop("backprop_course", None)
        where = f"{solution.name}, cell {index} (id {cell.id})"
        is_answer = False
        if cell.cell_type == "code":
            cell.source, is_answer = stub_source(cell.source, where)
            cell.outputs = []
            cell.execution_count = None
            meta.pop("execution", None)
        elif BEGIN in cell.source or END in cell.source:
            raise ReleaseError(f"{where}: solution markers are only allowed in code cells")
        meta["backprop_course"] = {"answer": True} if is_answer else {"locked": True}
        answers += is_answer
    if answers == 0:
        raise ReleaseError(f"{solution}: no '{BEGIN}' region, so there is nothing to release")
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb) + "\n"


@dataclass(frozen=True)
class ReleasePlan:
    """What release would write: exercise path -> text, plus stale exercise files."""

    files: dict[Path, str]
    stale: list[Path]

    def differences(self) -> list[str]:
        """Human-readable list of what differs from the files on disk."""
        changes = []
        for path, text in self.files.items():
            if not path.exists():
                changes.append(f"missing: {path}")
            elif path.read_text(encoding="utf-8") != text:
                changes.append(f"out of date: {path}")
        changes.extend(f"not generated from a solution: {p}" for p in self.stale)
        return changes


def plan(solutions_dir: Path, exercises_dir: Path) -> ReleasePlan:
    """Compute, without writing, what release would produce."""
    if not solutions_dir.is_dir():
        raise ReleaseError(f"no solutions folder at {solutions_dir}")
    sources = sorted(p for p in solutions_dir.glob("*.ipynb") if p.is_file())
    files = {exercises_dir / p.name: release_notebook(p) for p in sources}
    existing = sorted(exercises_dir.glob("*.ipynb")) if exercises_dir.is_dir() else []
    stale = [p for p in existing if p not in files]
    return ReleasePlan(files, stale)


def release(solutions_dir: Path, exercises_dir: Path, *, check: bool = False) -> list[str]:
    """Write (or, with ``check``, only compare) the exercises; return what differs."""
    result = plan(solutions_dir, exercises_dir)
    changes = result.differences()
    if not check:
        exercises_dir.mkdir(parents=True, exist_ok=True)
        for path, text in result.files.items():
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
        for path in result.stale:
            path.unlink()
    return changes
