"""Run a notebook's code cells top to bottom without Jupyter; write it back with outputs.

The GPU machine has torch, numpy and matplotlib but no Jupyter (no nbformat,
nbclient or ipykernel), so this runner does a kernel's job with the standard
library: it reads the ``.ipynb`` JSON, executes each code cell in one shared
namespace in order, and records what a notebook would show:

- printed text (also echoed live to this process's stdout/stderr, so a log
  shows progress as it happens);
- the value of a cell's last expression, as its ``repr``;
- every matplotlib figure, as a PNG, when the cell calls ``plt.show()`` or
  leaves the figure open at its end (matplotlib's Agg backend, no display);
- the traceback of an error, which stops the run (later cells are not run).

Usage::

    python benchmarks/gpu/run_notebook.py NOTEBOOK [--out EXECUTED.ipynb]

Exit status 0 when every code cell ran, 1 when one raised, 2 when the notebook
cannot be run here (it is not a notebook, a cell uses IPython magics, or
matplotlib is missing: carry its wheel, see README.md beside this file).
What it does not do: widgets, rich ``display()`` outputs and
``%``/``!`` magics need IPython and are refused up front.
"""

from __future__ import annotations

import argparse
import ast
import base64
import io
import json
import os
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


class _Tee(io.TextIOBase):
    """Writes to the real stream and keeps a copy for the cell's output."""

    def __init__(self, stream, name: str, outputs: list):
        self.stream, self.name, self.outputs = stream, name, outputs

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.stream.write(text)
        if self.outputs and self.outputs[-1].get("name") == self.name:
            self.outputs[-1]["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": self.name, "text": text})
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _figures_to(outputs: list) -> None:
    """Append every open matplotlib figure to ``outputs`` as a PNG, then close them."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=60, bbox_inches="tight")
        outputs.append(
            {
                "output_type": "display_data",
                "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii")},
                "metadata": {},
            }
        )
    plt.close("all")


def _run_cell(source: str, name: str, namespace: dict, outputs: list) -> None:
    """Execute ``source``; the value of a last bare expression is shown like Jupyter's."""
    tree = ast.parse(source, filename=name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, name, "eval"), namespace)
        if value is not None:
            print(repr(value))


def _refusal(cells: list[dict]) -> str | None:
    """Why this notebook cannot run here, or None."""
    for number, cell in enumerate(cells):
        for line in "".join(cell["source"]).splitlines():
            if line.lstrip().startswith(("%", "!")):
                return f"code cell {number} uses an IPython magic ({line.strip()!r})"
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed: carry its wheel (benchmarks/gpu/README.md)"
    matplotlib.use("Agg")
    return None


def run(notebook: Path, out: Path | None) -> int:
    """Run every code cell of ``notebook``; write the executed copy to ``out``. Exit status."""
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        cells = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"{notebook}: not a readable notebook ({error})", file=sys.stderr)
        return 2
    reason = _refusal(cells)
    if reason is not None:
        print(f"{notebook}: cannot run without Jupyter: {reason}", file=sys.stderr)
        return 2
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__main__"}
    status, started = 0, time.perf_counter()
    for number, cell in enumerate(cells, start=1):
        outputs: list = []
        cell["outputs"], cell["execution_count"] = outputs, number
        plt.show = lambda *args, _outputs=outputs, **kwargs: _figures_to(_outputs)
        print(f"--- cell {number}/{len(cells)}", flush=True)
        cell_start = time.perf_counter()
        try:
            with (
                redirect_stdout(_Tee(sys.stdout, "stdout", outputs)),
                redirect_stderr(_Tee(sys.stderr, "stderr", outputs)),
            ):
                _run_cell("".join(cell["source"]), f"<cell {number}>", namespace, outputs)
        except BaseException as error:  # the notebook's error, whatever it is, ends the run
            text = traceback.format_exc()
            print(text, file=sys.stderr)
            outputs.append(
                {
                    "output_type": "error",
                    "ename": type(error).__name__,
                    "evalue": str(error),
                    "traceback": text.splitlines(),
                }
            )
            status = 1
        _figures_to(outputs)  # figures left open at the end of a cell are shown, as inline
        cell.setdefault("metadata", {})["seconds"] = round(time.perf_counter() - cell_start, 2)
        if status:
            print(f"cell {number} raised: the run stops here", file=sys.stderr)
            break
    total = time.perf_counter() - started
    print(f"--- {number if status else len(cells)} of {len(cells)} code cells ran, {total:.1f} s")
    if out is not None:
        out.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, help="where to write the notebook with outputs")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    return run(args.notebook, args.out)


if __name__ == "__main__":
    sys.exit(main())
