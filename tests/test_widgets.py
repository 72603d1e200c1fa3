"""The explorers: the numbers behind them, and that they build and redraw headlessly."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from backprop_course import optim, widgets

pytest.importorskip("ipywidgets")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_gradient_flow_returns_one_norm_per_layer():
    """depth Linear layers give depth names and norms, and depth - 1 activations."""
    result = widgets.gradient_flow(5, "tanh", "glorot", width=16)
    assert result["names"] == [f"layer {i}" for i in range(1, 6)]
    assert len(result["grad_norms"]) == 5 and all(g > 0 for g in result["grad_norms"])
    assert list(result["activations"]) == [f"layer {i}" for i in range(1, 5)]
    assert result["activations"]["layer 1"].shape == (128, 16)
    assert np.isfinite(result["loss"])


def test_gradient_flow_sigmoid_vanishes():
    """With sigmoid at depth 20, the first layer gets far less gradient than the last."""
    norms = widgets.gradient_flow(20, "sigmoid", "glorot")["grad_norms"]
    assert norms[0] < 1e-4 * norms[-1]


def test_gradient_flow_relu_he_stays_flat():
    """relu with He init keeps all layer norms within a factor 10 of each other."""
    norms = widgets.gradient_flow(20, "relu", "he")["grad_norms"]
    assert max(norms) / min(norms) < 10


def test_gradient_flow_reports_the_signals_of_every_hidden_layer():
    """Per hidden layer: |dL/da| and the activations' std, one value each, all positive."""
    result = widgets.gradient_flow(5, "tanh", "glorot", width=16)
    assert result["hidden"] == list(result["activations"])
    for key in ("activation_grad_norms", "activation_stds"):
        assert len(result[key]) == 4 and all(v > 0 for v in result[key])
    assert result["activation_stds"][0] == pytest.approx(result["activations"]["layer 1"].std())


@pytest.mark.parametrize(("scale", "vanishes"), [(0.5, True), (2.0, False)])
def test_gradient_flow_relu_scale_moves_the_signals_but_not_dw(scale, vanishes):
    """ReLU, He x 0.5 (x 2): dL/da and forward std vanish (explode); |dW| stays level."""
    result = widgets.gradient_flow(20, "relu", "he", scale=scale)
    back, forward = result["activation_grad_norms"], result["activation_stds"]
    shrink = back[0] / back[-1], forward[-1] / forward[0]
    assert all((r < 1e-4) if vanishes else (r > 1e4) for r in shrink)
    assert max(result["grad_norms"]) / min(result["grad_norms"]) < 10


def test_gradient_flow_scale_changes_the_picture():
    """Shrinking the init scale shrinks every layer's gradient by orders of magnitude."""
    healthy = widgets.gradient_flow(15, "tanh", "glorot")["grad_norms"]
    small = widgets.gradient_flow(15, "tanh", "glorot", scale=0.3)["grad_norms"]
    assert max(small) < 1e-4 * min(healthy)


def test_gradient_flow_rejects_bad_input():
    """Unknown activations, depth < 1 and a non-positive scale raise ValueError."""
    for kwargs in ({"activation": "gelu"}, {"depth": 0}, {"scale": 0.0}):
        with pytest.raises(ValueError):
            widgets.gradient_flow(**{"depth": 3, "activation": "tanh", **kwargs})


def test_run_optimizer_path_shape_and_start():
    """A path has steps + 1 points and starts at the given start."""
    path = widgets.run_optimizer("rosenbrock", "adam", 1e-2, 50, start=(0.5, 0.5))
    assert path.shape == (51, 2)
    assert path[0] == pytest.approx([0.5, 0.5])


def test_run_optimizer_sgd_too_high_lr_diverges_on_the_bowl():
    """On the bowl (curvature 10), SGD with lr 0.3 > 2/10 blows up."""
    path = widgets.run_optimizer("bowl", "sgd", 0.3, 200)
    last = path[-1]
    assert not np.all(np.isfinite(last)) or np.abs(last).max() > 1e6


