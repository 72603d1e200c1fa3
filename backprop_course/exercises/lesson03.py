"""Lesson 03, a scalar autograd engine.

The learner's engine lives in the notebook, so every check here works on
whatever the learner wrote: plain functions on numbers (the local backward
rules), functions on graph nodes (``topological_order``, ``backward``) and the
learner's whole ``Value`` class, each compared with the package's reference
engine :class:`backprop_course.autograd.Value` on fresh random graphs.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np

from backprop_course.autograd import Value as Reference
from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_choice,
    assert_close,
    call,
    expect_mapping,
    is_stub,
    run_probe,
    signed,
)
from backprop_course.exercises import exercise
from backprop_course.exercises._graphs import (
    TWO_PATHS,
    Node,
    Program,
    bare_copy,
    bounded_dag,
    deep_chain,
    deep_chain_length,
    deep_graph,
    deep_reference,
    probe_every_op,
    reachable,
    simulated_grads,
    twice,
    two_paths,
)
from backprop_course.rules import call_under_rules, probe_under_rules, refuse_reference


def _two_numbers(got, name: str) -> None:
    if isinstance(got, (str, bytes, Mapping)) or np.ndim(got) != 1 or np.size(got) != 2:
        raise Wrong(f"{name} should return two numbers (grad_a, grad_b), got {got!r}")


def _recursion_message(what: str, depth: int) -> str:
    return (
        f"{what} raised RecursionError on a graph {depth} nodes deep: a recursive "
        f"depth-first search needs one Python stack frame per level, and Python allows about "
        f"{sys.getrecursionlimit()}. Use an explicit stack (a list you append to and pop from) "
        f"instead of recursion"
    )


# The package's engine is off limits in every answer of this lesson: it would do the work.
_ENGINE = ("backprop_course.autograd",)
_OWN_RULES = (
    "this exercise asks for your own code, not the course's engine (backprop_course.autograd)"
)


def _call_ruled(function, *args, **kwargs):
    """``call``, with the package's engine forbidden while the learner's code runs."""
    return call_under_rules(
        function, *args, autograd=True, forbid=_ENGINE, rule=_OWN_RULES, **kwargs
    )


def _call_deep(function, *args, what: str | None = None, depth: int):
    """``_call_ruled``, but a RecursionError gets its own explanation."""
    try:
        return _call_ruled(function, *args, what=what)
    except Wrong as wrong:
        if isinstance(wrong.__cause__, RecursionError):
            raise Wrong(_recursion_message(what, depth)) from None
        raise


_NO_ENGINE_METHOD = (
    "this exercise asks for your own backward pass: the test graphs are bare nodes (data, "
    "grad, _prev and _local) with no methods, so the pass cannot be handed to an engine's "
    "backward(); walk the nodes yourself"
)


def _call_own(function, *args, what: str | None = None, depth: int):
    """The learner's function on bare nodes, with the package's engine forbidden."""
    try:
        return _call_deep(function, *args, what=what, depth=depth)
    except Wrong as wrong:
        cause = wrong.__cause__
        if isinstance(cause, AttributeError) and "backward" in str(cause):
            raise Wrong(_NO_ENGINE_METHOD) from None
        raise


# ---------------------------------------------------------------- local backward rules


@exercise(
    "03.mul_backward",
    title="The backward step of a multiplication",
    points=2,
    answer="mul_backward",
    hints=(
        "Each input's gradient is (local derivative) * (gradient arriving at the output).",
        "For out = a * b the local derivatives are d(out)/da = b and d(out)/db = a: "
        "each input gets the OTHER input.",
        "return b * out_grad, a * out_grad",
    ),
)
def _mul_backward(answer, rng):
    for _ in range(8):
        a, b, g = signed(rng, 0.2, 3), signed(rng, 0.2, 3), signed(rng, 0.2, 3)
        got = _call_ruled(answer, a, b, g)
        _two_numbers(got, "mul_backward")
        assert_close(
            got,
            (b * g, a * g),
            name="(grad_a, grad_b)",
            rtol=1e-9,
            atol=1e-12,
            context=f"for a={a:.4g}, b={b:.4g}, out_grad={g:.4g}",
            mistakes={
                "swapped: d(a * b)/da is b (the other input), so grad_a = b * out_grad": (
                    a * g,
                    b * g,
                ),
                "forgot the upstream gradient: multiply each local derivative by out_grad": (
                    b,
                    a,
                ),
                "forgot the local derivative: only addition passes out_grad through "
                "unchanged; a product scales it by the other input": (g, g),
                "swapped, and forgot to multiply by out_grad": (a, b),
            },
        )


@exercise(
    "03.tanh_backward",
    title="The backward step of tanh, from the saved output",
    points=1,
    answer="tanh_backward",
    hints=(
        "d tanh(x)/dx can be written with the OUTPUT t = tanh(x) alone, which the forward "
        "pass already computed.",
        "d tanh(x)/dx = 1 - tanh(x)**2 = 1 - t**2; then multiply by the gradient arriving "
        "at the output.",
        "return (1 - t**2) * out_grad",
    ),
)
def _tanh_backward(answer, rng):
    for _ in range(8):
        x, g = signed(rng, 0.2, 2.5), signed(rng, 0.2, 3)
        t = math.tanh(x)
        got = _call_ruled(answer, x, t, g)
        assert_close(
            got,
            (1 - t**2) * g,
            name="tanh_backward(x, t, out_grad)",
            rtol=1e-9,
            atol=1e-12,
            context=f"for x={x:.4g} (t = tanh(x) = {t:.4g}), out_grad={g:.4g}",
            mistakes={
                "used the input instead of the output: the local derivative is 1 - t**2 "
                "with t = tanh(x), not 1 - x**2": (1 - x**2) * g,
                "forgot to square t: 1 - t**2": (1 - t) * g,
                "forgot the upstream gradient: multiply the local derivative by out_grad": 1 - t**2,
                "sign error: the local derivative is 1 - t**2, not t**2 - 1": (t**2 - 1) * g,
                "applied tanh twice: t is already tanh(x), so use 1 - t**2, not 1 - tanh(t)**2": (
                    1 - math.tanh(t) ** 2
                )
                * g,
            },
        )


@exercise(
    "03.pow_backward",
    title="The backward step of x ** n",
    points=2,
    answer="pow_backward",
    hints=(
        "The power rule: d(x**n)/dx = n * x**(n - 1), for any fixed number n.",
        "Multiply that local derivative by the gradient arriving at the output.",
        "return n * x ** (n - 1) * out_grad",
    ),
)
def _pow_backward(answer, rng):
    exponents = [2, 3, -1, 0.5, float(rng.uniform(-2.5, -0.2)), float(rng.uniform(1.2, 3.5))]
    for n in exponents:
        x, g = float(rng.uniform(0.3, 2.5)), signed(rng, 0.2, 3)
        if abs(x - 1) < 0.1:  # x**k barely depends on k near 1
            x += 0.3
        got = _call_ruled(answer, x, n, g)
        assert_close(
            got,
            n * x ** (n - 1) * g,
            name="pow_backward(x, n, out_grad)",
            rtol=1e-9,
            atol=1e-12,
            context=f"for x={x:.4g}, n={n:.4g}, out_grad={g:.4g}",
            mistakes={
                "forgot to lower the exponent: d(x**n)/dx = n * x**(n - 1), not n * x**n": n
                * x**n
                * g,
                "forgot the factor n in n * x**(n - 1)": x ** (n - 1) * g,
                "forgot the upstream gradient: multiply the local derivative by out_grad": n
                * x ** (n - 1),
                "returned the forward value x**n (times out_grad), not its derivative": x**n * g,
            },
        )


# ---------------------------------------------------------------- topological order


def _check_order(got, root, what: str, where: str) -> None:
    if isinstance(got, (str, bytes, Mapping)) or not hasattr(got, "__iter__"):
        raise Wrong(f"{what} should return a list of nodes, got {type(got).__name__}")
    order = list(got)
    nodes = reachable(root)
    known = {id(n) for n in nodes}
    foreign = [x for x in order if id(x) not in known]
    if foreign:
        raise Wrong(
            f"the list contains {foreign[0]!r}, which is not a node of the graph: return the "
            f"node objects themselves{where}"
        )
    counts = Counter(id(x) for x in order)
    repeated = [x for x in order if counts[id(x)] > 1]
    if repeated:
        raise Wrong(
            f"{repeated[0]!r} appears {counts[id(repeated[0])]} times: a reused node (an input "
            f"of several nodes, or twice of one, as in a * a) must appear exactly once. Keep a "
            f"set of visited nodes and skip the ones already in it{where}"
        )
    missing = [n for n in nodes if id(n) not in counts]
    if missing:
        raise Wrong(
            f"{len(missing)} of the {len(nodes)} nodes are missing, e.g. {missing[0]!r}: "
            f"follow every input in _prev of every node, leaves included{where}"
        )
    position = {id(x): i for i, x in enumerate(order)}
    for node in order:
        for child in node._prev:
            if position[id(child)] > position[id(node)]:
                message = (
                    f"wrong order: {node!r} comes before its input {child!r}; a node may only "
                    f"be placed after all of its inputs"
                )
                if order[0] is root:
                    message += (
                        ". Your list starts with the root: return the inputs first and the "
                        "root last (backward() then walks the list in reverse)"
                    )
                raise Wrong(message + where)


@exercise(
    "03.topological_order",
    title="Topological order without recursion",
    points=3,
    answer="topological_order",
    hints=(
        "Return every node behind root exactly once, each after all of its inputs (root last). "
        "A node reused by several others must not be listed twice: remember what you visited.",
        "Recursion would be simplest, but a graph thousands of nodes deep exceeds Python's "
        "recursion limit. Keep your own stack of (node, inputs_done) pairs instead.",
        "stack = [(root, False)]; pop a pair; if inputs_done: append the node to the order; "
        "elif not visited: mark it, push (node, True), then push (child, False) for each child.",
    ),
)
def _topological(answer, rng):
    def run(nodes, where):
        root = nodes[-1]
        got = _call_deep(answer, root, depth=len(nodes))
        _check_order(got, root, "topological_order", where)

    a, b = Node("a"), Node("b")
    c = Node("c", (a, b))
    d = Node("d", (c, a))
    e = Node("e", (d, d))
    run([a, b, c, d, e], " (for e = d * d with d = c + a and c = a * b)")
    for _ in range(3):
        small = bounded_dag(rng, leaves=3, ops=int(rng.integers(4, 9)))
        run(small, f" (for a random graph of {len(small)} nodes with reused nodes)")
    for _ in range(3):
        medium = bounded_dag(rng, leaves=6, ops=int(rng.integers(40, 120)))
        run(medium, f" (for a random graph of {len(medium)} nodes with reused nodes)")
    deep = deep_graph(rng, deep_chain_length())
    run(deep, f" (for a chain {len(deep)} nodes deep)")


_UNSEEDED = (
    "the root's gradient was never set to 1: the backward pass starts from d(root)/d(root) = 1"
)
_FORWARD_WALK = (
    "the nodes were walked in topological order (inputs first); walk it in REVERSE, so a "
    "node's gradient is complete before it is passed on"
)


def _check_not_all_zero(
    got: list[float], expected: list[float], root_grad, where: str, deep: bool = True, also=""
) -> None:
    """All-zero leaf gradients: the root was never seeded, or (in a graph deeper than one op)
    the nodes were walked inputs first, so no gradient had arrived when it was passed on."""
    if any(g != 0 for g in got) or all(e == 0 for e in expected):
        return
    try:
        seeded = math.isclose(float(root_grad), 1.0)
    except (TypeError, ValueError):
        seeded = False
    if not seeded:
        raise Wrong(f"every leaf gradient is 0{where}: {_UNSEEDED}{also}")
    if deep:
        raise Wrong(f"every leaf gradient is 0{where}: {_FORWARD_WALK}")


def _backward_mistakes(root, leaves) -> dict[str, list[float]]:
    return {
        "= instead of +=: a node used more than once keeps only the last contribution "
        "instead of their sum": simulated_grads(root, leaves, assign=True),
        _FORWARD_WALK: simulated_grads(root, leaves, forward=True),
        "forgot the local derivative (node._local): each input gets local * node.grad": (
            simulated_grads(root, leaves, local=False)
        ),
        "forgot the upstream gradient (node.grad): each input gets local * node.grad": (
            simulated_grads(root, leaves, upstream=False)
        ),
    }


# ---------------------------------------------------------------- backward


def _reference_leaf_grads(build) -> list[float]:
    leaves, root = build()
    root.backward()
    return [leaf.grad for leaf in leaves]


def probe_deep_chain(cls, weights: list[float], depth: int) -> dict:
    """Build the deep chain with the learner's class, run backward(), report plain data.

    A probe (see :func:`backprop_course.compare.run_probe`): where the grader checks a
    submission it runs next to the learner's class, so the 10**5 operations of the chain
    are not sent one by one. ``stage`` says how far it got; ``error`` is (type, message).
    """
    try:
        leaves, root = deep_chain(cls, weights, depth)
    except Exception as error:  # the learner's code may raise anything
        return {"stage": "build", "error": (type(error).__name__, str(error)), "grads": None}
    try:
        root.backward()
    except Exception as error:
        return {"stage": "backward", "error": (type(error).__name__, str(error)), "grads": None}
    grads = []
    for leaf in leaves:
        try:
            grads.append(float(leaf.grad))
        except (TypeError, ValueError):
            return {"stage": "grads", "error": ("TypeError", repr(leaf.grad)[:80]), "grads": None}
    return {"stage": "done", "error": None, "grads": grads}


@exercise(
    "03.backward",
    title="The backward pass: reverse topological order and +=",
    points=3,
    answer="backward",
    hints=(
        "Set root.grad = 1, then visit the nodes from the root back to the inputs "
        "(reversed topological order).",
        "Each node hands its gradient to its inputs: for child, local in "
        "zip(node._prev, node._local): the child's gradient grows by local * node.grad.",
        "Accumulate with += (a node used twice gets both contributions), never =.",
    ),
)
def _backward(answer, rng):
    # The learner's function gets bare copies of the graphs: nodes with data, grad, _prev
    # and _local but no backward() of their own, so the pass must be the learner's.
    def run(build, where, depth=50):
        leaves, root = build()
        root.backward()
        expected = [leaf.grad for leaf in leaves]
        bare_leaves, bare_root = bare_copy(leaves, root)
        _call_own(answer, bare_root, depth=depth)  # it works in place
        got = [_as_float(leaf.grad, "a leaf's grad") for leaf in bare_leaves]
        _check_not_all_zero(got, expected, bare_root.grad, f" {where}")
        names = ", ".join(f"x{k}.grad" for k in range(len(leaves)))
        assert_close(
            got,
            expected,
            name=f"[{names}]",
            rtol=1e-9,
            atol=1e-12,
            context=where,
            mistakes=_backward_mistakes(root, leaves),
        )
        if not math.isclose(_as_float(bare_root.grad, "root.grad"), 1.0):
            raise Wrong(
                f"root.grad is {bare_root.grad!r} after backward: the pass starts with "
                f"root.grad = 1 (d(root)/d(root)) {where}"
            )

    x = signed(rng, 0.5, 2)
    run(lambda: twice(x, "+"), f"(for y = x0 + x0 with x0={x:.4g})")
    run(lambda: twice(x, "*"), f"(for y = x0 * x0 with x0={x:.4g})")
    x0, x1 = signed(rng, 0.3, 1.5), signed(rng, 0.3, 1.5)
    try:
        run(lambda: two_paths(Reference, x0, x1), f"(for {TWO_PATHS}, x0={x0:.4g}, x1={x1:.4g})")
    except Wrong as wrong:
        raise Wrong(f"{wrong}{'' if 'common mistake' in str(wrong) else _ORDER_ADVICE}") from None
    for _ in range(4):
        program = Program(rng, leaves=3, steps=int(rng.integers(4, 10)))
        run(program.build, f"(for {program})")
    depth = deep_chain_length()
    run(
        deep_reference(rng, depth),
        f"(for a chain v = (v + x[k % 4]) * 0.5, {depth} deep)",
        depth=depth,
    )


_ORDER_ADVICE = (
    ": t gets gradient along two paths, and must have both before it passes its gradient on. "
    "Walk the nodes in reverse topological order (each node after every node that uses it)"
)


# ---------------------------------------------------------------- the whole Value class

# (method, how to call it on values a, b) for finding the stubs that still return ...
_PROBES = (
    ("__add__", lambda a, b: a.__add__(b)),
    ("__mul__", lambda a, b: a.__mul__(b)),
    ("__pow__", lambda a, b: a.__pow__(2)),
    ("tanh", lambda a, b: a.tanh()),
    ("exp", lambda a, b: a.exp()),
    ("relu", lambda a, b: a.relu()),
    ("__neg__", lambda a, b: a.__neg__()),
    ("__sub__", lambda a, b: a.__sub__(b)),
    ("__truediv__", lambda a, b: a.__truediv__(b)),
    ("__radd__", lambda a, b: a.__radd__(2.0)),
    ("__rmul__", lambda a, b: a.__rmul__(2.0)),
    ("__rsub__", lambda a, b: a.__rsub__(2.0)),
    ("__rtruediv__", lambda a, b: a.__rtruediv__(2.0)),
    ("backward", lambda a, b: a.backward()),
)


def _unit_cases(rng) -> list[tuple[str, Callable, float, float, dict, dict]]:
    """(text, f(a, b), a, b, data mistakes, gradient mistakes) for each operation."""
    a, b = signed(rng, 0.3, 2), signed(rng, 0.5, 2)
    p = float(rng.uniform(0.4, 2.0))
    if abs(p - 1) < 0.1:
        p += 0.3
    n = float(rng.choice([2, 3, -1, -2, 0.5]))
    c = round(float(rng.uniform(0.5, 3)), 2)
    t = math.tanh(a)
    neg, pos = -float(rng.uniform(0.2, 2)), float(rng.uniform(0.2, 2))
    cases = [
        ("a + b", lambda x, y: x + y, a, b, {}, {}),
        (
            "a * b",
            lambda x, y: x * y,
            a,
            b,
            {},
            {"swapped local derivatives: d(a * b)/da is b, not a": [a, b]},
        ),
        (
            f"a ** {n:g}",
            lambda x, y: x**n,
            p,
            b,
            {},
            {
                "forgot to lower the exponent: d(a**n)/da = n * a**(n - 1)": [n * p**n, 0.0],
                "forgot the factor n in n * a**(n - 1)": [p ** (n - 1), 0.0],
            },
        ),
        (
            "a.tanh()",
            lambda x, y: x.tanh(),
            a,
            b,
            {},
            {
                "used the input instead of the output for tanh: the local derivative is "
                "1 - t**2 with t = tanh(a), not 1 - a**2": [1 - a**2, 0.0],
                "forgot to square: tanh's local derivative is 1 - t**2": [1 - t, 0.0],
            },
        ),
        (
            "a.exp()",
            lambda x, y: x.exp(),
            a,
            b,
            {},
            {
                "the local derivative of exp is exp(a) itself (the output), not a": [a, 0.0],
                "the local derivative of exp is exp(a) itself, not 1": [1.0, 0.0],
            },
        ),
        (
            "a.relu()",
            lambda x, y: x.relu(),
            pos,
            b,
            {},
            {"relu's local derivative is 1 where its input is positive": [0.0, 0.0]},
        ),
        (
            "a.relu()",
            lambda x, y: x.relu(),
            neg,
            b,
            {"relu(a) = max(a, 0) is 0 for a negative a": neg},
            {"relu passes no gradient where its input is negative (local derivative 0)": [1.0, 0]},
        ),
        ("-a", lambda x, y: -x, a, b, {}, {"sign error: d(-a)/da = -1": [1.0, 0.0]}),
        (
            "a - b",
            lambda x, y: x - y,
            a,
            b,
            {"computed b - a": b - a},
            {"sign error: d(a - b)/db = -1": [1.0, 1.0]},
        ),
        (
            "a / b",
            lambda x, y: x / y,
            a,
            b,
            {"computed b / a": b / a},
            {
                "sign error: d(a / b)/db = -a / b**2": [1 / b, a / b**2],
                "d(a / b)/da is 1 / b, not b": [b, -a / b**2],
            },
        ),
        (f"a + {c:g}", lambda x, y: x + c, a, b, {}, {}),
        (f"a * {c:g}", lambda x, y: x * c, a, b, {}, {}),
        (f"{c:g} + a", lambda x, y: c + x, a, b, {}, {}),
        (
            f"{c:g} * a",
            lambda x, y: c * x,
            a,
            b,
            {},
            {"the gradient of c * a is c (the number), not a": [a, 0.0]},
        ),
        (
            f"{c:g} - a",
            lambda x, y: c - x,
            a,
            b,
            {f"computed a - {c:g}: in __rsub__, self is a and other is {c:g}": a - c},
            {"sign error: d(c - a)/da = -1": [1.0, 0.0]},
        ),
        (
            f"{c:g} / a",
            lambda x, y: c / x,
            a,
            b,
            {f"computed a / {c:g}: in __rtruediv__, self is a and other is {c:g}": a / c},
            {"sign error: d(c / a)/da = -c / a**2": [c / a**2, 0.0]},
        ),
        (
            "a + a",
            lambda x, y: x + x,
            a,
            b,
            {},
            {"= instead of +=: a is used twice, so its two contributions must be added": [1, 0]},
        ),
        (
            "a * a",
            lambda x, y: x * x,
            a,
            b,
            {},
            {"= instead of +=: a is used twice, so its two contributions must be added": [a, 0]},
        ),
        (
            "(a * b) + a",
            lambda x, y: (x * y) + x,
            a,
            b,
            {},
            {
                "= instead of +=: a is used twice (in a * b and in the +), so its two "
                "contributions must be added": [b, a],
                "= instead of +=: a is used twice, and only its contribution through the + "
                "was kept": [1.0, a],
            },
        ),
    ]
    return cases


_UNFINISHED = (
    " (if your backward() calls your function from exercise 03.backward, finish that one first)"
)


def _attempt(text: str, function, *args):
    """function(*args); if the learner's code raises, say which expression did it."""
    try:
        return function(*args)
    except RecursionError:
        raise Wrong(
            f"{text} raised RecursionError: a method keeps calling itself. For example "
            f"`other - self` inside __rsub__ calls __rsub__ again; write it with self on the "
            f"left, as (-self) + other"
        ) from None
    except Exception as error:  # the learner's code may raise anything
        raise Wrong(f"{text} raised {type(error).__name__}: {error}") from error


