"""Numbers that the text of lessons 01-06 states in words, pinned where they come from.

Each test rebuilds the lesson's measurement cheaply (no notebook run) and asserts
the claim its prose makes, so a change to the package's defaults, data or layers
that would make the sentence false fails here first.
"""

from __future__ import annotations

import numpy as np
import pytest

from backprop_course.gradcheck import central_difference, forward_difference

# ---------------------------------------------------------------- lesson 01, cells 9-11

_HS = np.logspace(-16, -1, 151)
_EXACT = np.cos(1.0)
_EPS = np.finfo(np.float64).eps


def _errors():
    forward = np.abs((np.sin(1.0 + _HS) - np.sin(1.0)) / _HS - _EXACT)
    central = np.abs((np.sin(1.0 + _HS) - np.sin(1.0 - _HS)) / (2 * _HS) - _EXACT)
    return forward, central


def test_lesson01_default_steps_sit_right_of_the_bottoms():
    """The package's default steps are on the truncation side: ~100x+ (forward), ~10x+ (central)."""
    forward, central = _errors()
    default_forward = abs(forward_difference(np.sin, 1.0) - _EXACT)
    default_central = abs(central_difference(np.sin, 1.0) - _EXACT)
    assert _HS[np.argmin(forward)] < 1e-6 and _HS[np.argmin(central)] < 1e-5
    assert 100 < default_forward / forward.min() < 1000  # "about two hundred times"
    assert 10 < default_central / central.min() < 50  # "about twenty times"
    assert default_central / _EXACT < 1e-10  # "about 11 correct digits"


def test_lesson01_round_off_runs_below_its_model():
    """In the round-off region the measured error stays under eps|f|/h, typically 5-10x under."""
    forward, central = _errors()
    hs = _HS
    model = _EPS * np.sin(1.0) / hs
    for err, upto in [(forward, 1e-10), (central, 1e-7)]:
        keep = (hs >= 1e-15) & (hs <= upto)
        ratio = err[keep] / model[keep]
        assert ratio.max() < 1 and 0.05 < np.median(ratio) < 0.3


# ---------------------------------------------------------------- lesson 06, cells 16-18


def test_lesson06_untrained_loss_starts_a_little_above_ln_c():
    """The lesson's untrained 2-64-64-3 He network on its spirals starts within 10% above ln 3."""
    from backprop_course import nn
    from backprop_course.data import make_spirals

    X, y = make_spirals(300, seed=0, classes=3, noise=0.5, turn=7.0)
    rng = np.random.default_rng(0)  # the lesson's make_mlp([2, 64, 64, 3], seed=0)
    model = nn.Sequential(
        nn.Linear(2, 64, init="he", rng=rng),
        nn.ReLU(),
        nn.Linear(64, 64, init="he", rng=rng),
        nn.ReLU(),
        nn.Linear(64, 3, init="he", rng=rng),
    )
    loss = nn.SoftmaxCrossEntropy().forward(model.forward(X), y)
    assert np.log(3) < loss < 1.1 * np.log(3)


# ---------------------------------------------------------------- lessons 04-05: weight layouts


def test_lesson05_torch_linear_weight_is_our_w_transposed():
    """nn.Linear.weight is (out, in): our W is weight.T and weight.grad is our dW.T = dY^T X."""
    torch = pytest.importorskip("torch")
    from backprop_course import nn

    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 2).double()
    assert tuple(linear.weight.shape) == (2, 3)
    ours = nn.Linear(3, 2, rng=0)
    ours.W[...] = linear.weight.detach().numpy().T
    ours.b[...] = linear.bias.detach().numpy()
    X = np.random.default_rng(1).normal(size=(4, 3))
    dY = np.random.default_rng(2).normal(size=(4, 2))
    Y = linear(torch.from_numpy(X))
    Y.backward(torch.from_numpy(dY))
    np.testing.assert_allclose(ours.forward(X), Y.detach().numpy(), rtol=1e-12)
    ours.backward(dY)
    np.testing.assert_allclose(linear.weight.grad.numpy(), ours.dW.T, rtol=1e-12)
    np.testing.assert_allclose(ours.dW.T, dY.T @ X, rtol=1e-12)