def test_run_optimizer_small_lr_converges_slowly_and_good_lr_fast():
    """With a tiny lr the flat x direction has barely moved after 200 steps; lr 0.1 arrives."""
    f = lambda p: optim.bowl(p[0], p[1])  # noqa: E731
    slow = widgets.run_optimizer("bowl", "sgd", 1e-3, 200)
    fast = widgets.run_optimizer("bowl", "sgd", 0.1, 200)
    assert abs(slow[-1, 0]) > 0.75 * abs(slow[0, 0])
    assert f(fast[-1]) < 1e-6


@pytest.mark.parametrize("optimizer", sorted(widgets.OPTIMIZERS))
def test_run_optimizer_every_optimizer_descends_on_rosenbrock(optimizer):
    """Each optimizer with a modest lr lowers the Rosenbrock value."""
    path = widgets.run_optimizer("rosenbrock", optimizer, 1e-3, 100)
    assert optim.rosenbrock(*path[-1]) < optim.rosenbrock(*path[0])


def test_run_optimizer_rejects_unknown_names():
    """Unknown surfaces and optimizers raise ValueError listing the choices."""
    with pytest.raises(ValueError, match="bowl"):
        widgets.run_optimizer("himmelblau", "sgd", 0.1, 10)
    with pytest.raises(ValueError, match="adam"):
        widgets.run_optimizer("bowl", "lbfgs", 0.1, 10)


def test_gradient_flow_explorer_builds_and_redraws():
    """Built headless it draws once; moving a control redraws with the new setting."""
    explorer = widgets.gradient_flow_explorer(depth=4, width=16)
    plotter = explorer.plotter
    assert plotter.redraws == 1
    title = plotter.figure.subfigs[0].get_suptitle()
    assert title.startswith("Gradient flow: 4 layers")
    assert plotter.figure.axes[0].get_title().startswith("backward: |dL/da|")
    assert plotter.figure.axes[1].get_title().startswith("forward: std")
    depth = next(c for c in explorer.children if getattr(c, "description", "") == "depth")
    depth.value = 6
    assert plotter.redraws == 2 and len(plotter.result["activation_grad_norms"]) == 5
    explorer.children[1].value = "relu"
    assert plotter.redraws == 3 and "relu" in plotter.figure.subfigs[0].get_suptitle()


def test_learning_rate_explorer_builds_and_redraws():
    """Built headless it draws once; changing surface and lr redraws the path."""
    explorer = widgets.learning_rate_explorer(steps=50)
    plotter = explorer.plotter
    assert plotter.redraws == 1 and plotter.result.shape == (51, 2)
    explorer.children[0].value = "bowl"
    explorer.children[2].value = 0.3
    assert plotter.redraws == 3
    title = plotter.figure.axes[0].get_title()
    assert "bowl" in title and "0.3" in title
    assert len(plotter.figure.axes) >= 2  # path and f per step


def _output_of(explorer) -> dict:
    """The cell output Jupyter stores when ``explorer`` is a cell's last expression."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(explorer)
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_explorer_output_carries_its_starting_picture_as_png():
    """Beside the widget view, the output holds a PNG of the first picture, kept after redraws."""
    import base64

    explorer = widgets.learning_rate_explorer(steps=20)
    first = explorer.plotter.first_png
    explorer.children[2].value = 0.01  # a redraw must not change the static picture
    output = _output_of(explorer)
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    png = base64.b64decode(output["data"]["image/png"])
    assert png.startswith(b"\x89PNG") and png == first and explorer.plotter.redraws == 2
    assert "explorer" in output["data"]["text/plain"]


def test_a_rendered_notebook_shows_the_explorer_picture():
    """nbconvert HTML (nbviewer) shows the static PNG of an explorer saved without widget state."""
    import nbformat
    from nbconvert import HTMLExporter

    explorer = widgets.gradient_flow_explorer(depth=3, width=8)
    cell = nbformat.v4.new_code_cell("gradient_flow_explorer()")
    cell.outputs = [nbformat.from_dict(_output_of(explorer))]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    html, _ = HTMLExporter().from_notebook_node(notebook)
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html)