def _find_stubs(cls) -> None:
    a = _attempt("Value(1.5)", cls, 1.5)
    stubs = []
    for method, probe in _PROBES:
        if not hasattr(a, method):
            raise Wrong(f"your Value has no method {method}: the check uses every operation")
        try:
            result = probe(cls(1.5), cls(-0.5))
        except Exception:  # a crash is judged later, with the expression that caused it
            continue
        if is_stub(result):
            stubs.append(method)
    if len(stubs) == len(_PROBES):
        raise NotAttempted
    if stubs:
        raise Wrong(
            f"these methods still return the placeholder `...` (directly or through a method "
            f"they call): {', '.join(stubs)}. Fill them in: the check tests every operation"
        )


def _check_engine_unused(cls, rng) -> None:
    """Every operation and backward() of the learner's class, with the package's engine
    watched: a class that hands its work to backprop_course.autograd.Value is refused.
    Other failures are left to the detailed checks that follow."""
    a, b, c = signed(rng, 0.3, 1.5), signed(rng, 0.5, 1.5), signed(rng, 0.5, 2.0)
    try:
        probe_under_rules(
            probe_every_op, cls, a, b, c, autograd=True, forbid=_ENGINE, rule=_OWN_RULES
        )
    except Wrong as wrong:
        if str(wrong).startswith(_OWN_RULES):
            raise
    except NotAttempted:
        pass


