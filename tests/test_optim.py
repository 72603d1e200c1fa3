"""optim: hand-written optimizers match torch.optim step for step; schedules; surfaces."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from backprop_course import optim
from backprop_course.gradcheck import numerical_gradient

CASES = [
    (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
    (optim.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 1e-8}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-8}),
]


@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CASES, ids=[c[0].__name__ for c in CASES])
def test_matches_torch_step_for_step(ours, theirs, kwargs):
    """Twenty steps on a random quadratic give the same parameters as torch.optim."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    hessian = a @ a.T + np.eye(5)
    p0 = [rng.normal(size=5), rng.normal(size=(2, 3))]
    params = [p.copy() for p in p0]
    tensors = [torch.tensor(p, requires_grad=True) for p in p0]
    mine, ref = ours(params, **kwargs), theirs(tensors, **kwargs)
    for _ in range(20):
        grads = [hessian @ params[0], np.sin(params[1])]
        mine.step(grads)
        ref.zero_grad()
        loss = 0.5 * tensors[0] @ torch.tensor(hessian) @ tensors[0] - torch.cos(tensors[1]).sum()
        loss.backward()
        ref.step()
        for p, t in zip(params, tensors, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_params_are_updated_in_place():
    """The caller's arrays change; nothing is rebound."""
    p = np.ones(3)
    optim.SGD([p], lr=0.5).step([np.ones(3)])
    np.testing.assert_array_equal(p, 0.5 * np.ones(3))


def test_bad_gradients_are_clear_errors():
    """A wrong count or shape of gradients names what was expected."""
    opt = optim.Adam([np.zeros(3), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="expects 2 gradients"):
        opt.step([np.zeros(3)])
    with pytest.raises(ValueError, match=r"gradient 1 has shape \(4,\).*shape \(2, 2\)"):
        opt.step([np.zeros(3), np.zeros(4)])
    with pytest.raises(TypeError, match="numpy array"):
        optim.SGD([[1.0, 2.0]], lr=0.1)
    with pytest.raises(ValueError, match="lr must be positive"):
        optim.SGD([np.zeros(1)], lr=0)


def test_warmup_cosine_shape():
    """Warmup rises linearly to max_lr, then a cosine falls to min_lr at the end."""
    lrs = [optim.warmup_cosine(s, 100, 10, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(lrs[:10]))
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[55] == pytest.approx(0.55) and lrs[100] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.warmup_cosine(0, 10, 20, 1.0)


def test_step_decay():
    """step_decay halves the rate every `every` steps."""
    assert [optim.step_decay(s, 1.0, 0.5, 10) for s in (0, 9, 10, 25)] == [1, 1, 0.5, 0.25]


@pytest.mark.parametrize("name", ["rosenbrock", "saddle", "bowl"])
def test_surface_gradients(name):
    """Each surface's gradient matches central differences."""
    f, grad = getattr(optim, name), getattr(optim, f"{name}_grad")
    point = np.array([0.3, -0.7])
    numeric = numerical_gradient(lambda p: f(p[0], p[1]), point)
    np.testing.assert_allclose(grad(*point), numeric, rtol=1e-6)
