"""Training diagnostics: what the gradients, activations and updates of a deep net look like.

- :func:`plot_gradient_flow`: the gradient norm of each layer (vanishing or exploding?).
- :func:`plot_histograms`: one histogram per layer, with mean, std and saturation.
- :func:`plot_update_ratio`: log10 of |lr * grad| / |param| per step, against the 1e-3 guide.
- :class:`LiveLossPlot`: a loss curve that redraws itself in a notebook while training.
- :func:`plot_optimizer_paths`: optimizer trajectories over the contours of a 2-D function.
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from backprop_course.plotting._common import _as_floats, _new_axes

__all__ = [
    "LiveLossPlot",
    "plot_gradient_flow",
    "plot_histograms",
    "plot_optimizer_paths",
    "plot_update_ratio",
]

_BAR = "#4c72b0"


def _series(values, what: str) -> np.ndarray:
    """A non-empty 1-D float array, or a ValueError naming ``what``."""
    try:
        array = _as_floats(list(values) if not isinstance(values, np.ndarray) else values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be a list of numbers ({error})") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty list of numbers, got shape {array.shape}")
    return array


def _colours(n: int) -> list:
    """Distinct colours for a few series; a dark-to-light ramp (first to last) for many."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.0, 0.9, n)]


def _legend(ax, count: int) -> None:
    """A legend inside the plot for a few series, beside it for many."""
    if count > 6:
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", ncol=1 + count // 16
        )
    else:
        ax.legend(loc="best", fontsize="small")


# ---------------------------------------------------------------- gradient flow


def plot_gradient_flow(
    names: Sequence[str],
    grad_norms,
    ax=None,
    title: str = "Gradient flow",
    logy: bool = True,
):
    """The gradient norm of each layer, from the input layer (left) to the output (right).

    ``grad_norms`` is a list of floats, one per name (drawn as bars), or a dict
    ``{run label: list of floats}`` to compare several runs (one line each, with
    a legend). A healthy network keeps the bars at a similar height; bars that
    shrink towards the input are vanishing gradients, bars that grow are exploding
    ones. The ratio first layer / last layer is written on the plot.
    """
    names = [str(n) for n in names]
    if not names:
        raise ValueError("names must list at least one layer")
    runs = dict(grad_norms) if isinstance(grad_norms, Mapping) else {None: grad_norms}
    if not runs:
        raise ValueError("grad_norms is an empty dict: give at least one run {label: norms}")
    checked = {}
    for label, norms in runs.items():
        what = "grad_norms" if label is None else f"grad_norms[{label!r}]"
        norms = _series(norms, what)
        if norms.size != len(names):
            raise ValueError(
                f"{what} holds {norms.size} norms but names lists {len(names)} layers: "
                "give one norm per layer"
            )
        if not np.all(np.isfinite(norms)):
            bad = names[int(np.flatnonzero(~np.isfinite(norms))[0])]
            raise ValueError(f"{what} is not finite at layer {bad!r} (did the network overflow?)")
        if np.any(norms < 0):
            raise ValueError(f"{what} holds a negative value: a norm is >= 0")
        checked[label] = norms

    ax = _new_axes(ax, (max(6.0, 0.3 * len(names) + 3), 4))
    x = np.arange(len(names))

    def ratio(norms) -> str:
        return f"{norms[0] / norms[-1]:.1e}" if norms[-1] > 0 else "n/a"

    if None in checked:
        norms = checked[None]
        ax.bar(x, norms, color=_BAR, edgecolor="black", linewidth=0.5, gid="grad-norm")
        note = f"first / last layer: {ratio(norms)}"
        box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.85}
        ax.text(0.02, 0.95, note, transform=ax.transAxes, va="top", fontsize=9, bbox=box)
    else:
        for colour, (label, norms) in zip(_colours(len(checked)), checked.items()):
            full = f"{label} (first/last {ratio(norms)})"
            ax.plot(x, norms, marker="o", markersize=4, color=colour, label=full)
        _legend(ax, len(checked))
    if logy:
        ax.set_yscale("log")
        # At least two decades, and room above the bars for the note: equal
        # heights must look equal, not like a 30% change blown up to full height.
        values = np.concatenate(list(checked.values()))
        values = values[values > 0]
        if values.size:
            low = min(values.min() / 2, 8 * values.max() / 1e3)
            # The note sits in the top fifth of the axes: keep the bars out of it.
            high = values.max() * max(8.0, (values.max() / low) ** 0.25)
            ax.set_ylim(low, high)
    step = max(1, math.ceil(len(names) / 16))
    long = len(names) > 8 or max(map(len, names)) > 8
    ax.set_xticks(
        x[::step], names[::step], rotation=45 if long else 0, ha="right" if long else "center"
    )
    ax.set(
        title=title,
        xlabel="layer (input → output)",
        ylabel="gradient norm" + (" (log scale)" if logy else ""),
    )
    ax.grid(alpha=0.3, axis="y")
    return ax


