"""Curves and classifiers: loss per step, and the regions a 2-D classifier assigns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from backprop_course.plotting._common import _as_floats, _new_axes

__all__ = ["plot_decision_boundary", "plot_loss_curve"]


def plot_loss_curve(
    losses,
    ax=None,
    title: str = "Training loss",
    ylabel: str = "loss",
    xlabel: str = "step",
    label: str | None = None,
    logy: bool = False,
):
    """Plot a loss per step; a dict ``{name: losses}`` draws one curve per name, with a legend."""
    curves = dict(losses) if isinstance(losses, Mapping) else {label: losses}
    ax = _new_axes(ax, (6, 3.8))
    for name, values in curves.items():
        values = _as_floats(list(values))
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"losses for {name!r} must be a non-empty list of numbers")
        ax.plot(np.arange(values.size), values, label=name, linewidth=1.5)
    if logy:
        ax.set_yscale("log")
    if any(name is not None for name in curves):
        ax.legend()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return ax


def plot_decision_boundary(
    predict: Callable[[np.ndarray], Any],
    X,
    y,
    ax=None,
    title: str = "Decision boundary",
    resolution: int = 200,
    padding: float = 0.5,
):
    """Colour the plane by the class ``predict`` gives, and show the data on top.

    ``predict(points)`` gets an array of shape ``(m, 2)``. Returning ``m``
    scores means two classes (class 1 where the score is > 0, with the line
    score = 0 drawn); returning ``(m, k)`` scores means ``k`` classes (argmax).
    """
    X, y = _as_floats(X), np.asarray(y).astype(int).ravel()
    if X.ndim != 2 or X.shape[1] != 2 or len(y) != len(X) or y.min(initial=0) < 0:
        raise ValueError(
            f"X must have shape (n, 2) and y shape (n,) with labels >= 0, got {X.shape} and "
            f"{y.shape}"
        )
    low, high = X.min(axis=0) - padding, X.max(axis=0) + padding
    g1, g2 = np.meshgrid(
        np.linspace(low[0], high[0], resolution), np.linspace(low[1], high[1], resolution)
    )
    points = np.column_stack([g1.ravel(), g2.ravel()])
    scores = _as_floats(predict(points))
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim not in (1, 2) or scores.shape[0] != len(points):
        raise ValueError(
            f"predict must return shape ({len(points)},) or ({len(points)}, k) for "
            f"{len(points)} points, got {scores.shape}"
        )
    binary = scores.ndim == 1
    region = (scores > 0).astype(int) if binary else scores.argmax(axis=1)
    k = max(2 if binary else scores.shape[1], int(y.max()) + 1)
    colours = [plt.get_cmap("tab10")(c % 10) for c in range(k)]

    ax = _new_axes(ax, (5.5, 5))
    ax.contourf(
        g1, g2, region.reshape(g1.shape), levels=np.arange(k + 1) - 0.5, colors=colours, alpha=0.25
    )
    handles = []
    if binary and scores.min() < 0 < scores.max():
        ax.contour(g1, g2, scores.reshape(g1.shape), levels=[0], colors="black", linewidths=1.5)
        handles.append(Line2D([], [], color="black", label="score = 0"))
    dots = {"edgecolor": "black", "linewidth": 0.5, "s": 25, "zorder": 3}
    for c in np.unique(y):
        ax.scatter(*X[y == c].T, color=colours[c], label=f"class {c}", **dots)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="best", framealpha=0.9)
    ax.set(title=title, xlabel="x1", ylabel="x2", xlim=(low[0], high[0]), ylim=(low[1], high[1]))
    return ax
