"""release: exercises generated from solutions, deterministically."""

from __future__ import annotations

import shutil

import nbformat
import pytest

from backprop_course.cli import main
from backprop_course.release import ReleaseError, release, release_notebook, stub_source
from conftest import ROOT


def test_function_region_becomes_return_stub():
    """Inside a function the region becomes `return ...` at its indentation."""
    source = "def f(x):\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION"
    stub, found = stub_source(source)
    assert found and stub == "def f(x):\n    return ...  # YOUR CODE HERE"
    namespace = {}
    exec(stub, namespace)
    assert namespace["f"](3) is Ellipsis


def test_top_level_region_assigns_placeholders():
    """At the top of a cell every assigned name becomes `name = ...`."""
    source = "a = 1\n### BEGIN SOLUTION\nb, c = 2, 3\nd: int = 4\n### END SOLUTION\nprint(b)"
    stub, _ = stub_source(source)
    assert stub == (
        "a = 1\nb = ...  # YOUR CODE HERE\nc = ...  # YOUR CODE HERE\n"
        "d = ...  # YOUR CODE HERE\nprint(b)"
    )


def test_source_without_regions_is_unchanged():
    """A cell with no markers is left as it is."""
    assert stub_source("x = 1\n") == ("x = 1\n", False)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without a matching"),
        (
            "### BEGIN SOLUTION\n### BEGIN SOLUTION\nx=1\n### END SOLUTION\n### END SOLUTION",
            "cannot nest",
        ),
        ("x = 1  ### BEGIN SOLUTION", "whole line"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    return 1\n### END SOLUTION",
            "indented differently",
        ),
        ("### BEGIN SOLUTION\nprint(1)\n### END SOLUTION", "must assign the answer"),
        ("### BEGIN SOLUTION\nx = (\n### END SOLUTION", "not valid Python"),
    ],
)
def test_bad_markers_are_clear_errors(source, message):
    """Unbalanced, nested or inline markers raise an error naming the place."""
    with pytest.raises(ReleaseError, match=message) as info:
        stub_source(source, where="demo.ipynb, cell 3")
    assert "demo.ipynb, cell 3" in str(info.value)


def make_solution(path, *sources, markdown=""):
    nb = nbformat.v4.new_notebook()
    if markdown:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown, id="md"))
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source, id=f"c{i}")
        cell.outputs = [nbformat.v4.new_output("stream", text="old output")]
        cell.execution_count = 5
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def test_notebook_release_clears_outputs_and_marks_cells(tmp_path):
    """Outputs go, answer cells are marked answer, the rest locked."""
    path = make_solution(
        tmp_path / "01_x.ipynb",
        "import math",
        "### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
        markdown="# Title",
    )
    nb = nbformat.reads(release_notebook(path), as_version=4)
    assert [c.metadata["backprop_course"] for c in nb.cells] == [
        {"locked": True},
        {"locked": True},
        {"answer": True},
    ]
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells[1:])
    assert nb.cells[2].source == "x = ...  # YOUR CODE HERE"


def test_marker_in_markdown_names_the_cell(tmp_path):
    """Markers belong in code cells; the error names notebook and cell."""
    path = make_solution(
        tmp_path / "01_x.ipynb", "x = 1", markdown="### BEGIN SOLUTION\nno\n### END SOLUTION"
    )
    with pytest.raises(ReleaseError, match=r"01_x.ipynb, cell 0 \(id md\)"):
        release_notebook(path)


def test_solution_without_regions_is_an_error(tmp_path):
    """A solution notebook must contain at least one answer."""
    with pytest.raises(ReleaseError, match="nothing to release"):
        release_notebook(make_solution(tmp_path / "01_x.ipynb", "x = 1"))


def test_broken_notebook_is_an_error(tmp_path):
    """A file that is not a notebook is named in the error."""
    path = tmp_path / "01_x.ipynb"
    path.write_text("{ not json")
    with pytest.raises(ReleaseError, match="not a readable notebook"):
        release_notebook(path)


def copy_course(tmp_path):
    for part in ("solutions", "exercises"):
        shutil.copytree(ROOT / part, tmp_path / part)
    return tmp_path


def test_release_is_byte_identical(tmp_path):
    """Two releases write exactly the same bytes, equal to the committed exercises."""
    course = copy_course(tmp_path)
    shutil.rmtree(course / "exercises")
    release(course / "solutions", course / "exercises")
    first = {p.name: p.read_bytes() for p in (course / "exercises").glob("*.ipynb")}
    release(course / "solutions", course / "exercises")
    second = {p.name: p.read_bytes() for p in (course / "exercises").glob("*.ipynb")}
    committed = {p.name: p.read_bytes() for p in (ROOT / "exercises").glob("*.ipynb")}
    assert first == second == committed


def test_release_check_holds_on_the_repository(capsys):
    """`release --check` exits 0: exercises/ is what solutions/ generates."""
    assert main(["release", "--check", "--root", str(ROOT)]) == 0


def test_release_check_fails_after_a_solution_edit(tmp_path, capsys):
    """Editing a solution makes `release --check` exit 1 and name the file; release fixes it."""
    course = copy_course(tmp_path)
    solution = course / "solutions" / "01_derivatives.ipynb"
    nb = nbformat.read(solution, as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, solution)
    assert main(["release", "--check", "--root", str(course)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["release", "--root", str(course)]) == 0
    assert main(["release", "--check", "--root", str(course)]) == 0


def test_release_removes_stale_exercises(tmp_path, capsys):
    """An exercise without a solution is reported by --check and removed by release."""
    course = copy_course(tmp_path)
    (course / "exercises" / "99_orphan.ipynb").write_text("{}")
    assert main(["release", "--check", "--root", str(course)]) == 1
    main(["release", "--root", str(course)])
    assert not (course / "exercises" / "99_orphan.ipynb").exists()


def test_release_error_is_a_clean_cli_message(tmp_path, capsys):
    """A bad marker makes the CLI exit 2 with the file and cell, no traceback."""
    (tmp_path / "solutions").mkdir()
    make_solution(tmp_path / "solutions" / "01_x.ipynb", "### BEGIN SOLUTION\nx = 1")
    assert main(["release", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "01_x.ipynb, cell 0" in err and "Traceback" not in err
