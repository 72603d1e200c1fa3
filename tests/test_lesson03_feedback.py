"""Lesson 03: correct engines pass, and a typical wrong answer to each exercise says why."""

from __future__ import annotations

import math

from backprop_course import evaluate
from backprop_course.autograd import Value as ReferenceValue
from backprop_course.checking import CORRECT
from feedback import lesson_feedback_tests

# ---------------------------------------------------------------- orders and backward passes


def iterative_order(root):
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif id(node) not in visited:
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in node._prev)
    return order


def recursive_order(root):
    order, visited = [], set()

    def visit(node):
        if id(node) not in visited:
            visited.add(id(node))
            for child in node._prev:
                visit(child)
            order.append(node)

    visit(root)
    return order


def order_without_visited_set(root):
    order, stack = [], [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in node._prev)
    return order


def breadth_first_order(root):
    order, seen, queue = [], {id(root)}, [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        for child in node._prev:
            if id(child) not in seen:
                seen.add(id(child))
                queue.append(child)
    return order[::-1]


def make_backward(*, assign=False, seed=True, order=iterative_order, local=True, forward=False):
    def backward(root):
        nodes = order(root)
        if seed:
            root.grad = 1.0
        for node in nodes if forward else reversed(nodes):
            for child, d in zip(node._prev, node._local):
                contribution = (d if local else 1.0) * node.grad
                if assign:
                    child.grad = contribution
                else:
                    child.grad += contribution

    return backward


# ---------------------------------------------------------------- a learner-style engine


class LearnerValue:
    """A correct engine written the way the lesson builds it."""

    def __init__(self, data, _prev=(), _op="", _local=()):
        self.data = float(data)
        self.grad = 0.0
        self._prev = tuple(_prev)
        self._op = _op
        self._local = tuple(_local)

    def __add__(self, other):
        other = other if isinstance(other, LearnerValue) else type(self)(other)
        return type(self)(self.data + other.data, (self, other), "+", (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, LearnerValue) else type(self)(other)
        return type(self)(self.data * other.data, (self, other), "*", (other.data, self.data))

    def __pow__(self, n):
        return type(self)(self.data**n, (self,), f"**{n}", (n * self.data ** (n - 1),))

    def tanh(self):
        t = math.tanh(self.data)
        return type(self)(t, (self,), "tanh", (1 - t**2,))

    def exp(self):
        e = math.exp(self.data)
        return type(self)(e, (self,), "exp", (e,))

    def relu(self):
        return type(self)(max(self.data, 0.0), (self,), "relu", (float(self.data > 0),))

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other**-1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return (-self) + other

    def __rtruediv__(self, other):
        return type(self)(other) * self**-1

    def backward(self):
        make_backward()(self)


class TanhFromInput(LearnerValue):
    def tanh(self):
        return type(self)(math.tanh(self.data), (self,), "tanh", (1 - self.data**2,))


class SwappedMul(LearnerValue):
    def __mul__(self, other):
        other = other if isinstance(other, LearnerValue) else type(self)(other)
        return type(self)(self.data * other.data, (self, other), "*", (self.data, other.data))


class WrongRsub(LearnerValue):
    def __rsub__(self, other):
        return self - other


class EndlessRsub(LearnerValue):
    def __rsub__(self, other):
        return other - self


class BreadthFirstBackward(LearnerValue):
    def backward(self):
        make_backward(order=breadth_first_order)(self)


class ForwardWalkBackward(LearnerValue):
    def backward(self):
        make_backward(forward=True)(self)


class AssignInBackward(LearnerValue):
    def backward(self):
        make_backward(assign=True)(self)


class RecursiveBackward(LearnerValue):
    def backward(self):
        make_backward(order=recursive_order)(self)


class UnseededBackward(LearnerValue):
    def backward(self):
        make_backward(seed=False)(self)


class StubbedValue(LearnerValue):
    """What release leaves: every op and backward return ...; __init__ stays."""


for _name in (
    "__add__",
    "__mul__",
    "__pow__",
    "tanh",
    "exp",
    "relu",
    "__neg__",
    "__sub__",
    "__truediv__",
    "__radd__",
    "__rmul__",
    "__rsub__",
    "__rtruediv__",
    "backward",
):
    setattr(StubbedValue, _name, lambda self, *args: ...)


class HalfDone(StubbedValue):
    __add__ = LearnerValue.__add__
    __mul__ = LearnerValue.__mul__


# ---------------------------------------------------------------- tables

CORRECT_ANSWERS = {
    "03.mul_backward": lambda a, b, g: (b * g, a * g),
    "03.tanh_backward": lambda x, t, g: (1 - t**2) * g,
    "03.pow_backward": lambda x, n, g: n * x ** (n - 1) * g,
    "03.topological_order": iterative_order,
    "03.backward": make_backward(),
    "03.value_class": LearnerValue,
    "03.finite_difference_evaluations": lambda P, scheme="central": (
        2 * P if scheme == "central" else P + 1
    ),
    "03.scaling": {
        "backprop_slope": 1,
        "finite_difference_slope": 2,
        "best_at_equal_budget": "gradient descent",
    },
}

WRONG_ANSWERS = [
    ("03.mul_backward", lambda a, b, g: (a * g, b * g), "swapped"),
    ("03.mul_backward", lambda a, b, g: (b, a), "forgot the upstream gradient"),
    ("03.mul_backward", lambda a, b, g: (g, g), "forgot the local derivative"),
    ("03.mul_backward", lambda a, b, g: b * g, "two numbers"),
    ("03.tanh_backward", lambda x, t, g: (1 - x**2) * g, "used the input instead of the output"),
    ("03.tanh_backward", lambda x, t, g: (1 - t) * g, "forgot to square"),
    ("03.tanh_backward", lambda x, t, g: 1 - t**2, "forgot the upstream gradient"),
    ("03.tanh_backward", lambda x, t, g: (1 - math.tanh(t) ** 2) * g, "applied tanh twice"),
    ("03.pow_backward", lambda x, n, g: n * x**n * g, "forgot to lower the exponent"),
    ("03.pow_backward", lambda x, n, g: x ** (n - 1) * g, "forgot the factor n"),
    ("03.pow_backward", lambda x, n, g: n * x ** (n - 1), "forgot the upstream gradient"),
    ("03.topological_order", recursive_order, "RecursionError"),
    ("03.topological_order", order_without_visited_set, "must appear exactly once"),
    ("03.topological_order", lambda root: iterative_order(root)[::-1], "starts with the root"),
    ("03.topological_order", breadth_first_order, "wrong order"),
    ("03.topological_order", lambda root: [root], "missing"),
    ("03.topological_order", lambda root: [n.label for n in iterative_order(root)], "not a node"),
    ("03.backward", make_backward(assign=True), "= instead of +="),
    ("03.backward", make_backward(seed=False), "never set to 1"),
    ("03.backward", make_backward(forward=True), "walked in topological order"),
    ("03.backward", make_backward(local=False), "forgot the local derivative"),
    ("03.backward", make_backward(order=recursive_order), "RecursionError"),
    ("03.backward", make_backward(order=breadth_first_order), "must have both"),
    ("03.value_class", TanhFromInput, "used the input instead of the output"),
    ("03.value_class", SwappedMul, "swapped"),
    ("03.value_class", WrongRsub, "in __rsub__, self is a"),
    ("03.value_class", EndlessRsub, "keeps calling itself"),
    ("03.value_class", AssignInBackward, "= instead of +="),
    ("03.value_class", RecursiveBackward, "RecursionError"),
    ("03.value_class", BreadthFirstBackward, "reverse topological order"),
    ("03.value_class", ForwardWalkBackward, "walked in topological order"),
    ("03.value_class", UnseededBackward, "never set to 1"),
    ("03.value_class", HalfDone, "still return the placeholder"),
    ("03.value_class", 3.0, "expected the Value class"),
    (
        "03.finite_difference_evaluations",
        lambda P, scheme="central": P,
        "evaluates f on both sides",
    ),
    ("03.finite_difference_evaluations", lambda P, scheme="central": 2 * P, "central-difference"),
    ("03.finite_difference_evaluations", lambda P, scheme="central": 2 * P + 1, "counted f(w)"),
    (
        "03.scaling",
        {
            "backprop_slope": 1,
            "finite_difference_slope": 1,
            "best_at_equal_budget": "gradient descent",
        },
        "finite_difference_slope is 1",
    ),
    (
        "03.scaling",
        {
            "backprop_slope": 0,
            "finite_difference_slope": 2,
            "best_at_equal_budget": "gradient descent",
        },
        "backprop_slope is 0",
    ),
    (
        "03.scaling",
        {
            "backprop_slope": 1,
            "finite_difference_slope": 2,
            "best_at_equal_budget": "random search",
        },
        "random direction",
    ),
    ("03.scaling", {"backprop_slope": 1}, "missing the key(s)"),
]

STUBS = {
    "03.mul_backward": lambda a, b, g: ...,
    "03.tanh_backward": lambda x, t, g: ...,
    "03.pow_backward": lambda x, n, g: ...,
    "03.topological_order": lambda root: ...,
    "03.backward": lambda root: ...,
    "03.value_class": StubbedValue,
    "03.finite_difference_evaluations": lambda P, scheme="central": ...,
    "03.scaling": ...,
}


globals().update(lesson_feedback_tests("03", CORRECT_ANSWERS, WRONG_ANSWERS, stubs=STUBS))


def test_the_reference_engine_passes_as_a_value_class(home):
    """The package's Value is a correct answer to the Value-class exercise."""
    for seed in range(5):
        result = evaluate("03.value_class", ReferenceValue, seed=seed)
        assert result.status == CORRECT, result.message
