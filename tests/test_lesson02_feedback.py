"""Lesson 02: correct answers pass, and typical wrong answers get a specific reason."""

from __future__ import annotations

import math
from graphlib import TopologicalSorter

from backprop_course.autograd import Value as PackageValue
from backprop_course.gradcheck import central_difference
from feedback import lesson_feedback_tests


def forward(a, b, c, f):
    e = a * b
    d = c - e
    g = d * f
    return {"e": e, "d": d, "g": g, "L": math.tanh(g)}


def topological_order(graph):
    order, placed = [], set()

    def visit(node):
        if node in placed:
            return
        placed.add(node)
        for parent in graph[node]:
            visit(parent)
        order.append(node)

    for node in graph:
        visit(node)
    return order


def topological_order_kahn(graph):
    """Another correct answer: repeatedly take the nodes whose inputs are all done."""
    done, order = set(), []
    while len(order) < len(graph):
        for node, parents in graph.items():
            if node not in done and all(p in done for p in parents):
                done.add(node)
                order.append(node)
    return order


LOCAL_GRADS = {
    "+": lambda x, y: (1.0, 1.0),
    "-": lambda x, y: (1.0, -1.0),
    "*": lambda x, y: (y, x),
    "/": lambda x, y: (1 / y, -x / y**2),
    "tanh": lambda x: 1 - math.tanh(x) ** 2,
}


def local_with(**changes):
    table = dict(LOCAL_GRADS)
    names = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
    table.update({names.get(k, k): v for k, v in changes.items()})
    return table


def make_backward(*, tanh="right", mul_d="right", sign_e=1, sign_c=1, mul_a="right"):
    """backward() for the exercise graph, with optional slips."""

    def backward(a, b, c, f):
        v = forward(a, b, c, f)
        dL = 1.0
        dg = {"right": 1 - v["L"] ** 2, "forgot": 1.0, "input": 1 - v["g"] ** 2}[tanh] * dL
        dd = {"right": f, "forgot": 1.0, "noswap": v["d"]}[mul_d] * dg
        df = v["d"] * dg
        de = -sign_e * dd
        dc = sign_c * dd
        da = {"right": b, "forgot": 1.0, "noswap": a}[mul_a] * de
        db = a * de
        return {"g": dg, "d": dd, "f": df, "e": de, "c": dc, "a": da, "b": db}

    return backward


CORRECT_ANSWERS = {
    "02.forward_pass": [forward],
    "02.topological_order": [topological_order, topological_order_kahn],
    "02.local_derivatives": [LOCAL_GRADS],
    "02.backward_by_hand": [make_backward()],
    "02.reused_node": [lambda x, y: (y + 2 * x, x)],
    "02.count_passes": [lambda n, m: (n, m)],
}


WRONG_ANSWERS = [
    ("02.forward_pass", lambda a, b, c, f: {**forward(a, b, c, f), "e": a + b}, "e = a + b"),
    ("02.forward_pass", lambda a, b, c, f: {**forward(a, b, c, f), "d": a * b - c}, "d = e - c"),
    (
        "02.forward_pass",
        lambda a, b, c, f: {**forward(a, b, c, f), "L": forward(a, b, c, f)["g"]},
        "forgot the tanh",
    ),
    ("02.forward_pass", lambda a, b, c, f: {"e": a * b}, "missing the key(s) ['d', 'g', 'L']"),
    ("02.forward_pass", lambda a, b, c, f: (a * b, c - a * b), "should be a dict with the keys"),
    ("02.topological_order", lambda graph: list(graph), "wrong topological order: node"),
    ("02.topological_order", lambda graph: list(graph), "order of the dict's keys"),
    ("02.topological_order", lambda graph: topological_order(graph)[::-1], "exactly reversed"),
    ("02.topological_order", lambda graph: [n for n in graph if graph[n]], "misses the node"),
    ("02.topological_order", lambda graph: topological_order(graph) * 2, "appears 2 times"),
    ("02.topological_order", lambda graph: set(graph), "wrong topological order"),
    ("02.local_derivatives", local_with(mul=lambda x, y: (x, y)), "not swapped"),
    ("02.local_derivatives", local_with(sub=lambda x, y: (1.0, 1.0)), "sign error"),
    ("02.local_derivatives", local_with(div=lambda x, y: (1 / y, x / y**2)), "quotient-rule sign"),
    ("02.local_derivatives", local_with(div=lambda x, y: (1 / y, -1 / y**2)), "the x is missing"),
    ("02.local_derivatives", local_with(tanh=lambda x: 1 - x**2), "uses the input"),
    ("02.local_derivatives", local_with(add=lambda x, y: (y, x)), "local derivatives of *"),
    ("02.local_derivatives", local_with(div=lambda x, y: ...), "still return `...`"),
    ("02.local_derivatives", local_with(mul=lambda x, y: x * y), "should return (d(out)/dx"),
    ("02.local_derivatives", {"+": LOCAL_GRADS["+"]}, "missing the key(s)"),
    ("02.backward_by_hand", make_backward(mul_d="forgot"), "forgot the local derivative of g"),
    ("02.backward_by_hand", make_backward(mul_d="forgot"), "dL/dg is right, so look"),
    ("02.backward_by_hand", make_backward(mul_d="noswap"), "did not swap"),
    ("02.backward_by_hand", make_backward(sign_e=-1), "sign error: d = c - e"),
    ("02.backward_by_hand", make_backward(sign_c=-1), "dd/dc = +1"),
    ("02.backward_by_hand", make_backward(tanh="forgot"), "forgot the local derivative of tanh"),
    ("02.backward_by_hand", make_backward(tanh="input"), "used 1 - g**2"),
    ("02.backward_by_hand", make_backward(mul_a="forgot"), "the step through e = a * b"),
    ("02.backward_by_hand", lambda a, b, c, f: {"g": 1.0}, "missing the key(s)"),
    ("02.reused_node", lambda x, y: (y, x), "= instead of +=: only the use of x in x * y"),
    ("02.reused_node", lambda x, y: (y + x, x), "x * x counted once"),
    ("02.reused_node", lambda x, y: (2 * x, x), "x * y was lost"),
    ("02.reused_node", lambda x, y: (y + 2 * x, y), "dL/dy"),
    ("02.reused_node", lambda x, y: y + 2 * x, "two numbers"),
    ("02.reused_node", lambda x, y: None, "return"),
    ("02.backward_by_hand", lambda a, b, c, f: None, "return"),
    ("02.count_passes", lambda n, m: (m, n), "swapped"),
    ("02.count_passes", lambda n, m: (n, 1), "m outputs take m passes"),
    ("02.count_passes", lambda n, m: (1, m), "n inputs take n passes"),
    ("02.count_passes", lambda n, m: n, "two numbers"),
]


