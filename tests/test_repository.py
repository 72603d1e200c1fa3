"""The repository keeps its promises: README commands, CI, clean notebooks, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted(
    p for part in ("notebooks", "solutions", "exercises") for p in (ROOT / part).glob("*.ipynb")
)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start_here = text.split("## Start here", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", start_here, re.S)


def test_readme_has_exactly_two_commands():
    """'Start here' holds two one-line commands: open the course, run the tests."""
    commands = readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("backprop-course start")
    assert "[test]" in commands[1] and commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the README's test command verbatim, in a fresh virtual environment."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
    assert "rm -rf .venv" in ci


def test_readme_course_map_lists_every_lesson():
    """The course map has rows 00-14 and links each lesson that exists."""
    text = (ROOT / "README.md").read_text()
    for number in range(15):
        assert re.search(rf"^\| {number:02d} \|", text, re.M), number
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"(notebooks/{path.name})" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebooks_are_stored_clean(path):
    """Committed notebooks have no outputs, stable cell ids and a python3 kernel."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    ids = [cell.id for cell in nb.cells]
    assert len(set(ids)) == len(ids)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_notebooks_have_titles_and_import_by_name():
    """Each notebook opens with a heading; none uses star imports."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        assert not any("import *" in c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (ROOT / ".venv/bin/ruff").exists(),
    reason="ruff is not installed (pip install -e '.[test]')",
)
def test_ruff_is_clean():
    """`ruff check .` passes on code and notebooks."""
    ruff = shutil.which("ruff") or str(ROOT / ".venv/bin/ruff")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_imports_without_jupyter_at_module_level():
    """Importing the package pulls in no Jupyter or torch (fast import, bench-friendly)."""
    code = (
        "import sys, backprop_course, backprop_course.gradcheck, backprop_course.release;"
        "print(sorted(m for m in ('torch', 'IPython', 'jupyterlab') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- lessons don't hand out answers

_TRIVIAL = re.compile(r"^(return|pass|continue|break|else:|try:|finally:|[)\]}]+[,:]?)?$")
_KEPT_NAMES = {"np", "torch", "math", "F", "nn", "self", "cls", "print", "range", "len"}


def _solution_regions(path) -> list[tuple[str, list[str]]]:
    regions, inside = [], None
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if line.strip() == "### BEGIN SOLUTION":
                inside = []
            elif line.strip() == "### END SOLUTION":
                regions.append((f"{path.name} cell {cell.id}", inside or []))
                inside = None
            elif inside is not None:
                inside.append(line)
    return regions


def _meaningful(lines) -> list[str]:
    """Lines without comments, blank lines, docstring-only lines and lone keywords/brackets."""
    kept = []
    for line in lines:
        text = line.split("#", 1)[0].strip() if not line.strip().startswith(("'", '"')) else ""
        if text and not _TRIVIAL.match(text) and not text.startswith(("import ", "from ")):
            kept.append(text)
    return kept


def _alpha(window: list[str]) -> tuple[str, ...]:
    """The lines with whitespace removed and local names renamed in order of appearance
    (library names, attributes, keywords and builtins kept): equal for code that is the
    same up to naming."""
    import builtins
    import io
    import keyword
    import tokenize

    names: dict[str, str] = {}
    out = []
    for text in window:
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            out.append(re.sub(r"\s+", "", text))
            continue
        parts, previous = [], ""
        for token in tokens:
            if token.type == tokenize.NAME and not (
                keyword.iskeyword(token.string)
                or hasattr(builtins, token.string)
                or token.string in _KEPT_NAMES
                or previous == "."
            ):
                parts.append(names.setdefault(token.string, f"v{len(names)}"))
            elif token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
                parts.append(token.string)
            previous = token.string
        out.append("".join(parts))
    return tuple(out)


def _windows(lines: list[str], size: int = 4):
    for start in range(len(lines) - size + 1):
        yield start, _alpha(lines[start : start + size])


def test_lessons_do_not_contain_exercise_solutions():
    """No lesson code cell shares more than 3 consecutive non-trivial lines (same up to names
    and whitespace) with any solution region."""
    lesson_windows: dict[tuple[str, ...], str] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                for start, key in _windows(_meaningful(cell.source.splitlines())):
                    lesson_windows.setdefault(key, f"{path.name} cell {cell.id} (line {start})")
    found = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for where, region in _solution_regions(path):
            lines = _meaningful(region)
            for start, key in _windows(lines):
                if key in lesson_windows:
                    found.append(
                        f"{where}: lines {lines[start : start + 4]} also in {lesson_windows[key]}"
                    )
                    break
    assert not found, "\n".join(found)


def test_lessons_do_not_print_package_source():
    """No lesson prints the package's source code (it solves exercises)."""
    pattern = re.compile(r"getsource\(|getsourcelines\(|%psource|%pycat|\?\?")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not pattern.search(cell.source), f"{path.name} cell {cell.id}"
