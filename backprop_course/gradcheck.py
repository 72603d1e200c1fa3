"""Finite differences and gradient checks, for numpy arrays and torch tensors.

The lessons derive these in cells (lesson 01: forward vs central
differences); this module is where they then live, and the exercise checks
use it too.

- :func:`forward_difference`, :func:`central_difference`: the derivative of a
  scalar function of one number.
- :func:`numerical_gradient`: the gradient of a scalar function of an array
  (numpy or torch), one central difference per element.
- :func:`numerical_jacobian`: the Jacobian of an array function.
- :func:`relative_error`: elementwise ``|a - b| / max(|a|, |b|)``.
- :func:`compare_gradients` / :func:`check_gradient`: a :class:`GradCheckReport`
  naming the worst element; :func:`check_torch_gradient` checks autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GradCheckReport",
    "central_difference",
    "check_gradient",
    "check_torch_gradient",
    "compare_gradients",
    "forward_difference",
    "numerical_gradient",
    "numerical_jacobian",
    "relative_error",
]


def forward_difference(f: Callable[[float], float], x: float, h: float = 1e-6) -> float:
    """``(f(x + h) - f(x)) / h``: error shrinks like ``h`` (first order)."""
    return (f(x + h) - f(x)) / h


def central_difference(f: Callable[[float], float], x: float, h: float = 1e-5) -> float:
    """``(f(x + h) - f(x - h)) / (2h)``: error shrinks like ``h**2`` (second order)."""
    return (f(x + h) - f(x - h)) / (2 * h)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _scalar(value: Any) -> float:
    if _is_torch(value):
        return float(value.detach().double().sum())
    return float(np.sum(value))


def numerical_gradient(f: Callable[[Any], Any], x: Any, h: float = 1e-5) -> Any:
    """Central-difference gradient of the scalar function ``f`` at array ``x``.

    ``x`` is a numpy array or a torch tensor (perturbed in place, restored
    afterwards); the result has the shape and kind of ``x``. Use float64.
    """
    if _is_torch(x):
        import torch

        with torch.no_grad():
            flat = x.detach().reshape(-1)
            grad = torch.zeros_like(flat, dtype=torch.float64)
            for i in range(flat.numel()):
                old = flat[i].item()
                x.view(-1)[i] = old + h
                plus = _scalar(f(x))
                x.view(-1)[i] = old - h
                minus = _scalar(f(x))
                x.view(-1)[i] = old
                grad[i] = (plus - minus) / (2 * h)
        return grad.reshape(x.shape).to(x.dtype)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"numerical_gradient needs a floating-point array, got dtype {x.dtype}")
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        plus = _scalar(f(x))
        x[index] = old - h
        minus = _scalar(f(x))
        x[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def numerical_jacobian(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Central-difference Jacobian ``J[i, j] = d f(x)_i / d x_j`` (flattened)."""
    x = np.asarray(x, dtype=np.float64)
    out_size = np.asarray(f(x)).size
    jacobian = np.zeros((out_size, x.size))
    for j, index in enumerate(np.ndindex(x.shape)):
        old = x[index]
        x[index] = old + h
        plus = np.asarray(f(x), dtype=np.float64).ravel()
        x[index] = old - h
        minus = np.asarray(f(x), dtype=np.float64).ravel()
        x[index] = old
        jacobian[:, j] = (plus - minus) / (2 * h)
    return jacobian


def relative_error(a: Any, b: Any, eps: float = 1e-12) -> np.ndarray:
    """Elementwise ``|a - b| / max(|a|, |b|, eps)``; 0 where both are 0."""
    a = _to_numpy(a)
    b = _to_numpy(b)
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), eps)


def _to_numpy(value: Any) -> np.ndarray:
    if _is_torch(value):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class GradCheckReport:
    """The result of comparing an analytic gradient with a numerical one."""

    max_relative_error: float
    worst_index: tuple[int, ...]
    analytic_value: float
    numeric_value: float
    tolerance: float
    name: str = "gradient"

    @property
    def passed(self) -> bool:
        return self.max_relative_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        return (
            f"{self.name} check {verdict}: max relative error {self.max_relative_error:.2e} "
            f"(tolerance {self.tolerance:.0e}); worst element {self.worst_index}: "
            f"analytic {self.analytic_value:.8g}, central differences expected "
            f"{self.numeric_value:.8g}"
        )

    __repr__ = __str__


def compare_gradients(
    analytic: Any, numeric: Any, *, tolerance: float = 1e-6, name: str = "gradient"
) -> GradCheckReport:
    """Compare two gradients of the same shape and report the worst element."""
    a, n = _to_numpy(analytic), _to_numpy(numeric)
    if a.shape != n.shape:
        raise ValueError(
            f"{name}: analytic gradient has shape {a.shape}, "
            f"numerical gradient has shape {n.shape}; they must match"
        )
    errors = relative_error(a, n)
    if errors.size == 0:
        return GradCheckReport(0.0, (), 0.0, 0.0, tolerance, name)
    errors = np.where(np.isnan(errors), np.inf, errors)
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(errors), errors.shape))
    return GradCheckReport(
        float(errors[worst]), worst, float(a[worst]), float(n[worst]), tolerance, name
    )


def check_gradient(
    f: Callable[[Any], Any],
    x: Any,
    analytic: Any,
    *,
    h: float = 1e-5,
    tolerance: float = 1e-6,
    name: str = "gradient",
) -> GradCheckReport:
    """Compare ``analytic`` with the central-difference gradient of ``f`` at ``x``."""
    return compare_gradients(analytic, numerical_gradient(f, x, h), tolerance=tolerance, name=name)


def check_torch_gradient(
    f: Callable[..., Any], *inputs: Any, h: float = 1e-6, tolerance: float = 1e-6
) -> list[GradCheckReport]:
    """Check autograd's gradient of scalar ``f(*inputs)`` against central differences.

    Inputs should be float64 tensors with ``requires_grad=True``; one report per input.
    """
    import torch

    for i, tensor in enumerate(inputs):
        if not (isinstance(tensor, torch.Tensor) and tensor.requires_grad):
            raise TypeError(
                f"input {i} must be a tensor with requires_grad=True, got {type(tensor).__name__}"
            )
    output = f(*inputs)
    if output.numel() != 1:
        raise ValueError(f"f must return a single number, got shape {tuple(output.shape)}")
    grads = torch.autograd.grad(output, inputs)
    reports = []
    for i, (tensor, grad) in enumerate(zip(inputs, grads, strict=True)):

        def partial(t, i=i):
            args = list(inputs)
            args[i] = t
            return f(*args)

        numeric = numerical_gradient(partial, tensor.detach().clone(), h)
        reports.append(
            compare_gradients(grad, numeric, tolerance=tolerance, name=f"gradient of input {i}")
        )
    return reports
