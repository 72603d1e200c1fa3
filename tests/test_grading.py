"""`backprop-course grade`: one call over a mixed folder of good, wrong, blank, broken and
hostile submissions gives each exactly the score and status it deserves.

The submissions are built here from the released lessons 00 and 01 (fast notebooks):
a learner's notebook is the exercises notebook with some answer cells filled in.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest

from backprop_course.grading import grade, read_secret
from backprop_course.grading.gradebook import META_NAME, read_csv
from conftest import ROOT, grading_sandbox

WELCOME, DERIVATIVES = "00_welcome", "01_derivatives"
# Small limits keep the hostile cases quick; generous enough for a loaded 2-core machine.
LIMITS = {"timeout": 90, "cell_timeout": 15, "memory_mb": 2500, "sandbox": grading_sandbox()}


def released(stem: str):
    return nbformat.read(ROOT / "exercises" / f"{stem}.ipynb", as_version=4)


def solution_sources(stem: str) -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / f"{stem}.ipynb", as_version=4)
    return {c.id: c.source for c in nb.cells}


def learner(stem: str, answers: dict[str, str] | None = None, *, solved: bool = True):
    """The exercises notebook as a learner hands it in: answer cells filled in.

    ``solved`` fills every answer cell with the solution; ``answers`` (cell id ->
    source) overrides single cells (locked cells too, to simulate tampering).
    """
    nb = released(stem)
    solutions = solution_sources(stem)
    for cell in nb.cells:
        if solved and cell.metadata.get("backprop_course", {}).get("answer"):
            cell.source = solutions[cell.id]
        if answers and cell.id in answers:
            cell.source = answers[cell.id]
    return nb


def add_cell_after(nb, cell_id: str, source: str):
    index = next(i for i, c in enumerate(nb.cells) if c.id == cell_id)
    cell = nbformat.v4.new_code_cell(source)
    cell.id = f"mine-{index}"
    nb.cells.insert(index + 1, cell)
    return nb


def write(path, nb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


MEAN_OK = solution_sources(WELCOME)["ex00-06"]
MEAN_WRONG = "def mean(xs):\n    return sum(xs)\n"


def build_mixed(folder, out):
    """One folder per student; returns the expected (status, points) per (student, exercise)."""
    write(folder / "good" / f"{WELCOME}.ipynb", learner(WELCOME))
    write(folder / "blank" / f"{WELCOME}.ipynb", released(WELCOME))
    # partly wrong: forward difference forgets to divide by h; the chain-rule cell raises
    partial = learner(
        DERIVATIVES,
        {
            "ex01-03": "def forward_difference(f, x, h):\n    return f(x + h) - f(x)\n",
            "ex01-09": "raise ValueError('not finished')\n\ndef df_dx(x):\n    return 0.0\n",
        },
    )
    write(folder / "partial" / f"{DERIVATIVES}.ipynb", partial)
    # hostile: replaces check, patches the package and numpy in the kernel, hides tracebacks
    hostile = learner(WELCOME, {"ex00-03": "slope = 5.0", "ex00-06": MEAN_WRONG})
    add_cell_after(
        hostile,
        "ex00-01",
        "import numpy\n"
        "import backprop_course.compare as compare\n"
        "from backprop_course import exercises\n"
        "def check(*args, **kwargs):\n"
        "    print('CORRECT: 100/100 points')\n"
        "compare.assert_close = lambda *a, **k: None\n"
        "compare.call = lambda f, *a, **k: 3.0\n"
        "numpy.allclose = lambda *a, **k: True\n"
        "exercises._REGISTRY.clear()\n"
        "get_ipython().showtraceback = lambda *a, **k: None\n",
    )
    write(folder / "hostile" / f"{WELCOME}.ipynb", hostile)
    # writes a fake gradebook where the real one goes, and into its working folder
    fake = json.dumps([{"submission": "faker", "exercise": "00.slope", "points": 100}])
    faker = learner(WELCOME, {"ex00-06": MEAN_WRONG})
    add_cell_after(
        faker,
        "ex00-01",
        "import pathlib\n"
        f"for folder in (pathlib.Path({str(out)!r}), pathlib.Path.cwd()):\n"
        "    folder.mkdir(parents=True, exist_ok=True)\n"
        f"    (folder / 'gradebook.json').write_text({fake!r})\n"
        f"    (folder / 'gradebook.csv').write_text('faker,100')\n",
    )
    write(folder / "faker" / f"{WELCOME}.ipynb", faker)
    # an endless loop that swallows the interrupt (in the mean cell)
    looping = learner(
        WELCOME,
        {
            "ex00-06": "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n"
            "    except KeyboardInterrupt:\n        pass\n" + MEAN_OK
        },
    )
    write(folder / "looper" / f"{WELCOME}.ipynb", looping)
    # kills its own kernel in the slope cell
    write(
        folder / "exiter" / f"{WELCOME}.ipynb",
        learner(WELCOME, {"ex00-03": "import os\nos._exit(1)\nslope = 3.0"}),
    )
    # allocates far more than the memory cap allows, in the mean cell
    write(
        folder / "hog" / f"{WELCOME}.ipynb",
        learner(
            WELCOME,
            {"ex00-06": "import numpy as np\nbig = np.ones(6 * 2**30, dtype=np.uint8)\n" + MEAN_OK},
        ),
    )
    # renamed: matched to lesson 00 by its contents
    write(folder / "renamer" / "my homework (final).ipynb", learner(WELCOME))
    # edited the locked check cell of 00.slope (restored; no points for that exercise)
    write(
        folder / "tamperer" / f"{WELCOME}.ipynb",
        learner(WELCOME, {"ex00-04": "print('PASS 00.slope')"}),
    )
    (folder / "garbage").mkdir()
    (folder / "garbage" / f"{WELCOME}.ipynb").write_text("this is { not JSON", encoding="utf-8")
    (folder / "jsonner").mkdir()
    (folder / "jsonner" / "data.ipynb").write_text('{"hello": [1, 2, 3]}', encoding="utf-8")
    (folder / "oldtimer").mkdir()
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}
    (folder / "oldtimer" / f"{WELCOME}.ipynb").write_text(json.dumps(v3), encoding="utf-8")
    mystery = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    write(folder / "stranger" / "99_mystery.ipynb", mystery)

    both = {"00.slope": ("correct", 1), "00.mean": ("correct", 1)}
    derivatives = {
        "01.forward_difference": ("wrong", 0),
        "01.central_difference": ("correct", 2),
        "01.chain_rule": ("error", 0),
        "01.chain_rule_three": ("correct", 2),
        "01.gradient": ("correct", 3),
        "01.best_step": ("correct", 1),
        "01.error_curve": ("correct", 2),
    }
    return {
        "good": both,
        "blank": {"00.slope": ("not_attempted", 0), "00.mean": ("not_attempted", 0)},
        "partial": derivatives,
        "hostile": {"00.slope": ("wrong", 0), "00.mean": ("wrong", 0)},
        "faker": {"00.slope": ("correct", 1), "00.mean": ("wrong", 0)},
        "looper": {"00.slope": ("correct", 1), "00.mean": ("timeout", 0)},
        "exiter": {"00.slope": ("kernel_died", 0), "00.mean": ("correct", 1)},
        "hog": {"00.slope": ("correct", 1), "00.mean": ("error", 0)},
        "renamer": both,
        "tamperer": {"00.slope": ("tampered", 0), "00.mean": ("correct", 1)},
        "garbage": {"00.slope": ("invalid_notebook", 0), "00.mean": ("invalid_notebook", 0)},
        "jsonner": {"": ("invalid_notebook", 0)},
        "oldtimer": {"00.slope": ("invalid_notebook", 0), "00.mean": ("invalid_notebook", 0)},
        "stranger": {"": ("unknown_lesson", 0)},
    }


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("gradebook")
    expected = build_mixed(folder, out)
    start = time.monotonic()
    result = grade([folder], out, workers=2, progress=False, **LIMITS)
    return result, expected, out, time.monotonic() - start


def test_mixed_folder_scores_and_statuses(mixed):
    """Every submission gets exactly the status and points it deserves, in one grade call."""
    result, expected, _, seconds = mixed
    got = {}
    for r in result.records:
        got.setdefault(r.submission, {})[r.exercise] = (r.status, r.points)
    assert got == expected
    assert seconds < 600  # within its limits, even on a loaded machine


def test_feedback_says_why(mixed):
    """Feedback names the problem and never quotes the hidden test values."""
    result, _, out, _ = mixed
    by = {(r.submission, r.exercise): r.feedback for r in result.records}
    assert "common mistake: forgot to divide by h" in by[("partial", "01.forward_difference")]
    assert "ValueError: not finished" in by[("partial", "01.chain_rule")]
    assert "MemoryError" in by[("hog", "00.mean")]
    assert "check cell was edited" in by[("tamperer", "00.slope")]
    assert "not valid JSON" in by[("garbage", "00.slope")]
    assert "nbformat 3" in by[("oldtimer", "00.mean")]
    assert "x=…, h=…" in by[("partial", "01.forward_difference")]
    for record in result.records:  # hidden inputs and expected values are decimals: none shown
        assert not re.search(r"\d\.\d", record.feedback), record
    text = (out / "feedback" / "partial.md").read_text(encoding="utf-8")
    for exercise in ("01.forward_difference", "01.error_curve"):
        assert exercise.replace("_", "\\_") in text
    assert "Total: **10 / 14**" in text


def test_hostile_files_do_not_replace_the_gradebook(mixed):
    """A fake gradebook written by a notebook is overwritten by the real one."""
    result, _, out, _ = mixed
    records = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    assert {r["submission"] for r in records} == {r.submission for r in result.records}
    assert "faker,100" not in (out / "gradebook.csv").read_text(encoding="utf-8")


def test_csv_and_json_agree(mixed):
    """The CSV (quoted by the csv module) holds exactly the JSON's records."""
    _, _, out, _ = mixed
    records = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    assert read_csv(out / "gradebook.csv") == records
    assert set(records[0]) == {
        "submission",
        "notebook",
        "exercise",
        "points",
        "max_points",
        "status",
        "feedback",
    }


def test_two_runs_give_the_same_gradebook(tmp_path):
    """With the run's secret passed back, hidden seeds repeat and records are sorted: a
    re-run writes identical files, metadata included."""
    folder = tmp_path / "in"
    # an answer that is a function: its feedback names an object, never its address
    ann = {"ex00-03": "def slope():\n    return 3.0\n", "ex00-06": MEAN_WRONG}
    write(folder / "ann" / f"{WELCOME}.ipynb", learner(WELCOME, ann))
    (folder / "bob").mkdir()
    (folder / "bob" / f"{WELCOME}.ipynb").write_text("[]", encoding="utf-8")
    runs = []
    for name in ("one", "two"):
        secret = read_secret(tmp_path / "one" / META_NAME) if runs else None
        grade([folder], tmp_path / name, workers=2, progress=False, secret=secret, **LIMITS)
        files = ("gradebook.csv", "gradebook.json", META_NAME, "feedback/ann.md")
        runs.append([(tmp_path / name / f).read_bytes() for f in files])
    assert runs[0] == runs[1]
    assert b"0x" not in runs[0][1] and b"Proxy" not in runs[0][1]
