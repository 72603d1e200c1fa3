"""Diagrams: the computation graph of a scalar ``Value`` and a layered network."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path

from backprop_course.plotting._common import (
    _EDGE,
    _INNER,
    _INPUT,
    _OP,
    _OUTPUT,
    _as_floats,
    _bare,
    _fmt,
    _new_axes,
)

__all__ = ["draw_graph", "draw_network"]


# ---------------------------------------------------------------- computation graphs


def _inputs(node) -> tuple:
    return tuple(getattr(node, "_prev", ()) or ())


def _nodes_in_order(root) -> list:
    """Every node behind ``root`` once (by identity), inputs before their users; no recursion."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_placed = stack.pop()
        if inputs_placed:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(_inputs(node)) if id(c) not in seen)
    return order


def _columns(order: list) -> dict[int, int]:
    """The column of each node: one right of its deepest input (the longest path from the
    inputs), except that an input sits just left of its first user."""
    column, users = {}, {id(n): [] for n in order}
    for node in order:
        column[id(node)] = 1 + max((column[id(c)] for c in _inputs(node)), default=-1)
        for child in _inputs(node):
            users[id(child)].append(column[id(node)])
    for node in order:
        if not _inputs(node) and users[id(node)]:
            column[id(node)] = min(users[id(node)]) - 1
    return column


def _rows(columns: list[list], links: dict, size: dict) -> dict:
    """Heights: each item near the mean height of its neighbours (the barycentre heuristic,
    which also orders each column to avoid crossings), keeping ``size`` apart."""
    y = {}
    for keys in columns:
        for i, key in enumerate(keys):
            y[key] = -sum(size[k] for k in keys[:i]) - size[key] / 2
    for sweep in range(6):  # left to right, then right to left, three times
        for keys in columns if sweep % 2 == 0 else columns[::-1]:
            want = {k: np.mean([y[m] for m in links[k]]) if links[k] else y[k] for k in keys}
            keys.sort(key=lambda k, want=want: -want[k])  # top to bottom
            placed = [want[keys[0]]]
            for above, key in pairwise(keys):
                placed.append(min(want[key], placed[-1] - (size[above] + size[key]) / 2))
            shift = np.mean([want[k] - p for k, p in zip(keys, placed)])
            for key, p in zip(keys, placed):
                y[key] = p + shift
    return y


def _layout(order: list, box_h: float):
    """Columns and heights of the nodes, and the route of each edge.

    An edge that skips columns gets a waypoint in each column it crosses, placed
    like a thin node, so it runs in a free lane instead of through a box.
    """
    column = _columns(order)
    columns = [[] for _ in range(max(column.values()) + 1)]
    links, size, routes = {}, {}, []
    for node in order:
        columns[column[id(node)]].append(id(node))
        links[id(node)], size[id(node)] = [], box_h + 0.45
    for node in order:
        for slot, child in enumerate(_inputs(node)):
            via = [(id(node), slot, c) for c in range(column[id(child)] + 1, column[id(node)])]
            for key in via:
                columns[key[2]].append(key)
                column[key] = key[2]
                links[key], size[key] = [], 0.4
            chain = [id(child), *via, id(node)]
            for a, b in pairwise(chain):
                links[a].append(b)
                links[b].append(a)
            routes.append((child, node, slot, via))
    return column, _rows(columns, links, size), routes


