"""What the checks of the torch lessons (10 and 13) share: one torch thread while a
check runs, random float64 test tensors, and the exactness a by-hand gradient owes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps

import numpy as np
import torch

from backprop_course.compare import Wrong, as_array
from backprop_course.device import torch_threads
from backprop_course.rules import BY_HAND

__all__ = ["one_thread", "random_tensor", "require_exact"]


def one_thread(checker: Callable) -> Callable:
    """Run a check with one torch thread: its tensors are tiny, and on a busy machine
    two threads waiting on each other make every small operation hundreds of times slower."""

    @wraps(checker)
    def run(answer, rng):
        with torch_threads(1):
            return checker(answer, rng)

    return run


def random_tensor(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    """A float64 tensor of standard normal entries times ``scale``, drawn from ``rng``."""
    return torch.from_numpy(scale * rng.standard_normal(shape))


def require_exact(got: Mapping, expected: Mapping, context: str, *, exact: float) -> None:
    """After the usual comparison: Wrong unless every gradient agrees to ``exact`` (relative
    to its largest entry), which rounding error meets and a finite difference does not."""
    for name, value in got.items():
        value, want = as_array(value, name), as_array(expected[name], name)
        scale = max(float(np.abs(want).max()), 1e-300)
        error = float(np.abs(value - want).max()) / scale
        if error > exact:
            raise Wrong(
                f"{name} agrees with the exact gradient only to about {error:.0e} (relative) "
                f"{context}: {BY_HAND}, exact to rounding error (about 1e-15); a finite "
                "difference, or a step computed in lower precision, is not exact"
            )
