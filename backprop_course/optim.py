"""Hand-written optimizers, learning-rate schedules and 2-D test surfaces (lesson 08).

Each optimizer updates a list of numpy arrays *in place*: ``opt.step(grads)``
takes the gradients in the same order as the parameters. The update rules
follow ``torch.optim`` exactly (tests compare them step for step):

- ``SGD``: ``p -= lr * g``
- ``Momentum``: ``v = mu * v + g``; ``p -= lr * v``
- ``RMSprop``: ``s = a * s + (1 - a) * g**2``; ``p -= lr * g / (sqrt(s) + eps)``
- ``Adam``: moments ``m``, ``v`` with bias correction;
  ``p -= lr * m_hat / (sqrt(v_hat) + eps)``

Schedules are plain functions of the step: :func:`warmup_cosine`, :func:`step_decay`.
Surfaces for optimizer demos take numpy arrays (broadcasting) and come with their
gradients: :func:`rosenbrock`, :func:`saddle`, :func:`bowl`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "SGD",
    "Adam",
    "Momentum",
    "Optimizer",
    "RMSprop",
    "bowl",
    "bowl_grad",
    "rosenbrock",
    "rosenbrock_grad",
    "saddle",
    "saddle_grad",
    "step_decay",
    "warmup_cosine",
]


class Optimizer:
    """Holds the parameters and the learning rate; subclasses define ``update``."""

    def __init__(self, params: Sequence[np.ndarray], lr: float):
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, np.ndarray):
                raise TypeError(
                    f"parameter {i} must be a numpy array (updated in place), "
                    f"got {type(p).__name__}"
                )
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.lr = lr
        self.t = 0  # steps taken

    def step(self, grads: Sequence[np.ndarray]) -> None:
        """Apply one update, given one gradient per parameter (same order and shapes)."""
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(
                f"{type(self).__name__}.step expects {len(self.params)} gradients "
                f"(one per parameter), got {len(grads)}"
            )
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if np.shape(g) != p.shape:
                raise ValueError(
                    f"gradient {i} has shape {np.shape(g)}, but parameter {i} has shape {p.shape}"
                )
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.update(i, p, np.asarray(g, dtype=p.dtype))

    def update(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent: ``p -= lr * g``."""

    def update(self, i, p, g):
        p -= self.lr * g


class Momentum(Optimizer):
    """SGD with momentum (torch convention): ``v = mu * v + g``; ``p -= lr * v``."""

    def __init__(self, params, lr: float, momentum: float = 0.9):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity = [np.zeros_like(p) for p in self.params]

    def update(self, i, p, g):
        v = self.velocity[i]
        # torch starts the velocity at the first gradient, which equals mu * 0 + g.
        v *= self.momentum
        v += g
        p -= self.lr * v


class RMSprop(Optimizer):
    """Divide each step by a running root-mean-square of the gradient."""

    def __init__(self, params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8):
        super().__init__(params, lr)
        self.alpha, self.eps = alpha, eps
        self.square_avg = [np.zeros_like(p) for p in self.params]

    def update(self, i, p, g):
        s = self.square_avg[i]
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Momentum plus RMSprop, with bias correction for the zero-initialised moments."""

    def __init__(
        self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def update(self, i, p, g):
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        # m and v start at 0, so early on both are biased towards 0; with beta2 > beta1, v is
        # the more biased one and uncorrected steps would be too large.
        m_hat = m / (1 - self.beta1**self.t)
        v_hat = v / (1 - self.beta2**self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# ---------------------------------------------------------------- schedules


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, max_lr: float, min_lr: float = 0.0
) -> float:
    """Linear warmup from 0 to ``max_lr``, then a cosine down to ``min_lr`` at ``total_steps``."""
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def step_decay(step: int, lr0: float, drop: float = 0.5, every: int = 100) -> float:
    """Multiply the learning rate by ``drop`` every ``every`` steps."""
    return lr0 * drop ** (step // every)


# ---------------------------------------------------------------- 2-D test surfaces


def rosenbrock(x, y, a: float = 1.0, b: float = 100.0):
    """A curved, narrow valley with its minimum 0 at (a, a**2)."""
    return (a - x) ** 2 + b * (y - x**2) ** 2


def rosenbrock_grad(x, y, a: float = 1.0, b: float = 100.0):
    """(df/dx, df/dy) of :func:`rosenbrock`."""
    return (-2 * (a - x) - 4 * b * x * (y - x**2), 2 * b * (y - x**2))


def saddle(x, y):
    """``x**2 - y**2``: a minimum along x, a maximum along y, flat at the origin."""
    return x**2 - y**2


def saddle_grad(x, y):
    """(df/dx, df/dy) of :func:`saddle`."""
    return (2 * x, -2 * y)


def bowl(x, y, condition: float = 10.0):
    """An ill-conditioned quadratic ``(x**2 + condition * y**2) / 2``, minimum 0 at the origin."""
    return 0.5 * (x**2 + condition * y**2)


def bowl_grad(x, y, condition: float = 10.0):
    """(df/dx, df/dy) of :func:`bowl`."""
    return (x, condition * y)
