"""Test graphs for lesson 03's checks: random DAGs, random expressions, deep chains.

Two kinds of node stand in for the learner's engine, so that no check hands the
learner an object that can do the work itself:

- :class:`Node`, a name and its inputs ``_prev``, for ``topological_order``;
- :class:`BareNode`, which adds ``data``, ``grad`` and the local derivatives
  ``_local`` but has no ``backward()`` and no operators, for ``backward``.
  :func:`bare_copy` turns a graph built with the reference engine into one.

Graphs are built with the reference engine (:class:`backprop_course.autograd.Value`)
in the checking process; only bare copies reach the learner's code.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from backprop_course.autograd import Value as Reference
from backprop_course.compare import signed

__all__ = [
    "KINDS",
    "TWO_PATHS",
    "BareNode",
    "Node",
    "Program",
    "bare_copy",
    "bounded_dag",
    "deep_chain",
    "deep_chain_length",
    "deep_graph",
    "deep_reference",
    "path_count",
    "probe_every_op",
    "reachable",
    "simulated_grads",
    "twice",
    "two_paths",
]


def deep_chain_length() -> int:
    """Deep enough that one Python frame per node exceeds the recursion limit."""
    return min(max(5000, 3 * sys.getrecursionlimit()), 60_000)


# ---------------------------------------------------------------- bare nodes


class Node:
    """A bare graph node for the topological-order check: a name and its inputs ``_prev``."""

    __slots__ = ("_prev", "label")

    def __init__(self, label: str, prev: tuple = ()):
        self.label = label
        self._prev = tuple(prev)

    def __repr__(self) -> str:
        return f"node {self.label!r}"


class BareNode:
    """A graph node with data, grad, inputs ``_prev`` and local derivatives ``_local``.

    It has no ``backward()`` and no arithmetic: a backward pass over it must be the
    learner's own.
    """

    __slots__ = ("_local", "_op", "_prev", "data", "grad", "label")

    def __init__(self, data: float, prev: tuple = (), local: tuple = (), op: str = "", label=""):
        self.data = float(data)
        self.grad = 0.0
        self._prev = tuple(prev)
        self._local = tuple(local)
        self._op = op
        self.label = label

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"node({name}data={self.data:.6g}, grad={self.grad:.6g})"


def bare_copy(leaves: list, root) -> tuple[list[BareNode], BareNode]:
    """The graph behind ``root`` (any engine with ``_prev``/``_local``) as :class:`BareNode` s.

    Returns the copies of ``leaves`` (also those ``root`` does not depend on) and of ``root``.
    """
    copies: dict[int, BareNode] = {}
    for node in Reference.topological_order(root):  # inputs first, no recursion
        copies[id(node)] = BareNode(
            node.data,
            tuple(copies[id(child)] for child in node._prev),
            tuple(float(d) for d in node._local),
            getattr(node, "_op", ""),
        )
    bare_leaves = [copies.get(id(leaf)) or BareNode(leaf.data) for leaf in leaves]
    return bare_leaves, copies[id(root)]


def reachable(root) -> list:
    """Every node behind ``root`` once, in no particular order (no recursion)."""
    seen, stack, out = {id(root)}, [root], []
    while stack:
        node = stack.pop()
        out.append(node)
        for child in node._prev:
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return out


# ---------------------------------------------------------------- random DAGs of Nodes


def path_count(nodes: list) -> int:
    """The number of paths from the last node (the root) down to every node: the work a
    depth-first search without a visited set would do."""
    paths = {id(n): 0 for n in nodes}
    paths[id(nodes[-1])] = 1
    for node in reversed(nodes):  # creation order is a topological order
        for child in node._prev:
            paths[id(child)] += paths[id(node)]
    return sum(paths.values())


def random_dag(rng, leaves: int, ops: int, reuse: float) -> list:
    """Nodes in creation order; each op node takes the previous node plus 0-2 random earlier
    ones (sometimes the same node twice, like a * a). The last node is the root."""
    nodes = [Node(f"x{i}") for i in range(leaves)]
    for k in range(ops):
        prev = [nodes[-1]]
        for _ in range(int(rng.integers(0, 3))):
            pool = nodes if rng.random() < reuse else nodes[:leaves]
            prev.append(pool[int(rng.integers(len(pool)))])
        if rng.random() < 0.15:
            prev.append(prev[0])  # the same input twice
        rng.shuffle(prev)
        nodes.append(Node(f"n{k}", tuple(prev)))
    return nodes


def bounded_dag(rng, leaves: int, ops: int) -> list:
    """A random DAG with plenty of reuse but a bounded number of paths, so that even an
    answer that revisits shared nodes finishes quickly (and is told about it)."""
    reuse = 0.5
    while True:
        nodes = random_dag(rng, leaves, ops, reuse)
        if path_count(nodes) <= 20_000 or reuse < 0.01:
            return nodes
        reuse /= 2


def deep_graph(rng, depth: int) -> list:
    """A chain ``depth`` op nodes long whose links also read a few shared leaves."""
    leaves = [Node(f"x{i}") for i in range(5)]
    nodes = [*leaves]
    for k in range(depth):
        prev = [nodes[-1]]
        if rng.random() < 0.5:
            prev.append(leaves[int(rng.integers(len(leaves)))])
        nodes.append(Node(f"n{k}", tuple(prev)))
    return nodes


# ---------------------------------------------------------------- random expressions


def apply(kind: str, x, y, c: float):
    """One operation on engine values ``x``, ``y`` (and a plain number ``c``)."""
    ops: dict[str, Callable] = {
        "+": lambda: x + y,
        "-": lambda: x - y,
        "*": lambda: x * y,
        "/": lambda: x / y,
        "**": lambda: x**c,
        "tanh": lambda: x.tanh(),
        "exp": lambda: x.exp(),
        "relu": lambda: x.relu(),
        "neg": lambda: -x,
        "+c": lambda: x + c,
        "*c": lambda: x * c,
        "c+": lambda: c + x,
        "c*": lambda: c * x,
        "c-": lambda: c - x,
        "c/": lambda: c / x,
    }
    return ops[kind]()


def describe(kind: str, x: str, y: str, c: float) -> str:
    c = f"{c:g}"
    return {
        "**": f"{x} ** {c}",
        "tanh": f"{x}.tanh()",
        "exp": f"{x}.exp()",
        "relu": f"{x}.relu()",
        "neg": f"-{x}",
        "+c": f"{x} + {c}",
        "*c": f"{x} * {c}",
        "c+": f"{c} + {x}",
        "c*": f"{c} * {x}",
        "c-": f"{c} - {x}",
        "c/": f"{c} / {x}",
    }.get(kind, f"{x} {kind} {y}")


def _safe(kind: str, x: float, y: float, c: float) -> bool:
    """Keep random expressions away from kinks, poles and overflow."""
    if kind == "/":
        return abs(y) > 0.3
    if kind == "c/":
        return abs(x) > 0.3
    if kind == "**":
        return x > 0.2 if c != int(c) else (abs(x) > 0.3 or c > 0)
    if kind == "exp":
        return x < 2
    if kind == "relu":
        return abs(x) > 0.05
    return True


KINDS = ("+", "-", "*", "/", "**", "tanh", "exp", "relu", "neg", "+c", "*c", "c+", "c*", "c-", "c/")


class Program:
    """A random expression: leaf values and a list of (kind, i, j, c) steps, each step
    reading earlier nodes i and j. Built once, replayed with any engine class."""

    def __init__(self, rng, leaves: int, steps: int):
        self.leaves = [signed(rng, 0.2, 1.5) for _ in range(leaves)]
        self.steps: list[tuple[str, int, int, float]] = []
        data = list(self.leaves)
        while len(self.steps) < steps:
            kind = str(rng.choice(KINDS))
            # mostly chain on the newest node; the second operand is any earlier node (reuse)
            i = len(data) - 1 if rng.random() < 0.6 else int(rng.integers(len(data)))
            j = int(rng.integers(len(data)))
            c = float(rng.choice([2, 3, -1, 0.5])) if kind == "**" else signed(rng, 0.5, 2.5)
            c = round(c, 2)
            if not _safe(kind, data[i], data[j], c):
                continue
            value = apply(kind, Reference(data[i]), Reference(data[j]), c).data
            if not math.isfinite(value) or abs(value) > 20:
                continue
            self.steps.append((kind, i, j, c))
            data.append(value)

    def build(self, cls=Reference) -> tuple[list, object]:
        """The leaves and the root, built with the engine class ``cls``."""
        nodes = [cls(v) for v in self.leaves]
        leaves = list(nodes)
        for kind, i, j, c in self.steps:
            nodes.append(apply(kind, nodes[i], nodes[j], c))
        return leaves, nodes[-1]

    def __str__(self) -> str:
        names = [f"x{k}" for k in range(len(self.leaves))]
        lines = []
        for k, (kind, i, j, c) in enumerate(self.steps):
            lines.append(f"n{k} = {describe(kind, names[i], names[j], c)}")
            names.append(f"n{k}")
        values = ", ".join(f"x{k}={v:.4g}" for k, v in enumerate(self.leaves))
        return f"{'; '.join(lines)} (with {values}; the root is n{len(self.steps) - 1})"


def probe_every_op(cls, a: float, b: float, c: float) -> list[float]:
    """Every operation of an engine class on leaves a, b (and the number c), summed, then
    backward(): a probe (see :func:`backprop_course.compare.run_probe`) that runs each method
    of the learner's class once, so that rules can watch what they call."""
    x, y = cls(a), cls(b)
    outs = [x + y, x - y, x * y, x / y, x**2, x.tanh(), x.exp(), x.relu(), -x]
    outs += [x + c, c + x, x * c, c * x, c - x, c / x]
    total = outs[0]
    for out in outs[1:]:
        total = total + out
    total.backward()
    return [float(x.grad), float(y.grad)]


