"""benchmarks/gpu: the prepared GPU check and its Jupyter-free notebook runner, on the CPU.

The dry run (``run.sh --tiny``) is what proves the script before a GPU is lent:
the same steps, the test preset on the CPU. Here it runs a two-cell notebook
instead of lesson 11 (nbval runs the lesson itself), so it takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu" / "run.sh"
RUNNER = ROOT / "benchmarks" / "gpu" / "run_notebook.py"


def notebook(path, *sources: str):
    """Write a notebook of code cells ``sources`` to ``path``."""
    cells = [
        {
            "cell_type": "code",
            "metadata": {},
            "source": source,
            "outputs": [],
            "execution_count": None,
        }
        for source in sources
    ]
    cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": "# a title"})
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


PLOTTING = (
    "import matplotlib.pyplot as plt\n"
    "from backprop_course.settings import test_mode\n"
    "print('test mode', test_mode())\n"
    "plt.plot([1, 2, 3])\n"
    "plt.show()\n"
    "x = 6 * 7",
    "x",
)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_tiny_dry_run_writes_every_result(tmp_path):
    """run.sh --tiny runs the bench, the notebook and the GPU tests, and writes each result."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CHECK_NOTEBOOK": str(notebook(tmp_path / "nb.ipynb", *PLOTTING)),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "--tiny"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiny"] is True
    assert {name: step["rc"] for name, step in summary["steps"].items()} == {
        "bench": 0,
        "lesson11": 0,
        "gpu_tests": 0,
    }
    bench = json.loads((out / "bench.json").read_text())
    assert bench["preset"] == "test" and bench["device"] == "cpu"
    cells = json.loads((out / "lesson11.ipynb").read_text())["cells"]
    first, second = cells[1]["outputs"], cells[2]["outputs"]
    assert first[0]["text"] == "test mode True\n"  # --tiny runs the lesson in test mode
    assert "image/png" in first[1]["data"]
    assert second[0]["text"] == "42\n"  # a last expression is shown, as in Jupyter
    assert "skipped" in (out / "pytest_gpu.log").read_text()  # selected by -m gpu, no GPU
    assert "torch" in (out / "environment.txt").read_text()


def test_runner_stops_at_the_first_error_and_records_it(tmp_path):
    """A cell that raises ends the run with exit 1; its traceback is in the executed notebook."""
    source = notebook(tmp_path / "nb.ipynb", "y = 1", "raise ValueError('boom')", "print('no')")
    executed = tmp_path / "executed.ipynb"
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(source), "--out", str(executed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    cells = json.loads(executed.read_text())["cells"]
    assert cells[2]["outputs"][-1]["ename"] == "ValueError"
    assert cells[3]["outputs"] == [] and "no\n" not in done.stdout


def test_runner_refuses_ipython_magics(tmp_path):
    """A notebook that needs IPython (a % magic) is refused up front with exit 2."""
    source = notebook(tmp_path / "nb.ipynb", "%matplotlib inline\nx = 1")
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(source)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "magic" in done.stderr
