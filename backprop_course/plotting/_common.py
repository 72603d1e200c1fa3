"""Helpers shared by the plotting modules: axes, number formatting, float conversion."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

# Colours shared by the diagrams.
_INPUT, _INNER, _OUTPUT, _OP = "#dbe9f6", "#f2f2f2", "#dff0d8", "#fff2cc"
_EDGE = "#555555"


def _new_axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _fmt(x: Any) -> str:
    """A number with 4 significant digits (anything else as ``str``)."""
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return str(x)


def _as_floats(values: Any) -> np.ndarray:
    """An array of floats from numbers, numpy arrays, torch tensors or ``Value`` objects."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError, RuntimeError):  # e.g. Values, or tensors needing grad
        to_float = np.vectorize(lambda v: float(getattr(v, "data", v)), otypes=[float])
        return to_float(np.asarray(values, dtype=object))


def _bare(ax) -> None:
    """No ticks and no frame: for diagrams, whose coordinates mean nothing."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
