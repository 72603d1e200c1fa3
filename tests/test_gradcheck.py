"""gradcheck: finite differences and gradient reports, numpy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backprop_course.gradcheck import (
    central_difference,
    check_gradient,
    check_torch_gradient,
    compare_gradients,
    forward_difference,
    numerical_gradient,
    numerical_jacobian,
    relative_error,
)


def test_central_is_second_order_forward_first_order():
    """Halving h halves the forward error and quarters the central error."""
    exact = math.cos(1.0)
    f_errors = [abs(forward_difference(math.sin, 1.0, h) - exact) for h in (1e-2, 5e-3)]
    c_errors = [abs(central_difference(math.sin, 1.0, h) - exact) for h in (1e-2, 5e-3)]
    assert f_errors[0] / f_errors[1] == pytest.approx(2, rel=0.02)
    assert c_errors[0] / c_errors[1] == pytest.approx(4, rel=0.02)


def test_numerical_gradient_numpy():
    """The gradient of sum(x**3) is 3 x**2, and x is restored afterwards."""
    x = np.random.default_rng(0).normal(size=(3, 4))
    before = x.copy()
    grad = numerical_gradient(lambda a: np.sum(a**3), x)
    np.testing.assert_allclose(grad, 3 * before**2, rtol=1e-7)
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_rejects_integers():
    """An integer array cannot be nudged by h; the error says so."""
    with pytest.raises(TypeError, match="floating-point"):
        numerical_gradient(np.sum, np.arange(3))


def test_numerical_gradient_torch():
    """Torch tensors work too and come back as tensors of the same shape."""
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = numerical_gradient(lambda t: (t.sin()).sum(), x.clone())
    assert isinstance(grad, torch.Tensor) and grad.shape == x.shape
    torch.testing.assert_close(grad, x.cos(), rtol=1e-8, atol=1e-10)


def test_numerical_jacobian():
    """The Jacobian of x -> A x is A."""
    a = np.random.default_rng(1).normal(size=(3, 2))
    np.testing.assert_allclose(numerical_jacobian(lambda x: a @ x, np.ones(2)), a, rtol=1e-7)


def test_relative_error():
    """Relative error is |a-b| / max(|a|,|b|), and 0 where both are 0."""
    np.testing.assert_allclose(
        relative_error([1.0, 0.0, 2.0], [1.1, 0.0, -2.0]), [0.1 / 1.1, 0.0, 2.0]
    )


def test_report_names_worst_element():
    """A mismatch reports the worst index, both values and the verdict."""
    analytic = np.array([[1.0, 2.0], [3.0, 4.0]])
    numeric = analytic.copy()
    numeric[1, 0] = 3.3
    report = compare_gradients(analytic, numeric, tolerance=1e-6)
    assert not report and report.worst_index == (1, 0)
    assert "MISMATCH" in str(report) and "analytic 3" in str(report) and "3.3" in str(report)


def test_report_shape_mismatch():
    """Gradients of different shapes are a clear ValueError."""
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(3,\)"):
        compare_gradients(np.zeros(2), np.zeros(3))


def test_check_gradient_passes_and_fails():
    """check_gradient accepts the right gradient and flags a wrong one."""
    x = np.linspace(-1, 1, 5)
    assert check_gradient(lambda a: np.sum(np.tanh(a)), x, 1 - np.tanh(x) ** 2)
    assert not check_gradient(lambda a: np.sum(np.tanh(a)), x, np.tanh(x))


def test_check_torch_gradient():
    """Autograd's gradient agrees with central differences for every input."""
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    reports = check_torch_gradient(lambda a, b: (a * b.exp()).sum(), a, b)
    assert len(reports) == 2 and all(reports)


def test_check_torch_gradient_needs_requires_grad():
    """Inputs without requires_grad are refused with the input's position."""
    with pytest.raises(TypeError, match="input 0"):
        check_torch_gradient(lambda a: a.sum(), torch.zeros(2))