def _as_float(value, text: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise Wrong(f"{text} is {value!r}, not a number") from error


def _check_value_result(out, text: str):
    if not hasattr(out, "data") or not hasattr(out, "grad"):
        raise Wrong(f"{text} returned {out!r}, expected a Value (with .data and .grad)")
    return out


@exercise(
    "03.value_class",
    title="Your Value class, against the reference engine",
    points=5,
    answer="Value",
    hints=(
        "Each op builds Value(result, (inputs...), op_name, (local derivatives...)); derived ops "
        "(-, /, reflected ops) can be written with the others: a - b is a + (-b).",
        "Reflected ops handle a plain number on the left: 2 * v calls v.__rmul__(2), 2 - v "
        "calls v.__rsub__(2), where self is v and other is 2.",
        "backward(): root.grad = 1, then for each node in reversed topological order, "
        "child.grad += local * node.grad for each (child, local) pair. Use an explicit stack.",
    ),
)
def _value_class(cls, rng):
    if is_stub(cls):
        raise NotAttempted
    if not callable(cls):
        raise Wrong(f"expected the Value class, got {type(cls).__name__}")
    refuse_reference(cls, _ENGINE, rule=_OWN_RULES)
    _find_stubs(cls)
    _check_engine_unused(cls, rng)
    for text, build, a, b, data_mistakes, grad_mistakes in _unit_cases(rng):
        where = f"for a={a:.4g}, b={b:.4g}"
        x, y = cls(a), cls(b)
        out = _check_value_result(_attempt(text, build, x, y), text)
        expected = build(Reference(a), Reference(b))
        assert_close(
            _as_float(out.data, f"({text}).data"),
            expected.data,
            name=f"({text}).data",
            rtol=1e-9,
            atol=1e-12,
            context=where,
            mistakes=data_mistakes,
        )
        _attempt(f"({text}).backward()", out.backward)
        ra, rb = Reference(a), Reference(b)
        ref_out = build(ra, rb)
        walked_forward = simulated_grads(ref_out, [ra, rb], forward=True)
        ref_out.backward()
        got = [_as_float(x.grad, "a.grad"), _as_float(y.grad, "b.grad")]
        name = f"[a.grad, b.grad] after ({text}).backward()"
        _check_not_all_zero(
            got, [ra.grad, rb.grad], out.grad, f" in {name}", deep=False, also=_UNFINISHED
        )
        assert_close(
            got,
            [ra.grad, rb.grad],
            name=name,
            rtol=1e-9,
            atol=1e-12,
            context=where,
            mistakes={**grad_mistakes, _FORWARD_WALK: walked_forward},
        )
        if not math.isclose(_as_float(out.grad, "out.grad"), 1.0):
            raise Wrong(
                f"after out = {text}; out.backward(), out.grad is {out.grad!r}: backward() "
                f"must start with self.grad = 1"
            )
    x0, x1 = signed(rng, 0.3, 1.5), signed(rng, 0.3, 1.5)
    leaves, root = _attempt(TWO_PATHS, two_paths, cls, x0, x1)
    _attempt("y.backward()", root.backward)
    ref_leaves, ref_root = two_paths(Reference, x0, x1)
    ref_root.backward()
    got = [_as_float(leaf.grad, "a leaf's grad") for leaf in leaves]
    try:
        assert_close(
            got,
            [leaf.grad for leaf in ref_leaves],
            name="[x0.grad, x1.grad]",
            rtol=1e-9,
            atol=1e-12,
            context=f"for {TWO_PATHS} with x0={x0:.4g}, x1={x1:.4g}",
        )
    except Wrong as wrong:
        raise Wrong(f"{wrong}{_ORDER_ADVICE}") from None
    for _ in range(6):
        program = Program(rng, leaves=3, steps=int(rng.integers(4, 10)))
        leaves, root = _attempt(str(program), program.build, cls)
        ref_leaves, ref_root = program.build(Reference)
        where = f"for {program}"
        assert_close(
            _as_float(root.data, "root.data"),
            ref_root.data,
            name="the root's data",
            rtol=1e-9,
            atol=1e-12,
            context=where,
        )
        _attempt("root.backward()", root.backward)
        ref_root.backward()
        names = ", ".join(f"x{k}.grad" for k in range(len(leaves)))
        got = [_as_float(leaf.grad, "a leaf's grad") for leaf in leaves]
        _check_not_all_zero(got, [leaf.grad for leaf in ref_leaves], root.grad, f" {where}")
        mistakes = _backward_mistakes(ref_root, ref_leaves)
        try:
            assert_close(
                got,
                [leaf.grad for leaf in ref_leaves],
                name=f"[{names}]",
                rtol=1e-9,
                atol=1e-12,
                context=where,
                mistakes={k: v for k, v in mistakes.items() if "+=" in k},
            )
        except Wrong as wrong:
            if "common mistake" in str(wrong):
                raise
            raise Wrong(
                f"{wrong}. Every operation passed on its own, so look at how backward() orders "
                f"the nodes and accumulates their gradients"
            ) from None
    depth = deep_chain_length()
    build = deep_reference(rng, depth)
    report = run_probe(probe_deep_chain, cls, build.weights, depth, what="your Value class")
    kind, message = report["error"] or ("", "")
    if report["stage"] == "build":
        raise Wrong(f"building a chain {depth} deep raised {kind}: {message}")
    if report["stage"] == "backward" and kind == "RecursionError":
        raise Wrong(_recursion_message("backward()", depth))
    if report["stage"] == "backward":
        raise Wrong(f"backward() on a chain {depth} deep raised {kind}: {message}")
    if report["stage"] == "grads":
        raise Wrong(f"a leaf's grad is {message}, not a number")
    assert_close(
        report["grads"],
        _reference_leaf_grads(build),
        name="[x0.grad, x1.grad, x2.grad, x3.grad]",
        rtol=1e-8,
        atol=1e-12,
        context=f"for the chain v = (v + x[k % 4]) * 0.5, {depth} deep",
    )


# ---------------------------------------------------------------- why backprop matters


@exercise(
    "03.finite_difference_evaluations",
    title="The price of a gradient by finite differences",
    points=1,
    answer="finite_difference_evaluations",
    hints=(
        "A finite difference nudges ONE parameter at a time, so a gradient of P parameters "
        "needs one difference per parameter.",
        "Central: f(w + h e_i) and f(w - h e_i) for every i. Forward: f(w + h e_i) for every i, "
        "plus f(w) once, shared by all the differences.",
        "central: 2 * P; forward: P + 1.",
    ),
)
def _fd_evaluations(answer, rng):
    sizes = [1, 2, *(int(v) for v in rng.integers(3, 1_000_000, size=4))]
    for P in sizes:
        for scheme in ("central", "forward"):
            got = call(answer, P, scheme=scheme)
            expected = 2 * P if scheme == "central" else P + 1
            mistakes = {
                "central": {
                    "one evaluation per parameter, but a central difference evaluates f on both "
                    "sides: f(w + h e_i) and f(w - h e_i)": P,
                    "counted f(w) too: central differences never evaluate the unshifted point": 2
                    * P
                    + 1,
                    "that is the forward-difference count; central differences need two "
                    "evaluations per parameter": P + 1,
                    "the count does not depend on P? Each parameter needs its own pair": 2,
                },
                "forward": {
                    "that is the central-difference count; a forward difference needs "
                    "f(w + h e_i) per parameter plus f(w) once": 2 * P,
                    "forgot f(w): every forward difference subtracts it (computed once, shared)": P,
                },
            }[scheme]
            assert_close(
                got,
                expected,
                name="the number of evaluations",
                rtol=0,
                atol=1e-9,
                context=f"for P={P}, scheme={scheme!r}",
                mistakes={k: v for k, v in mistakes.items() if v != expected},
            )


_METHODS = {
    "gradient descent": "gradient descent with backprop gradients",
    "random search": "random search",
    "genetic algorithm": "a genetic algorithm",
}


@exercise(
    "03.scaling",
    title="Reading the cost of a gradient",
    points=2,
    answer="scaling",
    hints=(
        "On log-log axes, time proportional to P**k is a straight line of slope k.",
        "Backprop: one forward pass and one backward pass, each visiting every node once. "
        "Finite differences: 2P forward passes, each of which costs as much as one forward pass.",
        "The forward pass of a sum of P terms costs about P: backprop ~ P (slope 1), finite "
        "differences ~ 2P * P (slope 2).",
    ),
)
def _scaling(answer, rng):
    keys = ("backprop_slope", "finite_difference_slope", "best_at_equal_budget")
    expect_mapping(answer, keys, name="scaling")
    if all(is_stub(answer[k]) for k in keys):
        raise NotAttempted
    why = {
        "backprop_slope": {
            0: "one gradient by backprop is not free of P: the backward pass visits every node "
            "once, so its time grows in proportion to P",
            2: "backprop makes one forward and one backward pass whatever P is; each costs ~P",
        },
        "finite_difference_slope": {
            1: "2P evaluations would give slope 1 only if each evaluation were free of P; but "
            "every evaluation is a whole forward pass, costing ~P itself: 2P * P",
            0: "the number of evaluations grows with P, and so does each one's cost",
        },
    }
    for key, expected in (("backprop_slope", 1), ("finite_difference_slope", 2)):
        value = answer[key]
        if is_stub(value):
            raise Wrong(f"{key} is still the placeholder `...`")
        try:
            value = float(value)
        except (TypeError, ValueError) as error:
            raise Wrong(f"{key} should be a number, got {value!r}") from error
        if abs(value - expected) > 0.3:
            reason = why[key].get(round(value), "count how the time grows when P doubles")
            raise Wrong(f"{key} is {value:g}: {reason}")
    assert_choice(
        answer["best_at_equal_budget"],
        "gradient descent",
        _METHODS,
        name="best_at_equal_budget",
        why={
            "random search": "with many parameters almost every random direction is nearly "
            "useless; the gradient gives the best local direction for the price of ~3 "
            "evaluations",
            "genetic algorithm": "selection and mutation search blindly too, and a whole "
            "population costs one evaluation per member per generation",
        },
    )