# ---------------------------------------------------------------- small and deep graphs


def two_paths(cls, x0: float, x1: float):
    """t = x0.tanh(); y = t + (t * x1).tanh(): t reaches y by a short and a long path, so a
    backward pass that does not wait for all of t's users passes on an incomplete gradient."""
    leaves = [cls(x0), cls(x1)]
    t = leaves[0].tanh()
    return leaves, t + (t * leaves[1]).tanh()


TWO_PATHS = "t = x0.tanh(); y = t + (t * x1).tanh()"


def twice(x: float, op: str):
    """x0 + x0 or x0 * x0: one leaf used as both inputs."""
    leaf = Reference(x)
    return [leaf], (leaf + leaf if op == "+" else leaf * leaf)


def deep_chain(cls, weights: list[float], depth: int):
    """v = (v + x[k % 4]) * 0.5, ``depth`` times, from v = x[0]."""
    leaves = [cls(w) for w in weights]
    v = leaves[0]
    for k in range(depth):
        v = (v + leaves[k % 4]) * 0.5
    return leaves, v


def deep_reference(rng, depth: int):
    """A function building the deep chain (with the reference engine by default)."""
    weights = [signed(rng, 0.2, 1.0) for _ in range(4)]

    def build(cls=Reference):
        return deep_chain(cls, weights, depth)

    build.weights = weights
    return build


def simulated_grads(root, leaves, *, assign=False, forward=False, local=True, upstream=True):
    """Leaf gradients that a backward pass with one typical mistake would produce."""
    order = Reference.topological_order(root)
    grads = {id(n): 0.0 for n in order}
    grads[id(root)] = 1.0
    for node in order if forward else reversed(order):
        for child, d in zip(node._prev, node._local):
            contribution = (d if local else 1.0) * (grads[id(node)] if upstream else 1.0)
            if assign:
                grads[id(child)] = contribution
            else:
                grads[id(child)] += contribution
    return [grads.get(id(leaf), 0.0) for leaf in leaves]
