"""Lesson 03: correct engines pass, and a typical wrong answer to each exercise says why."""

from __future__ import annotations

import functools
import math

from backprop_course.autograd import Value as ReferenceValue
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


class MicrogradValue:
    """A correct engine in another style: each node keeps a closure for its backward step."""

    def __init__(self, data, _children=()):
        self.data, self.grad = float(data), 0.0
        self._prev, self._backward = tuple(_children), lambda: None

    def _wrap(self, other):
        return other if isinstance(other, MicrogradValue) else MicrogradValue(other)

    def __add__(self, other):
        other = self._wrap(other)
        out = MicrogradValue(self.data + other.data, (self, other))

        def step():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = step
        return out

    def __mul__(self, other):
        other = self._wrap(other)
        out = MicrogradValue(self.data * other.data, (self, other))

        def step():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = step
        return out

    def _unary(self, value, local):
        out = MicrogradValue(value, (self,))

        def step():
            self.grad += local * out.grad

        out._backward = step
        return out

    def __pow__(self, n):
        return self._unary(self.data**n, n * self.data ** (n - 1))

    def exp(self):
        e = math.exp(self.data)
        return self._unary(e, e)

    def tanh(self):
        t = math.tanh(self.data)
        return self._unary(t, 1 - t * t)

    def relu(self):
        return self._unary(max(0.0, self.data), 1.0 if self.data > 0 else 0.0)

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-self._wrap(other))

    def __truediv__(self, other):
        return self * self._wrap(other) ** -1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return MicrogradValue(other) - self

    def __rtruediv__(self, other):
        return MicrogradValue(other) / self

    def backward(self):
        self.grad = 1.0
        for node in reversed(iterative_order(self)):
            node._backward()


def backward_by_counting(root):
    """The lesson's way (Kahn's algorithm): release a node once all of its uses reported."""
    uses, todo = {root: 0}, [root]
    while todo:
        for child in todo.pop()._prev:
            if child not in uses:
                uses[child] = 0
                todo.append(child)
            uses[child] += 1
    root.grad, ready = 1.0, [root]
    while ready:
        node = ready.pop()
        for child, local in zip(node._prev, node._local):
            child.grad += local * node.grad
            uses[child] -= 1
            if uses[child] == 0:
                ready.append(child)


def order_with_two_sets(root):
    """Another explicit-stack order: a node stays on the stack until its inputs are placed."""
    order, expanded, placed, stack = [], set(), set(), [root]
    while stack:
        node = stack[-1]
        if node not in expanded:
            expanded.add(node)
            stack.extend(child for child in node._prev if child not in placed)
            continue
        stack.pop()
        if node not in placed:
            placed.add(node)
            order.append(node)
    return order


# ---------------------------------------------------------------- shortcuts


def mul_by_engine(a, b, g):
    x, y = ReferenceValue(a), ReferenceValue(b)
    (x * y).backward()
    return x.grad * g, y.grad * g


def tanh_by_engine(x, t, g):
    v = ReferenceValue(x)
    v.tanh().backward()
    return v.grad * g


def pow_by_engine(x, n, g):
    v = ReferenceValue(x)
    (v**n).backward()
    return v.grad * g


def backward_delegated(root):
    root.backward()


def backward_by_unbound_method(root):
    ReferenceValue.backward(root)


def backward_with_package_order(root):
    root.grad = 1.0
    for node in reversed(ReferenceValue.topological_order(root)):
        for child, local in zip(node._prev, node._local):
            child.grad += local * node.grad


class SubclassedValue(ReferenceValue):
    """A trivial subclass of the package's engine."""


class WrappedValue:
    """Every operation handed to the package's engine inside."""

    def __init__(self, data, _prev=(), _op="", _local=()):
        self._v = data if isinstance(data, ReferenceValue) else ReferenceValue(data)

    data = property(lambda self: self._v.data)
    grad = property(lambda self: self._v.grad)

    def _of(self, other):
        return other._v if isinstance(other, WrappedValue) else other

    def __add__(self, other):
        return WrappedValue(self._v + self._of(other))

    def __radd__(self, other):
        return WrappedValue(other + self._v)

    def __mul__(self, other):
        return WrappedValue(self._v * self._of(other))

    def __rmul__(self, other):
        return WrappedValue(other * self._v)

    def __sub__(self, other):
        return WrappedValue(self._v - self._of(other))

    def __rsub__(self, other):
        return WrappedValue(other - self._v)

    def __truediv__(self, other):
        return WrappedValue(self._v / self._of(other))

    def __rtruediv__(self, other):
        return WrappedValue(other / self._v)

    def __pow__(self, n):
        return WrappedValue(self._v**n)

    def __neg__(self):
        return WrappedValue(-self._v)

    def tanh(self):
        return WrappedValue(self._v.tanh())

    def exp(self):
        return WrappedValue(self._v.exp())

    def relu(self):
        return WrappedValue(self._v.relu())

    def backward(self):
        self._v.backward()


class BackwardByPackage(LearnerValue):
    """A learner's own ops, but backward() hands the pass to the package's engine."""

    def backward(self):
        ReferenceValue.backward(self)


ENGINE_RULE = "not the course's engine"

SHORTCUTS = [
    ("03.mul_backward", mul_by_engine, ENGINE_RULE),
    ("03.tanh_backward", tanh_by_engine, ENGINE_RULE),
    ("03.pow_backward", pow_by_engine, ENGINE_RULE),
    ("03.topological_order", ReferenceValue.topological_order, "Value.topological_order"),
    ("03.backward", backward_delegated, "bare nodes"),
    ("03.backward", backward_by_unbound_method, "the answer used backprop_course.autograd"),
    ("03.backward", backward_with_package_order, "Value.topological_order"),
    ("03.value_class", ReferenceValue, "the answer is backprop_course.autograd.Value"),
    ("03.value_class", SubclassedValue, "the answer is backprop_course.autograd.Value"),
    ("03.value_class", functools.partial(ReferenceValue), "the answer is backprop_course"),
    ("03.value_class", WrappedValue, "the answer used backprop_course.autograd.Value"),
    ("03.value_class", BackwardByPackage, "the answer used backprop_course.autograd.Value"),
]

ALSO_CORRECT = [
    ("03.mul_backward", lambda a, b, g: [g * b, g * a]),
    ("03.tanh_backward", lambda x, t, g: g - g * t * t),
    ("03.pow_backward", lambda x, n, g: g * n * x**n / x),
    ("03.topological_order", order_with_two_sets),
    ("03.backward", backward_by_counting),
    ("03.value_class", MicrogradValue),
]

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
    ("03.mul_backward", lambda a, b, g: None, "return"),
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


# The graph checks build thousands of nodes per draw: a few draws are enough here.
EXPENSIVE = {"03.topological_order": 3, "03.backward": 3, "03.value_class": 3}

globals().update(
    lesson_feedback_tests(
        "03",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        stubs=STUBS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        ruled=sorted({s[0] for s in SHORTCUTS}),
        correct_seeds=EXPENSIVE,
    )
)
