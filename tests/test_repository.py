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
    """The course map has rows 00-12 and links each lesson that exists."""
    text = (ROOT / "README.md").read_text()
    for number in range(13):
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
