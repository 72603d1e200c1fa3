"""Benchmarks behind ``backprop-course bench``: each returns one JSON-ready dict.

Importable with numpy alone (no Jupyter, no torch at import time), so the
benchmarks run on machines that have only the numerical stack.

``bench_autograd``: one training step (forward, backward, SGD update) of
micrograd's demo network, a 2-16-16-1 MLP on 100 two-moons points, full
batch, max-margin loss plus L2. It times our ``Value`` and, when the
``micrograd`` package is importable, micrograd's ``Value`` on the identical
graph (same code, same initial weights) in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

__all__ = ["bench_autograd", "machine"]


def machine() -> dict:
    """Where a benchmark ran: enough to compare results fairly."""
    import numpy

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }


def _demo_step(value_type: type, X, y, seed: int = 1337) -> Callable[[], float]:
    """One step of micrograd's demo training loop, built with ``value_type``."""
    from backprop_course.scalar_nn import MLP

    model = MLP(2, [16, 16, 1], rng=seed, value_type=value_type)
    params = model.parameters()
    rows = [[float(a), float(b)] for a, b in X]
    targets = [float(t) for t in y]

    def step() -> float:
        inputs = [[value_type(a), value_type(b)] for a, b in rows]
        scores = [model(x) for x in inputs]
        losses = [(1 + -t * s).relu() for t, s in zip(targets, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in params)
        total = data_loss + reg_loss
        model.zero_grad()
        total.backward()
        for p in params:
            p.data -= 0.5 * p.grad
        return total.data

    return step


def _time_steps(step: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median ms per step after one warm-up step, and the loss of that first step."""
    loss = step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, loss


def bench_autograd(repeats: int = 5, micrograd_repeats: int = 3) -> dict:
    """Median milliseconds per demo step, ours and micrograd's, and their ratio."""
    from backprop_course.autograd import Value
    from backprop_course.data import make_moons

    X, y01 = make_moons(100, noise=0.1, seed=0)
    y = y01 * 2 - 1  # the max-margin loss wants labels -1 and +1
    ours_ms, ours_loss = _time_steps(_demo_step(Value, X, y), repeats)
    micrograd_ms = micrograd_loss = None
    try:
        from micrograd.engine import Value as MicrogradValue
    except ImportError:
        MicrogradValue = None
    if MicrogradValue is not None:
        micrograd_ms, micrograd_loss = _time_steps(
            _demo_step(MicrogradValue, X, y), micrograd_repeats
        )
    return {
        "benchmark": "autograd",
        "network": "MLP 2-16-16-1, 100 moons points, full batch, max-margin + 1e-4 L2",
        "ours_ms": round(ours_ms, 2),
        "micrograd_ms": None if micrograd_ms is None else round(micrograd_ms, 2),
        "ratio": None if micrograd_ms is None else round(micrograd_ms / ours_ms, 2),
        "same_loss": None if micrograd_loss is None else abs(ours_loss - micrograd_loss) < 1e-9,
        "repeats": repeats,
        "machine": machine(),
    }