def draw_graph(root, ax=None, max_nodes: int = 150):
    """Draw the computation graph behind ``root`` (a ``Value``) from left to right.

    Each value is a box with its label, ``data`` and ``grad``; each operation is
    a circle between its inputs and its result. A value used twice is drawn once,
    with two arrows leaving it. Graphs of more than ``max_nodes`` values raise a
    ValueError before anything is drawn. Only ``.data .grad ._prev`` (and, when
    present, ``._op .label``) are read, so any micrograd-like class can be drawn.
    """
    if not hasattr(root, "data"):
        raise TypeError(
            "draw_graph expects a Value (an object with .data, .grad and ._prev), "
            f"got {type(root).__name__}"
        )
    order = _nodes_in_order(root)
    if len(order) > max_nodes:
        raise ValueError(
            f"this graph has {len(order)} nodes; draw_graph draws at most {max_nodes}: "
            f"draw a smaller expression or pass max_nodes={len(order)}"
        )
    box_w, box_h, gap, radius = 2.0, 1.0, 1.3, 0.36
    column, y, routes = _layout(order, box_h)
    x = {key: c * (box_w + gap) for key, c in column.items()}
    width, top, bottom = x[id(root)] + box_w, max(y.values()), min(y.values())
    height = top - bottom + box_h
    inch = min(0.55, 30 / width, 22 / height)  # per unit: a big graph gets a big figure, to a point
    ax = _new_axes(ax, (1.5 + inch * width / 0.8, 1.2 + inch * height / 0.8))
    ax.set_xlim(-box_w / 2 - 0.3, width - box_w / 2 + 0.3)
    ax.set_ylim(bottom - box_h / 2 - 0.3, top + box_h / 2 + 0.3)
    ax.set_aspect("equal")
    font = min(9.0, 8 * _inches_per_unit(ax) / 0.55)  # text that fits the boxes

    def op_of(node) -> str:
        return str(getattr(node, "_op", "") or "") if _inputs(node) else ""

    frame, rounded = {"edgecolor": "#333333", "zorder": 3}, "round,pad=0,rounding_size=0.18"
    centred = {"ha": "center", "va": "center", "zorder": 4}
    for node in order:
        cx, cy, label = x[id(node)], y[id(node)], str(getattr(node, "label", "") or "")
        colour = _OUTPUT if node is root else _INNER if _inputs(node) else _INPUT
        corner = (cx - box_w / 2, cy - box_h / 2)
        box = FancyBboxPatch(corner, box_w, box_h, boxstyle=rounded, facecolor=colour, **frame)
        ax.add_patch(box)
        box.set(linewidth=1.6 if node is root else 1.0, gid="value")
        lines = [f"data {_fmt(node.data)}", f"grad {_fmt(getattr(node, 'grad', ''))}"]
        label = label if len(label) <= 16 else label[:15] + "…"
        text = "\n".join(([label] if label else []) + lines)
        ax.text(cx, cy, text, fontsize=font, family="monospace", gid="value", **centred)
        op = op_of(node)
        if op:  # the op's circle sits in the gap left of its result
            centre = (cx - box_w / 2 - gap / 2, cy)
            ax.add_patch(Circle(centre, radius, facecolor=_OP, gid="op", **frame))
            ax.text(
                *centre, op, fontsize=font if len(op) <= 4 else 0.75 * font, gid="op", **centred
            )
            _arrow(ax, [(centre[0] + radius, cy), (cx - box_w / 2, cy)])

    for child, node, slot, via in routes:
        twins = [i for i, c in enumerate(_inputs(node)) if c is child]  # e.g. a * a
        lift = 0.22 * ((len(twins) - 1) / 2 - twins.index(slot))
        points = [(x[id(child)] + box_w / 2, y[id(child)] + lift)]
        for key in via:  # a lane through each column the edge skips
            points += [(x[key] - box_w / 2, y[key] + lift), (x[key] + box_w / 2, y[key] + lift)]
        if op_of(node):  # stop on the circle's rim
            centre = np.array([x[id(node)] - box_w / 2 - gap / 2, y[id(node)]])
            direction = np.subtract(points[-1], centre)
            points.append(tuple(centre + radius * direction / np.hypot(*direction)))
        else:
            points.append((x[id(node)] - box_w / 2, y[id(node)]))
        _arrow(ax, points)

    _bare(ax)
    ax.set_xlabel("forward pass: inputs → output        backward pass: gradients flow ←")
    name = f" of {root.label}" if getattr(root, "label", "") else ""
    ops = sum(1 for n in order if op_of(n))
    ax.set_title(f"Computation graph{name}: {len(order)} values, {ops} operations")
    return ax


def _arrow(ax, points) -> None:
    """An arrow along the polyline ``points``, head at the last point."""
    codes = [Path.MOVETO] + [Path.LINETO] * (len(points) - 1)
    style = {"arrowstyle": "-|>", "mutation_scale": 10, "color": _EDGE, "linewidth": 0.9}
    ax.add_patch(FancyArrowPatch(path=Path(points, codes), shrinkA=0, shrinkB=0, zorder=2, **style))


def _inches_per_unit(ax) -> float:
    """How long one data unit will be on paper, in an Axes with equal aspect."""
    box, (width, height) = ax.get_position(), ax.figure.get_size_inches()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return min(box.width * width / (x1 - x0), box.height * height / (y1 - y0))


# ---------------------------------------------------------------- network diagrams


def _check_matrices(name: str, matrices, sizes: list[int]) -> list[np.ndarray] | None:
    if matrices is None:
        return None
    if len(matrices) != len(sizes) - 1:
        raise ValueError(
            f"{name} must hold {len(sizes) - 1} arrays, one per pair of consecutive layers, "
            f"got {len(matrices)}"
        )
    arrays = []
    for i, m in enumerate(matrices):
        m = _as_floats(m)
        if m.shape != (sizes[i + 1], sizes[i]):
            raise ValueError(
                f"{name}[{i}] (layer {i} → layer {i + 1}) must have shape (n_out, n_in) = "
                f"{(sizes[i + 1], sizes[i])}, got {m.shape}"
            )
        arrays.append(m)
    return arrays