# ---------------------------------------------------------------- shortcuts


def forward_by_engine(a, b, c, f):
    """The forward pass read off the package's engine, as the exercise notebook builds it."""
    a, b, c, f = (PackageValue(v) for v in (a, b, c, f))
    e = a * b
    d = c - e
    g = d * f
    return {"e": e.data, "d": d.data, "g": g.data, "L": g.tanh().data}


def backward_by_engine(a, b, c, f):
    """The gradients from the package's engine instead of by hand."""
    leaves = {k: PackageValue(v) for k, v in zip("abcf", (a, b, c, f))}
    e = leaves["a"] * leaves["b"]
    d = leaves["c"] - e
    g = d * leaves["f"]
    g.tanh().backward()
    return {
        "g": g.grad,
        "d": d.grad,
        "f": leaves["f"].grad,
        "e": e.grad,
        **{k: leaves[k].grad for k in "cab"},
    }


def backward_by_differences(a, b, c, f):
    """Finite differences of L for the inputs, by hand for the inner nodes: close, not exact."""
    grads = make_backward()(a, b, c, f)

    def L(a=a, b=b, c=c, f=f):
        return forward(a, b, c, f)["L"]

    step = 1e-5
    grads["a"] = (L(a=a + step) - L(a=a - step)) / (2 * step)
    return grads


def reused_by_torch(x, y):
    """The gradient of L = x*y + x*x from torch's autograd."""
    import torch

    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (tx * ty + tx * tx).backward()
    return float(tx.grad), float(ty.grad)


def reused_by_engine(x, y):
    x, y = PackageValue(x), PackageValue(y)
    (x * y + x * x).backward()
    return x.grad, y.grad


def local_by_engine(op):
    def local(x, y=None):
        u = PackageValue(x)
        if op == "tanh":
            u.tanh().backward()
            return u.grad
        v = PackageValue(y)
        {"+": lambda: u + v, "-": lambda: u - v, "*": lambda: u * v, "/": lambda: u / v}[
            op
        ]().backward()
        return u.grad, v.grad

    return local


def local_by_central_difference(x, y):
    """d(x / y) by the package's central difference."""
    return (central_difference(lambda t: t / y, x), central_difference(lambda t: x / t, y))


def reused_by_wide_central_difference(x, y):
    """A central difference with h = 1: exact for a quadratic, up to round-off."""

    def loss(x, y):
        return x * y + x * x

    return ((loss(x + 1, y) - loss(x - 1, y)) / 2, (loss(x, y + 1) - loss(x, y - 1)) / 2)


SHORTCUTS = [
    ("02.forward_pass", forward_by_engine, "the answer used backprop_course.autograd"),
    (
        "02.topological_order",
        lambda graph: list(TopologicalSorter(graph).static_order()),
        "graphlib",
    ),
    ("02.local_derivatives", {op: local_by_engine(op) for op in LOCAL_GRADS}, "without autograd"),
    (
        "02.local_derivatives",
        local_with(div=local_by_central_difference),
        "gradcheck.central_difference",
    ),
    ("02.backward_by_hand", backward_by_engine, "the answer used backprop_course.autograd"),
    ("02.backward_by_hand", backward_by_differences, "close but not exact"),
    ("02.reused_node", reused_by_engine, "by hand, without autograd"),
    # exact at ordinary sizes (L is quadratic), but not at the large ones the check adds
    ("02.reused_node", reused_by_wide_central_difference, "close but not exact"),
    ("02.reused_node", reused_by_torch, "the answer called torch.Tensor.backward"),
]

ALSO_CORRECT = [
    (
        "02.forward_pass",
        lambda a, b, c, f: dict(
            zip("edgL", (a * b, c - a * b, (c - a * b) * f, math.tanh((c - a * b) * f)))
        ),
    ),
    ("02.reused_node", lambda x, y: [2 * x + y, x]),
    ("02.count_passes", lambda n, m: [n, m]),
]

STUBS = {"02.local_derivatives": {op: (lambda *args: ...) for op in LOCAL_GRADS}}

globals().update(
    lesson_feedback_tests(
        "02",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        several=True,
        stubs=STUBS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        ruled=["02.local_derivatives", "02.backward_by_hand", "02.reused_node"],
    )
)
