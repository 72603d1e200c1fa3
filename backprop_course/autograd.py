"""A scalar autograd engine: ``Value``, the reference for lessons 02-04.

Every operation does the same three things:

1. compute the output number;
2. compute its *local derivatives*, d(output)/d(input) for each input, as
   plain numbers (they are known at forward time);
3. return a new ``Value`` that remembers its inputs (``_prev``) and those
   local derivatives (``_local``).

``backward()`` is then the chain rule, applied in reverse topological order:
each node adds ``local * node.grad`` into each input's ``grad``. Adding
(``+=``), not assigning, is what makes a value used twice collect both
contributions.

Two choices keep it fast and robust, unlike a closure-per-node design: the
local derivatives are numbers, so no node holds a function that refers back to
itself (no reference cycles, so no garbage-collector pauses), and the
topological sort uses an explicit stack, so a graph 100,000 nodes deep
backpropagates without hitting Python's recursion limit.

The API matches micrograd: ``Value(x)``, ``+ - * /``, ``**`` by a number,
unary minus, reflected ops with numbers, ``relu() tanh() exp() log()
sigmoid()``, ``.data``, ``.grad`` and ``.backward()``.
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["Value"]


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(
            f"{what} must be a real number (int or float) or a Value, got {type(x).__name__}: {x!r}"
        )
    return float(x)


class Value:
    """One number in a computation graph, with the gradient of the output with respect to it."""

    __slots__ = ("_local", "_op", "_prev", "data", "grad", "label")

    def __init__(
        self, data: float, _prev: tuple = (), _op: str = "", _local: tuple = (), label: str = ""
    ):
        self.data = data if _prev else _number(data, "Value(data)")
        self.grad = 0.0
        self._prev = _prev  # the inputs of the op that made this value
        self._op = _op  # that op's name, for display ("" for a leaf)
        self._local = _local  # d(self)/d(input), one number per input
        self.label = label

    def __repr__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data:.6g}, grad={self.grad:.6g})"

    # ---- arithmetic: out = f(inputs), with d(out)/d(input) as numbers

    def __add__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), "+", (1.0, 1.0))

    def __mul__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), "*", (other.data, self.data))

    def __pow__(self, exponent: float) -> Value:
        if isinstance(exponent, Value):
            raise TypeError(
                "Value ** Value is not supported: the exponent must be a plain "
                "number, as in x ** 2 or x ** -1"
            )
        n = _number(exponent, "the exponent of **")
        return Value(self.data**n, (self,), f"**{exponent:g}", (n * self.data ** (n - 1),))

    def __neg__(self) -> Value:
        return self * -1.0

    def __sub__(self, other: Value | float) -> Value:
        return self + (-other)

    def __truediv__(self, other: Value | float) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return self * other**-1

    def __radd__(self, other: float) -> Value:
        return self + other

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __rsub__(self, other: float) -> Value:
        return (-self) + other

    def __rtruediv__(self, other: float) -> Value:
        return Value(other) * self**-1

    # ---- functions of one input

    def relu(self) -> Value:
        positive = self.data > 0
        return Value(self.data if positive else 0.0, (self,), "relu", (1.0 if positive else 0.0,))

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), "tanh", (1.0 - t * t,))

    def exp(self) -> Value:
        e = math.exp(self.data)
        return Value(e, (self,), "exp", (e,))

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log is defined for positive numbers only, got {self.data!r}")
        return Value(math.log(self.data), (self,), "log", (1.0 / self.data,))

    def sigmoid(self) -> Value:
        s = (
            1.0 / (1.0 + math.exp(-self.data))
            if self.data >= 0
            else (math.exp(self.data) / (1.0 + math.exp(self.data)))
        )  # no overflow either way
        return Value(s, (self,), "sigmoid", (s * (1.0 - s),))

    # ---- backpropagation

    def topological_order(self) -> list[Value]:
        """Every node this value depends on, each once, inputs before the ops that use them.

        Depth-first with an explicit stack (no recursion limit): a node stays on the
        stack while its inputs are placed, and is placed when it comes back to the top.
        """
        order: list[Value] = []
        expanded: set[Value] = set()
        placed: set[Value] = set()
        stack = [self]
        while stack:
            node = stack[-1]
            if node not in expanded:
                expanded.add(node)
                stack.extend(node._prev)  # the inputs are placed first...
                continue
            stack.pop()
            if node not in placed:  # ...then the node itself, once
                placed.add(node)
                order.append(node)
        return order

    def backward(self) -> None:
        """Fill ``.grad`` of every node with d(self)/d(node).

        Gradients accumulate (``+=``), so call ``zero_grad`` (or set ``.grad = 0``)
        between training steps.
        """
        order = self.topological_order()
        self.grad = 1.0
        for node in reversed(order):
            upstream = node.grad
            for child, local in zip(node._prev, node._local):
                child.grad += local * upstream  # the chain rule, summed over every use
