"""Neurons, layers and an MLP built from scalar ``Value``s (lessons 03-04).

Small on purpose: a neuron is ``act(w . x + b)``, a layer is a list of
neurons, an MLP is a list of layers whose last one is linear. ``value_type``
lets the benchmark build the identical network with another engine (such as
micrograd's ``Value``) for a like-for-like timing.
"""

from __future__ import annotations

import random

from backprop_course.autograd import Value

__all__ = ["MLP", "Layer", "Module", "Neuron"]


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


class Module:
    """Something with parameters."""

    def parameters(self) -> list:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """``relu(w . x + b)`` (or linear with ``nonlin=False``); weights uniform in [-1, 1]."""

    def __init__(
        self,
        nin: int,
        nonlin: bool = True,
        rng: random.Random | int | None = None,
        value_type: type = Value,
    ):
        rng = _rng(rng)
        self.w = [value_type(rng.uniform(-1, 1)) for _ in range(nin)]
        self.b = value_type(0.0)
        self.nonlin = nonlin

    def __call__(self, x):
        if len(x) != len(self.w):
            raise ValueError(f"Neuron expects {len(self.w)} inputs, got {len(x)}")
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list:
        return [*self.w, self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons that all see the same ``nin`` inputs."""

    def __init__(
        self,
        nin: int,
        nout: int,
        nonlin: bool = True,
        rng: random.Random | int | None = None,
        value_type: type = Value,
    ):
        rng = _rng(rng)
        self.neurons = [Neuron(nin, nonlin, rng, value_type) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes ``nin -> nouts[0] -> ... -> nouts[-1]``; ReLU between, linear at the end."""

    def __init__(
        self,
        nin: int,
        nouts: list[int],
        rng: random.Random | int | None = None,
        value_type: type = Value,
    ):
        rng = _rng(rng)
        sizes = [nin, *nouts]
        self.layers = [
            Layer(
                sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, rng=rng, value_type=value_type
            )
            for i in range(len(nouts))
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