# ---------------------------------------------------------------- histograms


def _saturation(values: np.ndarray, kind) -> str | None:
    """The share of saturated values, as text, or None when it means nothing here.

    tanh: |v| > 0.97; sigmoid: the same on its scale (v < 0.015 or v > 0.985);
    relu: exactly 0 (no gradient flows back). "auto" guesses from the values' range.
    """
    if kind is None:
        return None
    low, high = float(values.min()), float(values.max())
    if kind == "auto":
        if low >= 0 and np.mean(values == 0) > 0.01:
            kind = "relu"
        elif low >= 0 and high <= 1:
            kind = "sigmoid"
        elif low >= -1 and high <= 1:
            kind = "tanh"
        else:
            return None
    if kind == "tanh":
        return f"|v|>0.97: {np.mean(np.abs(values) > 0.97):.0%}"
    if kind == "sigmoid":
        return f"saturated: {np.mean(np.abs(2 * values - 1) > 0.97):.0%}"
    if kind == "relu":
        return f"zero: {np.mean(values == 0):.0%}"
    raise ValueError(f"saturation must be 'auto', 'tanh', 'sigmoid', 'relu' or None, got {kind!r}")


def plot_histograms(
    arrays: Mapping[str, np.ndarray],
    title: str = "Activations",
    xlabel: str = "value",
    bins: int = 50,
    fig=None,
    saturation: str | None = "auto",
    sharex: bool = False,
):
    """One small histogram per layer, in a grid of up to 4 columns; returns the Figure.

    ``arrays`` maps a layer name to its values (any shape; flattened). Each panel
    is titled with the name, the mean and std, and the share of saturated values:
    ``saturation`` is "tanh" (|v| > 0.97), "sigmoid" (within 0.015 of 0 or 1),
    "relu" (exactly zero), None (not shown) or "auto" (guessed from the range; not
    shown for unbounded values such as gradients). ``sharex=True`` gives every
    panel the same x range, so a distribution that collapses stands out.
    Draws into ``fig`` (cleared first) when given.
    """
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("arrays must be a non-empty dict {layer name: array of values}")
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    data = {}
    for name, values in arrays.items():
        values = _as_floats(values).ravel()
        if values.size == 0:
            raise ValueError(f"arrays[{name!r}] is empty: nothing to draw")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"arrays[{name!r}] holds nan or inf (did the network overflow?)")
        data[str(name)] = values

    cols = len(data) if len(data) <= 4 else 3 if len(data) in (5, 6, 9) else 4
    rows = math.ceil(len(data) / cols)
    if fig is None:
        fig = plt.figure(figsize=(3.3 * cols, 2.5 * rows + 0.7))
    else:
        fig.clf()
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex)
    for i, (ax, (name, values)) in enumerate(zip(axes.flat, data.items())):
        ax.hist(values, bins=bins, color=_BAR, alpha=0.85, histtype="stepfilled")
        lines = [name, f"μ={values.mean():.3g}  σ={values.std():.3g}"]
        lines += [extra] if (extra := _saturation(values, saturation)) else []
        ax.set_title("\n".join(lines), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("count", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(3))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    for ax in axes.flat[len(data) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    if isinstance(fig, Figure) and fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


# ---------------------------------------------------------------- update-to-data ratio


def plot_update_ratio(
    history: Mapping[str, Sequence[float]],
    ax=None,
    title: str = "Update-to-data ratio",
):
    """log10(|lr * grad| / |param|) per step, one line per parameter, with the 1e-3 guide.

    ``history`` maps a parameter name to its log10 ratios, one per step. Around
    -3 (a thousandth of the parameter per step) is a common rule of thumb: far
    below, that parameter barely learns; far above, its updates are too big.
    """
    if not isinstance(history, Mapping) or not history:
        raise ValueError("history must be a non-empty dict {parameter name: log10 ratios}")
    curves = {str(k): _series(v, f"history[{k!r}]") for k, v in history.items()}
    ax = _new_axes(ax, (7, 4))
    for colour, (name, values) in zip(_colours(len(curves)), curves.items()):
        values = np.where(np.isfinite(values), values, np.nan)  # log10(0) would be -inf
        ax.plot(np.arange(values.size), values, color=colour, linewidth=1.2, label=name)
    ax.axhline(-3, color="black", linestyle="--", linewidth=1.2, label="guide: 1e-3")
    _legend(ax, len(curves) + 1)
    ax.set(title=title, xlabel="step", ylabel="log10(|lr·grad| / |param|)")
    ax.grid(alpha=0.3)
    return ax


# ---------------------------------------------------------------- live loss plot


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (never imports IPython itself)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _png(fig, dpi: int = 80, tight: bool = True) -> bytes:
    """The figure as PNG bytes (``tight`` trims the margins, at the cost of a second draw)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def _scalar(value) -> float:
    if value is None:
        return float("nan")
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
    return float(getattr(value, "data", value)) if hasattr(value, "_prev") else float(value)


class LiveLossPlot:
    """A loss curve that redraws itself in a notebook while a model trains.

    ::

        live = LiveLossPlot(every=20)
        for step in range(steps):
            ...
            live.update(step, loss, val_loss=val)  # extra series by keyword, any time
        live.finish()

    In a Jupyter kernel the plot is one image, updated in place on the first call,
    then at most every ``every`` calls (and not more often than ``min_interval``
    seconds), and at :meth:`finish`. Elsewhere ``update`` only records.
    Every series shares one y axis labelled ``ylabel``, so pass only series in
    the loss's units (a validation loss, not an accuracy); ``xlabel`` names the
    first argument of ``update`` (``"step"`` by default, ``"epoch"`` when it counts epochs)
    and ``label`` the ``loss`` series in the legend.
    ``history`` holds ``"step"``, ``"loss"`` and each extra series, all the same
    length (``nan`` where a series had no value); ``figure`` is the last figure drawn.
    """

    def __init__(
        self,
        title: str = "Training loss",
        ylabel: str = "loss",
        every: int = 10,
        logy: bool = False,
        min_interval: float = 0.2,
        xlabel: str = "step",
        label: str = "loss",
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.title, self.ylabel, self.every, self.logy = title, ylabel, every, logy
        self.xlabel, self.label = xlabel, label
        self.min_interval = min_interval
        self.history: dict[str, list[float]] = {"step": [], "loss": []}
        self.redraws = 0
        self.figure = None
        self._notebook = _in_notebook()
        self._handle = None
        self._last_draw = -math.inf

    def update(self, step, loss, **other) -> None:
        """Record ``loss`` (and any other named series) at ``step``; redraw now and then."""
        n = len(self.history["step"])
        self.history["step"].append(float(step))
        self.history["loss"].append(_scalar(loss))
        for name, value in other.items():
            self.history.setdefault(name, [math.nan] * n).append(_scalar(value))
        for values in self.history.values():
            if len(values) == n:  # a series this call did not mention
                values.append(math.nan)
        if self._notebook:
            due = n == 0 or (n + 1) % self.every == 0
            if due and time.perf_counter() - self._last_draw >= self.min_interval:
                self._show()

    def plot(self, ax=None):
        """Draw the history so far into ``ax`` (or a new figure); returns the Axes."""
        ax = _new_axes(ax, (6.5, 3.8))
        steps = np.asarray(self.history["step"], dtype=float)
        series = [k for k in self.history if k != "step"]
        for colour, name in zip(_colours(len(series)), series):
            values = np.asarray(self.history[name], dtype=float)
            keep = np.isfinite(values)
            legend = self.label if name == "loss" else name
            ax.plot(steps[keep], values[keep], color=colour, linewidth=1.4, label=legend)
        if self.logy:
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend(loc="best", fontsize="small")
        title = self.title
        if steps.size:
            title += f" ({self.xlabel} {steps[-1]:g}: {self.ylabel} {self.history['loss'][-1]:.4g})"
        ax.set(title=title, xlabel=self.xlabel, ylabel=self.ylabel)
        ax.grid(alpha=0.3)
        return ax

    def _show(self) -> None:
        from IPython.display import Image, display

        if self.figure is None:
            self.figure = Figure(figsize=(6.5, 3.8))  # not pyplot's: never shown twice
            self.figure.add_subplot()
        ax = self.figure.axes[0]
        ax.cla()
        self.plot(ax)
        image = Image(data=_png(self.figure), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        self.redraws += 1
        self._last_draw = time.perf_counter()

    def finish(self) -> None:
        """Draw the final curve: in the notebook image, or (elsewhere) as ``self.figure``."""
        if self._notebook:
            self._show()
        else:
            _, ax = plt.subplots(figsize=(6.5, 3.8))
            self.plot(ax)
            self.figure = ax.figure
            self.redraws += 1


# ---------------------------------------------------------------- optimizer paths


def plot_optimizer_paths(
    f: Callable,
    paths,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    ax=None,
    title: str = "Optimizer paths",
    levels: int = 30,
    logscale: bool = True,
    resolution: int = 200,
):
    """Contours of ``f(x, y)`` with one line and markers per optimizer path.

    ``f`` must work on numpy grids; ``paths`` maps a name to an array of shape
    ``(k, 2)`` (a single array is drawn as "path"). Each start is a circle, each
    end (the last finite point) a star; the legend gives the number of steps and
    the final value, or says the path diverged. ``logscale`` spaces the contour
    levels geometrically above the lowest value on the grid, so both the steep
    walls and the flat valley floor show.
    """
    if isinstance(paths, np.ndarray):
        paths = {"path": paths}
    if not isinstance(paths, Mapping) or not paths:
        raise ValueError("paths must be a non-empty dict {name: array of shape (k, 2)}")
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not float(lim[0]) < float(lim[1]):
            raise ValueError(f"{name} must be (low, high) with low < high, got {lim!r}")
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    checked = {}
    for name, path in paths.items():
        path = _as_floats(path)
        if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] == 0:
            raise ValueError(
                f"paths[{name!r}] must have shape (k, 2) with k >= 1, got {path.shape}"
            )
        checked[str(name)] = path

    gx, gy = np.meshgrid(np.linspace(*xlim, resolution), np.linspace(*ylim, resolution))
    with np.errstate(all="ignore"):
        z = np.asarray(f(gx, gy), dtype=float)
    if z.shape != gx.shape:
        raise ValueError(
            f"f(x, y) must return an array shaped like its inputs {gx.shape} (use numpy "
            f"operations, not math), got {z.shape}"
        )
    ax = _new_axes(ax, (6.5, 5))
    if logscale:
        shifted = z - np.nanmin(z)
        top = float(np.nanmax(shifted)) or 1.0
        positive = shifted[shifted > 0]
        low = max(float(positive.min()) if positive.size else top * 1e-6, top * 1e-6)
        ax.contourf(
            gx, gy, shifted, levels=np.geomspace(low, top, levels), cmap="Greys_r", alpha=0.35
        )
        ax.contour(
            gx, gy, shifted, levels=np.geomspace(low, top, levels), colors="white", linewidths=0.5
        )
    else:
        ax.contourf(gx, gy, z, levels=levels, cmap="Greys_r", alpha=0.35)
        ax.contour(gx, gy, z, levels=levels, colors="white", linewidths=0.5)

    for colour, (name, path) in zip(_colours(len(checked)), checked.items()):
        finite = np.all(np.isfinite(path), axis=1)
        last = int(np.flatnonzero(finite)[-1]) if finite.any() else None
        if last is None:
            raise ValueError(f"paths[{name!r}] holds no finite point")
        with np.errstate(all="ignore"):
            end = float(np.asarray(f(path[last, 0], path[last, 1])))
        spans = np.array([xlim[1] - xlim[0], ylim[1] - ylim[0]], dtype=float)
        centre = np.array([sum(xlim), sum(ylim)], dtype=float) / 2
        far = np.any(np.abs(path[last] - centre) > 10 * spans)
        if finite.all() and not far:
            label = f"{name}: {len(path) - 1} steps, f = {end:.3g}"
        else:
            label = f"{name}: diverged (f = {end:.2g} after {last} steps)"
        ax.plot(
            *path[finite].T, color=colour, linewidth=1.3, marker="o", markersize=2.5, label=label
        )
        ax.plot(*path[0], "o", color=colour, markersize=8, markeredgecolor="black", zorder=4)
        ax.plot(*path[last], "*", color=colour, markersize=14, markeredgecolor="black", zorder=4)
    marks = [
        Line2D(
            [], [], marker="o", color="white", markeredgecolor="black", markersize=8, label="start"
        ),
        Line2D(
            [], [], marker="*", color="white", markeredgecolor="black", markersize=12, label="end"
        ),
    ]
    handles = ax.get_legend_handles_labels()[0] + marks
    ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.9)
    ax.set(title=title, xlabel="x", ylabel="y", xlim=xlim, ylim=ylim)
    return ax
