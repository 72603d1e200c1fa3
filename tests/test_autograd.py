"""autograd.Value: values and gradients match torch in float64, at any depth."""

from __future__ import annotations

import math
import random
import time

import pytest
import torch

from backprop_course.autograd import Value

UNARY = {
    "relu": (lambda v: v.relu(), torch.relu),
    "tanh": (lambda v: v.tanh(), torch.tanh),
    "exp": (lambda v: v.exp(), torch.exp),
    "sigmoid": (lambda v: v.sigmoid(), torch.sigmoid),
    "log": (lambda v: (v * v + 0.5).log(), lambda t: torch.log(t * t + 0.5)),
    "neg": (lambda v: -v, lambda t: -t),
    "pow": (lambda v: (v * v + 1) ** 1.5, lambda t: (t * t + 1) ** 1.5),
    "inv": (lambda v: 1 / (v * v + 1), lambda t: 1 / (t * t + 1)),
}
BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / (b * b + 1),
    "r+": lambda a, b: 2.5 + a,
    "r-": lambda a, b: 1.5 - b,
    "r*": lambda a, b: -3 * a,
    "r/": lambda a, b: 2 / (a * a + 1),
}


def random_expression(rng: random.Random, leaves: list, unary: dict, binary: dict, size: int):
    """Combine leaves with random ops; every step may reuse any earlier node."""
    nodes = list(leaves)
    for _ in range(size):
        if rng.random() < 0.4:
            op = unary[rng.choice(sorted(unary))]
            nodes.append(op(rng.choice(nodes)))
        else:
            op = binary[rng.choice(sorted(binary))]
            nodes.append(op(rng.choice(nodes), rng.choice(nodes)))
    total = nodes[-1]
    for node in nodes[len(leaves) : -1 : 3]:  # fold in earlier nodes so many paths reach the output
        total = total + node
    return total


@pytest.mark.parametrize("seed", range(40))
def test_random_expressions_match_torch(seed):
    """Values and gradients of random expressions (with reuse) match torch float64."""
    rng = random.Random(seed)
    xs = [rng.uniform(-1.5, 1.5) for _ in range(4)]
    ours = [Value(x) for x in xs]
    theirs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    state = rng.getstate()
    out = random_expression(rng, ours, {k: v[0] for k, v in UNARY.items()}, BINARY, 12)
    rng.setstate(state)
    ref = random_expression(rng, theirs, {k: v[1] for k, v in UNARY.items()}, BINARY, 12)
    out.backward()
    ref.backward()
    assert out.data == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    for v, t in zip(ours, theirs, strict=True):
        expected = 0.0 if t.grad is None else t.grad.item()
        assert v.grad == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_every_unary_op(name):
    """Each unary op's value and derivative match torch at several points."""
    ours_op, torch_op = UNARY[name]
    for x in (-1.3, -0.2, 0.4, 2.1):
        v, t = Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out, ref = ours_op(v), torch_op(t)
        out.backward()
        ref.backward()
        assert out.data == pytest.approx(ref.item(), rel=1e-12)
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-12, abs=1e-15)


def test_reused_node_accumulates():
    """A node used twice gets the sum of both contributions (a + a -> 2)."""
    a = Value(3.0)
    b = a + a
    b.backward()
    assert a.grad == 2.0
    x = Value(2.0)
    y = x * x * x  # x used three times
    y.backward()
    assert x.grad == pytest.approx(3 * 2.0**2)


def test_deep_chain_backpropagates_without_recursion():
    """backward() works on a chain 100,000 nodes deep."""
    x = Value(0.5)
    y = x
    for _ in range(100_000):
        y = y * 1.0 + 0.0
    start = time.perf_counter()
    y.backward()
    assert x.grad == pytest.approx(1.0)
    assert time.perf_counter() - start < 30


def test_topological_order_places_inputs_first_once():
    """Each node appears once, after all of its inputs."""
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = e.topological_order()
    assert len(order) == len({id(n) for n in order}) == 5
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        assert all(position[id(child)] < position[id(node)] for child in node._prev)


def test_sigmoid_is_stable_for_large_inputs():
    """sigmoid neither overflows nor loses its derivative's sign at +-1000."""
    assert Value(1000.0).sigmoid().data == 1.0
    assert Value(-1000.0).sigmoid().data == 0.0
    assert Value(-30.0).sigmoid().data == pytest.approx(1 / (1 + math.exp(30)))


def test_repr_is_readable():
    """repr shows data and grad (and the label if there is one)."""
    v = Value(0.5, label="w")
    assert repr(v) == "Value(w: data=0.5, grad=0)"
    assert repr(Value(2.0)) == "Value(data=2, grad=0)"


@pytest.mark.parametrize("bad", ["3", None, [1.0], True, 1 + 2j])
def test_non_numbers_are_a_clear_type_error(bad):
    """Value of something that is not a real number says what is supported."""
    with pytest.raises(TypeError, match="must be a real number"):
        Value(bad)
    with pytest.raises(TypeError, match="must be a real number"):
        Value(1.0) + bad


def test_value_exponent_is_a_clear_type_error():
    """** with a Value exponent is refused with what is supported instead."""
    with pytest.raises(TypeError, match="exponent must be a plain number"):
        Value(2.0) ** Value(3.0)


def test_log_of_non_positive():
    """log of a non-positive number says its domain."""
    with pytest.raises(ValueError, match="positive numbers only"):
        Value(0.0).log()


def test_no_reference_cycles():
    """A trained graph is freed by reference counting alone: the cycle collector finds nothing."""
    import gc

    gc.collect()
    gc.disable()
    try:
        x = Value(1.0)
        y = (x * 2 + 1).tanh() * x
        y.backward()
        del x, y
        assert gc.collect() == 0
    finally:
        gc.enable()
