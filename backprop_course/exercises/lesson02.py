"""Lesson 02, computational graphs: forward pass, local derivatives, backward by hand.

Most exercises use one small graph, the *exercise graph*::

    e = a * b
    d = c - e
    g = d * f
    L = tanh(g)

Checks draw fresh inputs with magnitudes away from 0 (so that a slip such as a
missing factor always changes the answer) and small enough that tanh is not
saturated (so that its local derivative 1 - L**2 is not close to 0).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_close,
    call,
    expect_mapping,
    is_stub,
    signed,
)
from backprop_course.exercises import exercise
from backprop_course.rules import BY_HAND, OWN_CODE, call_under_rules

# ---------------------------------------------------------------- the exercise graph


def exercise_graph_values(a: float, b: float, c: float, f: float) -> dict[str, float]:
    """Every intermediate value of the exercise graph, in topological order."""
    e = a * b
    d = c - e
    g = d * f
    return {"e": e, "d": d, "g": g, "L": math.tanh(g)}


def exercise_graph_grads(a: float, b: float, c: float, f: float) -> dict[str, float]:
    """dL/d(node) for every node of the exercise graph, from the output back."""
    v = exercise_graph_values(a, b, c, f)
    grads = {"L": 1.0}
    grads["g"] = (1 - v["L"] ** 2) * grads["L"]
    grads["d"] = f * grads["g"]
    grads["f"] = v["d"] * grads["g"]
    grads["e"] = -1.0 * grads["d"]
    grads["c"] = 1.0 * grads["d"]
    grads["a"] = b * grads["e"]
    grads["b"] = a * grads["e"]
    return grads


# The course's engine would do these exercises' work (the exercise notebook even builds the
# exercise graph with it, to draw it), and gradcheck's finite differences would stand in for
# the backward pass by hand: both are off limits while the learner's code runs.
_ENGINE = ("backprop_course.autograd",)
_TOOLS = ("backprop_course.autograd", "backprop_course.gradcheck")
_OWN_SORT = (
    "this exercise asks for your own topological sort, not a library's (graphlib) or the "
    "course's engine"
)
_BY_HAND_RTOL = 1e-12
_LOOKS_NUMERIC = (
    f"{BY_HAND}; your answer is close but not exact, as a finite difference would be: "
    "multiply the local derivatives instead"
)


def _assert_by_hand(got, expected, **kwargs) -> None:
    """assert_close at a tolerance no finite difference meets; a near miss says so."""
    try:
        assert_close(got, expected, rtol=_BY_HAND_RTOL, atol=1e-14, **kwargs)
    except Wrong as wrong:
        if "common mistake" in str(wrong) or "float32" in str(wrong):
            raise
        try:
            near = np.allclose(
                np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-5
            )
        except (TypeError, ValueError):
            near = False
        if near:
            raise Wrong(f"{_LOOKS_NUMERIC} ({kwargs.get('name', 'your answer')})") from None
        raise


def _graph_inputs(rng: np.random.Generator, count: int = 6):
    for _ in range(count):
        a, b, c, f = (signed(rng, 0.3, 1.1) for _ in range(4))
        yield a, b, c, f, f"for a={a:.4g}, b={b:.4g}, c={c:.4g}, f={f:.4g}"


def _as_dict(got, what: str, keys: tuple[str, ...]) -> Mapping:
    expect_mapping(got, keys, name=what, advice="give every node")
    if any(is_stub(got[k]) for k in keys):
        raise NotAttempted
    return got


# ---------------------------------------------------------------- 02.forward_pass


@exercise(
    "02.forward_pass",
    title="Forward pass through the exercise graph",
    points=2,
    answer="forward",
    hints=(
        "Evaluate the nodes in the order e, d, g, L: each one needs only nodes computed before it.",
        "Read each line of the graph literally: d = c - e subtracts e FROM c.",
        "e = a * b; d = c - e; g = d * f; L = math.tanh(g); return all four in a dict.",
    ),
)
def _forward(answer, rng):
    keys = ("e", "d", "g", "L")
    for a, b, c, f, where in _graph_inputs(rng):
        got = _as_dict(
            call_under_rules(answer, a, b, c, f, forbid=_ENGINE, rule=OWN_CODE),
            "forward(a, b, c, f)",
            keys,
        )
        v = exercise_graph_values(a, b, c, f)
        mistakes = {
            "e": {"e = a + b; the graph multiplies, e = a * b": a + b},
            "d": {
                "d = e - c; the graph subtracts e from c, d = c - e": v["e"] - c,
                "d = c + e; the graph subtracts, d = c - e": c + v["e"],
            },
            "g": {"g = d + f; the graph multiplies, g = d * f": v["d"] + f},
            "L": {
                "forgot the tanh at the output: L = tanh(g)": v["g"],
                "L = tanh(d); the tanh is applied to g = d * f": math.tanh(v["d"]),
            },
        }
        for key in keys:
            assert_close(
                got[key],
                v[key],
                name=f"the value of node {key}",
                rtol=1e-9,
                atol=1e-12,
                context=where,
                mistakes=mistakes[key],
            )


# ---------------------------------------------------------------- 02.topological_order

# The exercise graph as {node: [its inputs]}, in a deliberately unhelpful key order.
EXERCISE_GRAPH = {
    "L": ["g"],
    "d": ["c", "e"],
    "a": [],
    "g": ["d", "f"],
    "f": [],
    "e": ["a", "b"],
    "c": [],
    "b": [],
}


def _valid_order(order: list, graph: Mapping) -> tuple[str, str] | None:
    """None if every node comes after its inputs, else the first (node, input) that does not."""
    position = {node: i for i, node in enumerate(order)}
    for node in order:
        for parent in graph[node]:
            if position[parent] > position[node]:
                return node, parent
    return None


def _random_dag(rng: np.random.Generator) -> dict[str, list[str]]:
    """A random graph whose key order is never a valid evaluation order."""
    size = int(rng.integers(6, 13))
    names = [str(n) for n in rng.permutation(list("abcdefghijklmnopqrstuvwxyz"))[:size]]
    inputs: dict[str, list[str]] = {}
    leaves = int(rng.integers(2, 4))
    for i, name in enumerate(names):
        if i < leaves:
            inputs[name] = []
        else:
            count = min(i, int(rng.integers(1, 3)))
            # the node just before always feeds in, so the graph is one long chain at least
            chosen = {names[i - 1]} | {names[int(j)] for j in rng.choice(i, size=count)}
            inputs[name] = sorted(chosen)
    while True:
        keys = [names[int(i)] for i in rng.permutation(size)]
        graph = {k: inputs[k] for k in keys}
        if _valid_order(keys, graph) is not None:
            return graph


@exercise(
    "02.topological_order",
    title="An evaluation order (topological sort)",
    points=3,
    answer="topological_order",
    hints=(
        "A node can be evaluated once all of its inputs have been; leaves (no inputs) are ready "
        "at once. Every node must appear exactly once.",
        "Depth-first: to place a node, first place each of its inputs (recursively), then append "
        "the node itself, skipping nodes already placed.",
        "order, placed = [], set(); def visit(n): if n in placed: return; placed.add(n); "
        "for p in graph[n]: visit(p); then order.append(n). Call visit on every key.",
    ),
)
def _topological(answer, rng):
    graphs = [EXERCISE_GRAPH] + [_random_dag(rng) for _ in range(6)]
    for graph in graphs:
        shown = ", ".join(f"{k!r}: {v}" for k, v in graph.items())
        got = call_under_rules(
            answer, copy.deepcopy(graph), forbid=("graphlib", *_ENGINE), rule=_OWN_SORT
        )
        if isinstance(got, (str, bytes, Mapping)) or not hasattr(got, "__iter__"):
            raise Wrong(
                f"topological_order should return a list of node names, got {type(got).__name__}"
            )
        order = list(got)
        where = f" (for the graph {{{shown}}})"
        if not all(isinstance(n, str) for n in order):
            raise Wrong(f"topological_order should return a list of node names (strings){where}")
        unknown = [n for n in order if n not in graph]
        if unknown:
            raise Wrong(f"{unknown[0]!r} is not a node of the graph{where}")
        missing = [n for n in graph if n not in order]
        if missing:
            raise Wrong(
                f"the order misses the node(s) {missing}: every node, leaves included, must "
                f"appear{where}"
            )
        repeated = sorted({n for n in order if order.count(n) > 1})
        if repeated:
            raise Wrong(
                f"node {repeated[0]!r} appears {order.count(repeated[0])} times: each node is "
                f"evaluated exactly once{where}"
            )
        bad = _valid_order(order, graph)
        if bad is None:
            continue
        node, parent = bad
        message = f"wrong topological order: node {node!r} comes before its input {parent!r}"
        if _valid_order(order[::-1], graph) is None:
            message += (
                ". Your order is exactly reversed: outputs first is the order of the BACKWARD "
                "pass; the forward pass needs every input before the node that uses it"
            )
        elif order == list(graph):
            message += ". That is just the order of the dict's keys, which is arbitrary"
        raise Wrong(message + where)


# ---------------------------------------------------------------- 02.local_derivatives

_BINARY_OPS = ("+", "-", "*", "/")
_ALL_OPS = (*_BINARY_OPS, "tanh")


def _local_expected(op: str, x: float, y: float):
    t = math.tanh(x)
    table = {
        "+": ((1.0, 1.0), {"these are the local derivatives of *; for + both are 1": (y, x)}),
        "-": (
            (1.0, -1.0),
            {
                "sign error: d(x - y)/dy = -1": (1.0, 1.0),
                "the two signs are swapped: d(x - y)/dx = +1, d(x - y)/dy = -1": (-1.0, 1.0),
            },
        ),
        "*": (
            (y, x),
            {
                "not swapped: d(x * y)/dx is the OTHER input y, and d(x * y)/dy is x": (x, y),
                "these are the local derivatives of +; for * each input's derivative is the "
                "other input": (1.0, 1.0),
            },
        ),
        "/": (
            (1 / y, -x / y**2),
            {
                "quotient-rule sign slip: d(x / y)/dy = -x / y**2": (1 / y, x / y**2),
                "quotient-rule slip: d(x / y)/dy = -x / y**2 (the x is missing)": (
                    1 / y,
                    -1 / y**2,
                ),
                "quotient-rule slip: d(x / y)/dy = -x / y**2 (y is squared)": (1 / y, -x / y),
                "the two derivatives are swapped": (-x / y**2, 1 / y),
                "d(x / y)/dx is 1 / y, not y": (y, -x / y**2),
            },
        ),
        "tanh": (
            1 - t**2,
            {
                "1 - x**2 uses the input; the local derivative of tanh is 1 - tanh(x)**2": 1 - x**2,
                "tanh is not its own derivative: d tanh(x)/dx = 1 - tanh(x)**2": t,
                "sign error: d tanh(x)/dx = 1 - tanh(x)**2, not 1 + tanh(x)**2": 1 + t**2,
                "sech(x) is not squared: d tanh(x)/dx = sech(x)**2 = 1 - tanh(x)**2": 1
                / math.cosh(x),
            },
        ),
    }
    return table[op]


@exercise(
    "02.local_derivatives",
    title="Local derivatives of +, -, *, / and tanh",
    points=3,
    answer="local_grads",
    hints=(
        "Each function answers: if I nudge one input (the other held fixed), how fast does the "
        "output move? Work them out for out = x + y, x - y, x * y, x / y and tanh(x).",
        "+ passes a nudge through unchanged (1, 1); - flips the sign of the second; for * the "
        "derivative with respect to one input is the OTHER input.",
        "d(x / y)/dx = 1 / y and d(x / y)/dy = -x / y**2; d tanh(x)/dx = 1 - tanh(x)**2.",
    ),
)
def _local(answer, rng):
    expect_mapping(answer, _ALL_OPS, name="local_grads")
    unfinished = []
    for op in _ALL_OPS:
        function = answer[op]
        name = getattr(function, "__name__", "<lambda>")
        name = f"local_grads[{op!r}]" if name == "<lambda>" else name
        try:
            for _ in range(6):
                x, y = signed(rng, 0.3, 2.0), signed(rng, 0.3, 2.0)
                expected, mistakes = _local_expected(op, x, y)
                if op == "tanh":
                    got = call_under_rules(
                        function, x, autograd=True, forbid=_TOOLS, rule=BY_HAND, what=name
                    )
                    if isinstance(got, (tuple, list)) and len(got) == 1:
                        got = got[0]
                    context, shape = f"for x={x:.4g}", "one number, d(out)/dx"
                else:
                    got = call_under_rules(
                        function, x, y, autograd=True, forbid=_TOOLS, rule=BY_HAND, what=name
                    )
                    context, shape = f"for x={x:.4g}, y={y:.4g}", "(d(out)/dx, d(out)/dy)"
                if np.shape(got) != np.shape(expected):
                    raise Wrong(
                        f"{name} for out = {_formula(op)} should return {shape}, got {got!r}"
                    )
                assert_close(
                    got,
                    expected,
                    name=f"{name} (out = {_formula(op)})",
                    rtol=1e-9,
                    atol=1e-12,
                    context=context,
                    mistakes=mistakes,
                )
        except NotAttempted:
            unfinished.append(name)
    if len(unfinished) == len(_ALL_OPS):
        raise NotAttempted
    if unfinished:
        raise Wrong(f"the others are right, but {', '.join(unfinished)} still return `...`")


def _formula(op: str) -> str:
    return "tanh(x)" if op == "tanh" else f"x {op} y"


# ---------------------------------------------------------------- 02.backward_by_hand

# Each node of the exercise graph, in the order the backward pass reaches it, with the
# step that sets its gradient (for feedback: "dL/dg was right, so look at ...").
_BACKWARD_STEPS = (
    ("g", "L = tanh(g)", ("L",)),
    ("d", "g = d * f", ("g",)),
    ("f", "g = d * f", ("g",)),
    ("e", "d = c - e", ("d",)),
    ("c", "d = c - e", ("d",)),
    ("a", "e = a * b", ("e",)),
    ("b", "e = a * b", ("e",)),
)


@exercise(
    "02.backward_by_hand",
    title="Backward pass by hand through the exercise graph",
    points=4,
    answer="backward",
    hints=(
        "Start at the output with dL/dL = 1 and walk back: each node's gradient is its "
        "consumer's gradient times the local derivative of that consumer's op.",
        "Order: g, then d and f, then e and c, then a and b. tanh: local derivative 1 - L**2; "
        "*: the other input; d = c - e: +1 for c and -1 for e.",
        "dg = 1 - L**2; dd = f * dg; df = d * dg; de = -dd; dc = dd; da = b * de; db = a * de.",
    ),
)
def _backward(answer, rng):
    keys = tuple(step[0] for step in _BACKWARD_STEPS)
    for a, b, c, f, where in _graph_inputs(rng):
        got = _as_dict(
            call_under_rules(answer, a, b, c, f, autograd=True, forbid=_TOOLS, rule=BY_HAND),
            "backward(a, b, c, f)",
            keys,
        )
        v = exercise_graph_values(a, b, c, f)
        grad = exercise_graph_grads(a, b, c, f)
        dg, dd, de = grad["g"], grad["d"], grad["e"]
        forgot = "forgot the local derivative"
        swap = "did not swap the inputs of *"
        mistakes = {
            "g": {
                f"{forgot} of tanh: dL/dg = (1 - L**2) * dL/dL": 1.0,
                "used 1 - g**2; the derivative of tanh(g) is 1 - tanh(g)**2 = 1 - L**2": 1
                - v["g"] ** 2,
            },
            "d": {
                f"{forgot} of g = d * f: the upstream dL/dg passed through * unchanged; "
                "multiply it by f": dg,
                f"{swap}: dL/dd = f * dL/dg, not d * dL/dg": v["d"] * dg,
            },
            "f": {
                f"{forgot} of g = d * f: the upstream dL/dg passed through * unchanged; "
                "multiply it by d": dg,
                f"{swap}: dL/df = d * dL/dg, not f * dL/dg": f * dg,
            },
            "e": {"sign error: d = c - e, so dd/de = -1 and dL/de = -dL/dd": dd},
            "c": {"sign error: d = c - e, so dd/dc = +1 and dL/dc = +dL/dd": -dd},
            "a": {
                f"{forgot} of e = a * b: the upstream dL/de passed through * unchanged; "
                "multiply it by b": de,
                f"{swap}: dL/da = b * dL/de, not a * dL/de": a * de,
            },
            "b": {
                f"{forgot} of e = a * b: the upstream dL/de passed through * unchanged; "
                "multiply it by a": de,
                f"{swap}: dL/db = a * dL/de, not b * dL/de": b * de,
            },
        }
        for node, step, upstream in _BACKWARD_STEPS:
            try:
                _assert_by_hand(
                    got[node],
                    grad[node],
                    name=f"dL/d{node} (the key {node!r})",
                    context=where,
                    mistakes=mistakes[node],
                )
            except Wrong as wrong:
                if upstream == ("L",):
                    where_next = f"This is the first step back, through {step}, from dL/dL = 1"
                else:
                    right = " and ".join(f"dL/d{u}" for u in upstream)
                    where_next = f"{right} is right, so look at the step through {step}"
                raise Wrong(f"{wrong}. ({where_next}.)") from None


# ---------------------------------------------------------------- 02.reused_node


@exercise(
    "02.reused_node",
    title="A node used more than once: L = x * y + x * x",
    points=3,
    answer="grad_reused",
    hints=(
        "x feeds the graph three times: once into x * y and twice into x * x (both of its "
        "inputs). A nudge to x travels along every one of those edges.",
        "The multivariate chain rule: dL/dx is the SUM of the contributions of every use, so "
        "accumulate with += instead of overwriting with =.",
        "From x * y: y. From x * x: x (first input) + x (second input). "
        "So dL/dx = y + 2x and dL/dy = x.",
    ),
)
def _reused(answer, rng):
    # L is a quadratic, so a central difference with a large step (h = 1) is exact at
    # ordinary sizes: the last two cases are large, where its round-off shows.
    for case in range(8):
        scale = 1.0 if case < 6 else 10 ** rng.uniform(6, 7)
        x, y = scale * signed(rng, 0.4, 2.0), scale * signed(rng, 0.4, 2.0)
        if abs(y - x) < 0.2 * scale or abs(y + x) < 0.2 * scale:
            y += 0.5 * scale
        got = call_under_rules(answer, x, y, autograd=True, forbid=_TOOLS, rule=BY_HAND)
        if isinstance(got, Mapping) or np.ndim(got) != 1 or np.size(got) != 2:
            raise Wrong(f"grad_reused should return two numbers (dL/dx, dL/dy), got {got!r}")
        _assert_by_hand(
            got,
            (y + 2 * x, x),
            name="(dL/dx, dL/dy)",
            context=f"for x={x:.4g}, y={y:.4g}",
            mistakes={
                "= instead of +=: only the use of x in x * y counted, the two uses in x * x "
                "were overwritten": (y, x),
                "= instead of +=: only the uses of x in x * x counted; x * y was lost": (2 * x, x),
                "= instead of +=: x * x counted once, but x is BOTH of its inputs, so it gets "
                "x from each (2x in all)": (y + x, x),
                "= instead of +=: only the last use of x counted": (x, x),
                "the two gradients are swapped": (x, y + 2 * x),
                "dL/dy: did not swap the inputs of *: dL/dy = x, not y": (y + 2 * x, y),
            },
        )


# ---------------------------------------------------------------- 02.count_passes


@exercise(
    "02.count_passes",
    title="Counting passes: forward mode vs reverse mode",
    points=2,
    answer="passes",
    hints=(
        "The full gradient information of f: R^n -> R^m is the m x n Jacobian. One pass of "
        "either mode gives one slice of it.",
        "A forward-mode pass pushes d/d(one input) forward and fills one COLUMN; a reverse-mode "
        "pass pulls d(one output)/d(everything) back and fills one ROW.",
        "Forward mode needs n passes (one per input), reverse mode m passes (one per output).",
    ),
)
def _passes(answer, rng):
    cases = [(1, 1), (3, 1), (1, 5), (1_000_000, 1)]
    while len(cases) < 10:
        n, m = (int(v) for v in rng.integers(2, 50, size=2))
        if n != m:
            cases.append((n, m))
    for n, m in cases:
        got = call(answer, n, m)
        if isinstance(got, Mapping) or np.ndim(got) != 1 or np.size(got) != 2:
            raise Wrong(f"passes should return two numbers (forward, reverse), got {got!r}")
        mistakes = {
            "swapped: forward mode takes one pass per INPUT, reverse mode one per OUTPUT": (m, n),
            "reverse mode needs one pass per output: m outputs take m passes, not 1": (n, 1),
            "forward mode needs one pass per input: n inputs take n passes, not 1": (1, m),
            "a pass gives a whole column (forward) or row (reverse) of the Jacobian, not one "
            "entry": (n * m, n * m),
        }
        assert_close(
            got,
            (n, m),
            name="(forward passes, reverse passes)",
            rtol=0,
            atol=1e-9,
            context=f"for n={n} inputs and m={m} outputs",
            mistakes={k: v for k, v in mistakes.items() if v != (n, m)},
        )