def draw_network(
    layer_sizes: Sequence[int],
    weights=None,
    grads=None,
    ax=None,
    title: str | None = None,
    layer_names: Sequence[str] | None = None,
):
    """Draw a layered network: neurons as circles, each weight as a line.

    ``weights`` and ``grads`` are lists of arrays, one per pair of consecutive
    layers, of shape ``(n_out, n_in)``. With ``grads``, each line's width
    grows with |dL/dw| and its colour gives the sign (red positive, blue
    negative): the error flowing back from the output. With only ``weights``,
    lines show the weights in the same way.
    """
    sizes = list(layer_sizes)
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"layer_sizes must be two or more integers >= 1, got {sizes}")
    hidden = ["hidden"] if len(sizes) == 3 else [f"hidden {i}" for i in range(1, len(sizes) - 1)]
    names = list(layer_names) if layer_names is not None else ["input", *hidden, "output"]
    if len(names) != len(sizes):
        raise ValueError(f"layer_names must hold {len(sizes)} names, got {len(names)}")
    weights = _check_matrices("weights", weights, sizes)
    grads = _check_matrices("grads", grads, sizes)
    values = grads if grads is not None else weights

    step, radius, tallest = 3.0, 0.28, max(sizes)
    ax = _new_axes(ax, (2.6 * len(sizes) + 1.5, max(3.2, 0.62 * tallest + 1.8)))
    pos = [[(i * step, (n - 1) / 2 - j) for j in range(n)] for i, n in enumerate(sizes)]
    segments, signed = [], []
    for i in range(len(sizes) - 1):
        for j_out, end in enumerate(pos[i + 1]):
            for j_in, start in enumerate(pos[i]):
                segments.append([start, end])
                signed.append(0.0 if values is None else values[i][j_out, j_in])
    signed = np.array(signed)
    if values is None:
        edges = LineCollection(segments, colors="#999999", linewidths=0.9)
    else:
        scale = float(np.max(np.abs(signed))) or 1.0
        norm, cmap = Normalize(-scale, scale), plt.get_cmap("coolwarm")
        keep = np.argsort(np.abs(signed))  # the strongest lines on top
        width = 0.4 + 4.6 * np.abs(signed[keep]) / scale
        colours = cmap(norm(signed[keep]))
        edges = LineCollection([segments[k] for k in keep], colors=colours, linewidths=width)
        name = "gradient dL/dw" if grads is not None else "weight w"
        bar = ax.figure.colorbar(ScalarMappable(norm, cmap), ax=ax, shrink=0.8, pad=0.02)
        bar.set_label(f"{name} (wider line: larger |{name.split()[-1]}|)")
    edges.set(gid="weights", zorder=1)
    ax.add_collection(edges)
    ring = {"edgecolor": "#222222", "linewidth": 1.2}
    for i, layer in enumerate(pos):
        fill = _INPUT if i == 0 else _OUTPUT if i == len(pos) - 1 else _INNER
        for centre in layer:
            ax.add_patch(Circle(centre, radius, facecolor=fill, zorder=3, gid="neuron", **ring))

    top = (tallest - 1) / 2 + radius
    if grads is not None:  # an arrow from the output side back to the input side
        right, left, red = pos[-1][0][0], pos[0][0][0], "#b2182b"
        arrow = {"arrowstyle": "-|>", "color": red, "lw": 2}
        ax.annotate("", xy=(left, top + 0.55), xytext=(right, top + 0.55), arrowprops=arrow)
        middle = {"ha": "center", "va": "bottom", "color": red, "fontsize": 10}
        ax.text((left + right) / 2, top + 0.75, "error flows back", **middle)
    ax.set_xlim(-0.8, (len(sizes) - 1) * step + 0.8)
    ax.set_ylim(-top - 0.3, top + (1.3 if grads is not None else 0.3))
    ax.set_aspect("equal")
    _bare(ax)
    ticks = [f"{n}\n({s} neuron{'s' if s > 1 else ''})" for n, s in zip(names, sizes)]
    ax.set_xticks([layer[0][0] for layer in pos], ticks)
    ax.tick_params(axis="x", length=0)
    ax.set(xlabel="layer", ylabel="neurons")
    shape = "-".join(map(str, sizes))
    if title is None:
        title = f"A {shape} network"
        if grads is not None:
            title = f"The error reaching each weight of a {shape} network: dL/dw"
    ax.set_title(title)
    return ax
