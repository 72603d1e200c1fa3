"""The training diagnostics: what each plot draws, and how it refuses bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from backprop_course import plotting


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == "grad-norm"]


def _bowl(x, y):
    return 0.5 * (x**2 + 10 * y**2)


def test_gradient_flow_draws_one_bar_per_layer():
    """A single run is one bar per layer, with the layer names as ticks and labelled axes."""
    ax = plotting.plot_gradient_flow(["a", "b", "c"], [1e-3, 1e-2, 1.0])
    assert [b.get_height() for b in _bars(ax)] == pytest.approx([1e-3, 1e-2, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "Gradient flow"
    assert ax.get_xlabel() and ax.get_ylabel()
    assert any("1.0e-03" in t.get_text() for t in ax.texts)  # first / last ratio


def test_gradient_flow_equal_norms_do_not_fill_the_axis():
    """On a log axis, nearly equal norms keep at least two decades of room."""
    ax = plotting.plot_gradient_flow(["a", "b"], [0.2, 0.25])
    low, high = ax.get_ylim()
    assert high / low >= 100


def test_gradient_flow_several_runs_draws_lines_and_legend():
    """A dict of runs draws one line per run and a legend naming them."""
    runs = {"tanh": [0.1, 0.2, 0.3], "relu": [1.0, 1.0, 1.0]}
    ax = plotting.plot_gradient_flow(["l1", "l2", "l3"], runs, logy=False, title="Runs")
    assert len(ax.get_lines()) == 2
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("tanh") for t in texts) and any(t.startswith("relu") for t in texts)
    assert ax.get_yscale() == "linear" and ax.get_title() == "Runs"


@pytest.mark.parametrize(
    ("names", "norms", "message"),
    [
        (["a", "b"], [1.0], "one norm per layer"),
        (["a"], {}, "empty dict"),
        ([], [], "at least one layer"),
        (["a", "b"], [1.0, -1.0], "negative"),
        (["a", "b"], [1.0, float("nan")], "not finite"),
        (["a", "b"], {"run": [1.0, 2.0, 3.0]}, "run"),
    ],
)
def test_gradient_flow_rejects_bad_input(names, norms, message):
    """Mismatched lengths, empty runs, negative or non-finite norms raise a clear ValueError."""
    with pytest.raises(ValueError, match=message):
        plotting.plot_gradient_flow(names, norms)


def test_histograms_one_titled_panel_per_layer():
    """Each layer gets one labelled panel titled with name, mean/std and saturation."""
    rng = np.random.default_rng(0)
    arrays = {f"layer {i}": np.tanh(rng.normal(0, i, 500)) for i in range(1, 6)}
    fig = plotting.plot_histograms(arrays, title="tanh", xlabel="activation")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 5
    for ax, name in zip(axes, arrays):
        title = ax.get_title()
        assert title.startswith(name) and "μ=" in title and "σ=" in title and "|v|>0.97" in title
        assert ax.get_xlabel() == "activation"
        assert ax.patches  # the histogram
    assert fig._suptitle.get_text() == "tanh"


def test_histograms_saturation_kinds():
    """relu counts zeros, sigmoid counts values near 0 or 1, unbounded values show none."""
    relu = np.array([0.0, 0.0, 1.0, 2.0])
    sig = np.array([0.001, 0.5, 0.5, 0.999])
    fig = plotting.plot_histograms({"r": relu, "s": sig, "g": np.array([-5.0, 5.0])})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert "zero: 50%" in titles[0]
    assert "saturated: 50%" in titles[1]
    assert titles[2].count("\n") == 1  # name and stats only


def test_histograms_draws_into_given_figure():
    """Passing fig= clears and reuses that figure."""
    fig = plt.figure()
    fig.add_subplot().plot([1, 2])
    out = plotting.plot_histograms({"a": np.arange(10.0)}, fig=fig)
    assert out is fig and len(fig.axes) == 1 and not fig.axes[0].lines


@pytest.mark.parametrize(
    ("arrays", "message"),
    [({}, "non-empty dict"), ({"a": np.array([])}, "empty"), ({"a": [1.0, np.inf]}, "inf")],
)
def test_histograms_rejects_bad_input(arrays, message):
    """Empty dicts, empty arrays and non-finite values raise a clear ValueError."""
    with pytest.raises(ValueError, match=message):
        plotting.plot_histograms(arrays)


def test_update_ratio_draws_lines_and_guide():
    """One line per parameter plus the dashed 1e-3 guide at -3, with a legend."""
    history = {"W1": [-3.1, -3.0, -2.9], "W2": [-4.0, -4.2, -np.inf]}  # log10(0)
    ax = plotting.plot_update_ratio(history)
    lines = ax.get_lines()
    assert len(lines) == 3
    assert list(lines[-1].get_ydata()) == [-3, -3]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["W1", "W2", "guide: 1e-3"]
    assert ax.get_title() == "Update-to-data ratio" and ax.get_xlabel() == "step"
    assert "log10" in ax.get_ylabel()


@pytest.mark.parametrize("history", [{}, {"W": []}, [1, 2]])
def test_update_ratio_rejects_bad_input(history):
    """An empty history, an empty series or a non-dict raises a ValueError."""
    with pytest.raises(ValueError):
        plotting.plot_update_ratio(history)


def test_live_loss_plot_records_and_finishes_headless():
    """Outside a notebook update only records (aligned with nan); finish draws the figure."""
    live = plotting.LiveLossPlot(every=5, title="Demo")
    for step in range(12):
        live.update(step, 1.0 / (step + 1), val=0.5 if step % 4 == 0 else None)
    assert live.redraws == 0 and live.figure is None
    assert len(live.history["step"]) == len(live.history["loss"]) == len(live.history["val"]) == 12
    assert np.isnan(live.history["val"][1]) and live.history["val"][4] == 0.5
    live.update(12, 0.01, acc=0.9)  # a series that appears late is padded in front
    assert len(live.history["acc"]) == 13 and np.isnan(live.history["acc"][0])
    live.finish()
    ax = live.figure.axes[0]
    assert len(ax.get_lines()) == 3 and ax.get_legend() is not None
    assert ax.get_title().startswith("Demo") and ax.get_xlabel() == "step"


def test_live_loss_plot_names_its_x_axis_and_main_series():
    """xlabel names the x axis and the title's last point; label names the loss in the legend."""
    live = plotting.LiveLossPlot(title="Demo", xlabel="epoch", label="training loss")
    for epoch in range(3):
        live.update(epoch, 1.0 / (epoch + 1), val_loss=2.0)
    live.finish()
    ax = live.figure.axes[0]
    assert ax.get_xlabel() == "epoch" and "(epoch 2: loss" in ax.get_title()
    assert "step" not in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["training loss", "val_loss"] and "loss" in live.history


