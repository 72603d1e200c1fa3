"""Benchmarks behind ``backprop-course bench``: each returns one JSON-ready dict.

Importable with numpy alone (no Jupyter, no torch at import time), so the
benchmarks run on machines that have only the numerical stack.

``bench_autograd``: one training step (forward, backward, SGD update) of
micrograd's demo network, a 2-16-16-1 MLP on 100 two-moons points, full
batch, max-margin loss plus L2. It times our ``Value`` and, when the
``micrograd`` package is importable, micrograd's ``Value`` on the identical
graph (same code, same initial weights) in the same run.

``bench_mlp``: one training step (forward, backward, SGD update) of a
784-256-10 ReLU MLP on a float32 batch of 128 random examples with softmax
cross-entropy: the numpy layers of :mod:`backprop_course.nn` against the same
network (same initial weights) in torch on the CPU, in alternating blocks of
steps so that both see the same machine load.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

__all__ = ["bench_autograd", "bench_gpt", "bench_mlp", "machine"]


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


def _numpy_mlp_step(model, x, y, lr: float) -> Callable[[], float]:
    """One SGD step of an ``nn.MLP`` with softmax cross-entropy, all in place."""
    from backprop_course.nn import SoftmaxCrossEntropy

    loss_fn = SoftmaxCrossEntropy()
    params, grads = model.parameters(), model.gradients()

    def step() -> float:
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)  # the data needs no gradient
        for p, g in zip(params, grads):
            p -= lr * g
        return loss

    return step


def _torch_mlp_step(model, x, y, lr: float) -> Callable[[], float]:
    """The same step in torch: ``cross_entropy``, autograd, ``torch.optim.SGD``."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tx), ty)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def bench_mlp(repeats: int = 20, rounds: int = 5, batch: int = 128, seed: int = 0) -> dict:
    """Median milliseconds per training step, numpy (``nn.MLP``) and torch (CPU).

    784-256-10 ReLU MLP, float32, softmax cross-entropy, SGD with lr 0.1. Both
    start from the same weights. They take turns, ``rounds`` times: two
    warm-up steps then ``repeats`` timed steps of one, then of the other, so
    that a busy machine slows both alike without either's BLAS threads
    competing with the other's inside a step. The medians are over all timed
    steps; ``ratio`` is numpy / torch (below 1: numpy is faster).
    """
    import numpy as np
    import torch

    from backprop_course.nn import MLP, Linear

    sizes, lr = [784, 256, 10], 0.1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    model = MLP(sizes, activation="relu", rng=seed, dtype=np.float32)

    linears = [layer for layer in model.layers if isinstance(layer, Linear)]
    torch_layers: list = []
    for i, layer in enumerate(linears):
        linear = torch.nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():  # torch stores W as (out, in): ours transposed
            linear.weight.copy_(torch.from_numpy(layer.W.T))
            linear.bias.copy_(torch.from_numpy(layer.b))
        torch_layers.append(linear)
        if i < len(linears) - 1:
            torch_layers.append(torch.nn.ReLU())
    torch_model = torch.nn.Sequential(*torch_layers)

    numpy_step = _numpy_mlp_step(model, x, y, lr)
    torch_step = _torch_mlp_step(torch_model, x, y, lr)
    first_losses = (numpy_step(), torch_step())
    numpy_times: list[float] = []
    torch_times: list[float] = []
    for _ in range(rounds):
        for step, times in ((numpy_step, numpy_times), (torch_step, torch_times)):
            time.sleep(0.2)  # let the other library's worker threads stop spinning
            step(), step()  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
    numpy_ms = statistics.median(numpy_times) * 1000
    torch_ms = statistics.median(torch_times) * 1000
    return {
        "benchmark": "mlp",
        "network": f"MLP 784-256-10 ReLU, float32, batch {batch}, softmax cross-entropy, SGD",
        "numpy_ms": round(numpy_ms, 3),
        "torch_ms": round(torch_ms, 3),
        "ratio": round(numpy_ms / torch_ms, 3),
        "same_loss": abs(first_losses[0] - first_losses[1]) < 1e-4,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": repeats,
        "rounds": rounds,
        "machine": machine(),
    }


GPT_TARGETS = {
    "cpu": "val_loss <= 1.88 with seconds <= 60 on 2 CPU cores "
    "(nanoGPT's CPU recipe: 1.886 in 72 s)",
    "gpu": "val_loss <= 1.47 with seconds <= 60 on one H100 "
    "(nanoGPT: 1.4697 in about 3 min on an A100)",
    "test": "none: a smoke test that runs in seconds",
}


def bench_gpt(preset: str = "cpu", device: str | None = None, progress: bool = False) -> dict:
    """Train the char GPT from scratch with ``preset``; its validation loss, time and speed.

    ``seconds`` is the training wall time (no compilation, no evaluation);
    ``val_loss`` is measured afterwards on every consecutive ``block_size``
    window of the validation text (the last 10% of tiny-shakespeare).
    """
    import torch

    from backprop_course.gpt import preset as gpt_preset
    from backprop_course.gpt import train

    model_config, train_config = gpt_preset(preset)
    if device is not None:
        train_config.device = device
    log = None
    if progress:
        import sys

        def log(message: str) -> None:
            print(message, file=sys.stderr)

    load_before = _load_average()
    result = train(model_config, train_config, progress=progress, log=log)
    summary = result.to_dict()
    return {
        "benchmark": "gpt",
        "preset": preset,
        "device": summary.pop("device"),
        "device_name": summary.pop("device_name"),
        "params": summary.pop("params"),
        "val_loss": summary.pop("val_loss"),
        "val_method": "mean cross-entropy over all consecutive block_size windows of the "
        "validation text (last 10%)",
        "val_tokens": summary.pop("val_tokens"),
        "seconds": summary.pop("seconds"),
        "compile_seconds": summary.pop("compile_seconds"),
        "tokens": summary.pop("tokens"),
        "tokens_per_s": summary.pop("tokens_per_s"),
        "mfu": summary.pop("mfu"),
        **summary,
        "threads": train_config.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "target": GPT_TARGETS[preset],
        "load_average": {"before": load_before, "after": _load_average()},
        "machine": machine(),
    }


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none): other
    processes on the machine slow a timed run down."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
