"""Numbers and behaviours that the text of lessons 07-12 states, checked against the package.

Where a lesson's sentence depends on what package code does (an explorer, a demo's
settings), the sentence is pinned here, so that a change to the package that would
make the text wrong fails a test instead of misleading a learner.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from backprop_course import nn, optim, widgets


def test_lesson07_he_keeps_the_mean_square_and_relu_std_is_083_of_it():
    """Lesson 07: He init keeps a ReLU output's E[a^2] near 1, and its std is ~0.83 of its rms."""
    x = np.random.default_rng(0).normal(size=(4096, 256))
    a = np.maximum(nn.Linear(256, 256, init="he", rng=1).forward(x), 0)
    rms = np.sqrt((a**2).mean())
    assert rms == pytest.approx(1.0, abs=0.05)
    assert a.std() / rms == pytest.approx(np.sqrt(1 - 1 / np.pi), abs=0.01)


# ---------------------------------------------------------------- lesson 08

ROSENBROCK_START = (-1.5, 2.0)  # the lesson's start on the Rosenbrock valley


@pytest.mark.parametrize("steps", [300, 500])  # test mode and full mode
def test_lesson08_adam_lr_sweep_has_an_optimum_inside(steps):
    """Lesson 08 section 7: Adam lr 1 ends lowest; lr 10 ends above lr 0.01 and leaves the plot."""
    final, furthest = {}, {}
    for lr in (0.001, 0.01, 0.1, 1.0, 10.0):
        path = widgets.run_optimizer("rosenbrock", "adam", lr, steps, start=ROSENBROCK_START)
        final[lr] = optim.rosenbrock(*path[-1])
        furthest[lr] = np.abs(path).max()
    assert min(final, key=final.get) == 1.0
    assert final[10.0] > final[0.01] > final[0.1]
    assert furthest[10.0] > 10 and furthest[0.001] < 2.5


def test_lesson08_shared_rates_on_the_saddle_and_the_bowl():
    """Lesson 08 section 6: the saddle and bowl paths with one shared rate do what the text says."""
    rates = {"sgd": 1e-3, "momentum": 1e-3, "rmsprop": 0.02, "adam": 0.05}
    saddle = {
        o: widgets.run_optimizer("saddle", o, lr, 60, start=(-1.5, 1e-3)) for o, lr in rates.items()
    }
    closest = {o: np.hypot(*p.T).min() for o, p in saddle.items()}
    assert closest["sgd"] > 1.3 and 0.3 < closest["momentum"] < 1.0
    assert closest["rmsprop"] > 1.0 and closest["adam"] > 1.0
    assert abs(saddle["rmsprop"][-1, 1]) > 2 and abs(saddle["adam"][-1, 1]) > 2
    bowl = {
        o: widgets.run_optimizer("bowl", o, lr, 100, start=(-4.5, 1.5)) for o, lr in rates.items()
    }
    assert bowl["sgd"][-1, 0] < -4
    assert bowl["adam"][-1, 0] > bowl["rmsprop"][-1, 0] > bowl["momentum"][-1, 0]


def test_lesson08_sgd_lingers_at_the_saddle_then_escapes():
    """Lesson 08: SGD lr 0.1 on the saddle reaches the saddle point (|grad| < 0.1), then |y| > 1."""
    path = widgets.run_optimizer("saddle", "sgd", 0.1, 40, start=(-1.5, 1e-3))
    grad = np.array([np.hypot(*optim.saddle_grad(*p)) for p in path])
    slowest = int(grad.argmin())
    assert grad[slowest] < 0.1 and 0 < slowest < 40
    assert abs(path[-1, 1]) > 1 and abs(path[slowest, 1]) < 0.1


def test_lesson08_rmsprop_first_step_is_ten_lr():
    """Lesson 08 section 3: RMSprop (no bias correction) first moves 10 lr per coordinate."""
    p = np.array([-4.5, 1.5])
    optim.RMSprop([p], lr=0.1).step([np.array(optim.bowl_grad(*p))])
    assert p == pytest.approx([-3.5, 0.5])


# ---------------------------------------------------------------- lesson 11


def _markdown(stem: str) -> str:
    import nbformat

    from conftest import ROOT

    notebook = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    return "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")


def test_lesson11_preset_table_matches_the_presets():
    """Lesson 11's preset table quotes each preset's model size, steps, batch and learning rate."""
    import torch

    from backprop_course.gpt import GPT, PRESETS

    text = _markdown("11_gpt_on_gpu")
    row = re.compile(
        r"\| `(\w+)` \| [^|]+ \| (\d+) layers, (\d+) heads, (\d+) wide, context (\d+)"
        r"(?: \(([\d.]+)M[^)]*\))? \| (\d+) steps"
        r"(?: of (\d+) x (\d+) characters, learning rate ([\d.e-]+))?"
    )
    rows = {m[1]: m for m in row.finditer(text)}
    assert set(rows) == {"gpu", "cpu", "test"}
    for name, m in rows.items():
        model, training = PRESETS[name]
        quoted = tuple(int(v) for v in m.group(2, 3, 4, 5, 7))
        assert quoted == (
            model.n_layer,
            model.n_head,
            model.n_embd,
            model.block_size,
            training.max_iters,
        ), name
        if m[6] is not None:
            digits = len(m[6].partition(".")[2])  # compared to the digits quoted
            with torch.device("meta"):  # the count, without allocating the weights
                count = GPT(model).num_params()
            assert float(m[6]) == round(count / 1e6, digits), name
        if m[8] is not None:
            assert (int(m[8]), int(m[9])) == (training.batch_size, model.block_size), name
            assert float(m[10]) == training.learning_rate, name


def test_lesson11_expected_loss_is_the_recorded_benchmark():
    """Lesson 11's 'all N steps (about S s) reach L' is benchmarks/gpt_cpu.json, to its digits."""
    import json

    from backprop_course.gpt import preset
    from conftest import ROOT

    text = _markdown("11_gpt_on_gpu")
    m = re.search(
        r"With all ([\d,]+) steps \(about (\d+) s on 2 quiet\s+cores\) the `cpu` preset"
        r"\s+reaches ([\d.]+) on validation",
        text,
    )
    assert m, "the sentence quoting the cpu benchmark is gone: update this test"
    bench = json.loads((ROOT / "benchmarks" / "gpt_cpu.json").read_text())
    steps = int(m[1].replace(",", ""))
    assert steps == bench["steps"] == preset("cpu")[1].max_iters
    assert float(m[3]) == round(bench["val_loss"], 2)
    assert abs(int(m[2]) - bench["seconds"]) <= 0.2 * bench["seconds"]
