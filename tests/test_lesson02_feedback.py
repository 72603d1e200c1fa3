"""Lesson 02: correct answers pass, and typical wrong answers get a specific reason."""

from __future__ import annotations

import math

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
    ("02.count_passes", lambda n, m: (m, n), "swapped"),
    ("02.count_passes", lambda n, m: (n, 1), "m outputs take m passes"),
    ("02.count_passes", lambda n, m: (1, m), "n inputs take n passes"),
    ("02.count_passes", lambda n, m: n, "two numbers"),
]


STUBS = {"02.local_derivatives": {op: (lambda *args: ...) for op in LOCAL_GRADS}}

globals().update(
    lesson_feedback_tests("02", CORRECT_ANSWERS, WRONG_ANSWERS, several=True, stubs=STUBS)
)
