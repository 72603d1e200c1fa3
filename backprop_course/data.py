"""Small datasets made on the spot: nothing to download, the same data for the same seed.

Toy 2-D classification sets, each returning ``(X, y)``
with ``X`` float64 of shape ``(n, 2)`` and ``y`` int64 of shape ``(n,)``
holding labels ``0 .. classes - 1``, the ``n`` points shared among the
classes as evenly as possible and listed in random order:

- :func:`make_moons`: two interleaved half circles;
- :func:`make_circles`: a ring around a smaller ring;
- :func:`make_spirals`: ``classes`` arms winding out from the centre;
- :func:`make_xor`: the four quadrants, opposite ones sharing a label.

Every set is drawn with ``numpy.random.default_rng(seed)``. (Lesson 11's text
corpus will get its own section below the toy sets.)
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

__all__ = ["make_circles", "make_moons", "make_spirals", "make_xor"]


# ---------------------------------------------------------------- checks


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: object, expected: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not ok(float(value)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _check_noise(noise: object) -> float:
    return _check_real("noise", noise, "a number >= 0", lambda v: 0 <= v < np.inf)


def _class_sizes(n: int, classes: int) -> list[int]:
    """``n`` split into ``classes`` counts that differ by at most one, e.g. 7, 2 -> [4, 3]."""
    return [n // classes + (k < n % classes) for k in range(classes)]


def _shuffled(rng: np.random.Generator, X: np.ndarray, y: np.ndarray):
    order = rng.permutation(len(y))
    return X[order].astype(np.float64), y[order].astype(np.int64)


def _labels(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


# ---------------------------------------------------------------- toy 2-D sets


def make_moons(n: int = 100, noise: float = 0.1, seed: int = 0):
    """Two interleaved half circles: class 0 arches up, class 1 (shifted) arches down.

    ``noise`` is the standard deviation of the Gaussian jitter added to each point.
    """
    n = _check_int("n", n, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    n0, n1 = _class_sizes(n, 2)
    upper = np.linspace(0, np.pi, n0)
    lower = np.linspace(0, np.pi, n1)
    X = np.concatenate(
        [
            np.column_stack([np.cos(upper), np.sin(upper)]),
            np.column_stack([1 - np.cos(lower), 0.5 - np.sin(lower)]),
        ]
    )
    X = X + rng.normal(scale=noise, size=X.shape)
    return _shuffled(rng, X, _labels([n0, n1]))


def make_circles(n: int = 100, noise: float = 0.05, factor: float = 0.5, seed: int = 0):
    """A unit circle (class 0) around a circle of radius ``factor`` (class 1).

    ``noise`` is the standard deviation of the Gaussian jitter; ``0 < factor < 1``.
    """
    n = _check_int("n", n, 2)
    noise = _check_noise(noise)
    factor = _check_real("factor", factor, "a number between 0 and 1", lambda v: 0 < v < 1)
    rng = np.random.default_rng(seed)
    sizes = _class_sizes(n, 2)
    rings = []
    for radius, size in zip((1.0, factor), sizes):
        angle = np.linspace(0, 2 * np.pi, size, endpoint=False)
        rings.append(radius * np.column_stack([np.cos(angle), np.sin(angle)]))
    X = np.concatenate(rings)
    X = X + rng.normal(scale=noise, size=X.shape)
    return _shuffled(rng, X, _labels(sizes))


def make_spirals(
    n: int = 100, classes: int = 2, noise: float = 0.2, seed: int = 0, turn: float = 4.0
):
    """``classes`` spiral arms around the origin, one per class, radius up to 1.

    Arm ``k`` starts at angle ``2π k / classes`` and turns by ``turn`` radians on
    its way out (the more, the more tightly the arms wind round each other);
    ``noise`` is the standard deviation of the Gaussian jitter added to each
    point's angle (in radians), so the arms blur into each other as it grows.
    """
    classes = _check_int("classes", classes, 2)
    n = _check_int("n", n, max(2, classes))
    noise = _check_noise(noise)
    turn = _check_real("turn", turn, "a finite number", np.isfinite)
    rng = np.random.default_rng(seed)
    sizes = _class_sizes(n, classes)
    arms = []
    for k, size in enumerate(sizes):
        radius = np.linspace(0.05, 1.0, size)
        angle = 2 * np.pi * k / classes + turn * radius + rng.normal(scale=noise, size=size)
        arms.append(radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)]))
    return _shuffled(rng, np.concatenate(arms), _labels(sizes))


def make_xor(n: int = 100, noise: float = 0.1, seed: int = 0):
    """Points in the four quadrants of the square [-1, 1]²; the label is ``x1 > 0 XOR x2 > 0``.

    Class 0 fills the quadrants where both coordinates have the same sign, class 1
    the two others. ``noise`` is the standard deviation of Gaussian jitter added
    after the label is set, so with noise some points stray across an axis. No
    straight line separates the classes.
    """
    n = _check_int("n", n, 2)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    sizes = _class_sizes(n, 2)
    parts = []
    for label, size in enumerate(sizes):
        magnitude = rng.uniform(0.05, 1.0, size=(size, 2))
        sign1 = rng.choice([-1.0, 1.0], size=size)
        sign2 = sign1 if label == 0 else -sign1
        parts.append(magnitude * np.column_stack([sign1, sign2]))
    X = np.concatenate(parts)
    X = X + rng.normal(scale=noise, size=X.shape)
    return _shuffled(rng, X, _labels(sizes))