def test_live_loss_plot_rejects_bad_every():
    """every must be a positive integer."""
    with pytest.raises(ValueError, match="every"):
        plotting.LiveLossPlot(every=0)


def test_live_loss_plot_updates_one_display_in_a_notebook(monkeypatch):
    """In a kernel it displays once, then updates the same handle every `every` calls."""
    import IPython.display

    from backprop_course.plotting import training

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(training, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = plotting.LiveLossPlot(every=5, min_interval=0.0)
    for step in range(10):
        live.update(step, 1.0)
    live.finish()
    assert [kind for kind, _ in shown] == ["display", "update", "update", "update"]
    assert live.redraws == 4


def test_optimizer_paths_draws_contours_paths_and_markers():
    """Contours, one line per path plus start and end markers, legend with steps and f."""
    paths = {"sgd": np.array([[-4.0, 1.0], [-3.0, 0.0], [-2.0, 0.1]]), "adam": np.zeros((1, 2))}
    ax = plotting.plot_optimizer_paths(_bowl, paths, (-5, 5), (-2, 2))
    assert ax.collections  # the contours
    assert len(ax.get_lines()) == 3 * len(paths)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("sgd: 2 steps") and labels[1].startswith("adam: 0 steps")
    assert labels[-2:] == ["start", "end"]
    assert ax.get_title() == "Optimizer paths" and ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    assert ax.get_xlim() == (-5, 5)


def test_optimizer_paths_marks_divergence_and_allows_negative_surfaces():
    """A path that leaves for infinity is labelled diverged; f < 0 works with log levels."""
    path = np.array([[1.0, 1.0], [10.0, -10.0], [1e6, 1e6], [np.inf, np.inf]])
    ax = plotting.plot_optimizer_paths(lambda x, y: x**2 - y**2, {"gd": path}, (-2, 2), (-2, 2))
    assert "diverged" in ax.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize(
    ("f", "paths", "xlim", "message"),
    [
        (_bowl, {}, (-1, 1), "non-empty"),
        (_bowl, {"p": np.zeros((3, 3))}, (-1, 1), "shape"),
        (_bowl, {"p": np.zeros((3, 2))}, (1, -1), "xlim"),
        (lambda x, y: 1.0, {"p": np.zeros((3, 2))}, (-1, 1), "numpy"),
    ],
)
def test_optimizer_paths_rejects_bad_input(f, paths, xlim, message):
    """Empty or malformed paths, reversed limits and a non-vectorised f raise ValueError."""
    with pytest.raises(ValueError, match=message):
        plotting.plot_optimizer_paths(f, paths, xlim, (-1, 1))
