"""The numpy <-> torch MLP bridge: same network, same gradients (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_course import nn as npnn
from backprop_course.torch_tools import (
    grads_from_torch,
    mlp_from_params,
    n_layers,
    numpy_mlp_gradients,
    params_from_mlp,
    params_from_torch,
    torch_mlp_from_numpy,
    torch_mlp_from_params,
)


def _batch(seed, n_in=3, classes=4, batch=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n_in)), rng.integers(0, classes, size=batch)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_torch_twin_matches_the_hand_written_backward(activation):
    """Outputs, loss and every gradient agree with backprop_course.nn to float64 precision."""
    mlp = npnn.MLP([3, 5, 6, 4], activation=activation, rng=1)
    X, y = _batch(2)
    model = torch_mlp_from_numpy(mlp)
    logits = model(torch.from_numpy(X))
    np.testing.assert_allclose(logits.detach().numpy(), mlp(X), rtol=1e-12)
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    ref_loss, ref_grads = numpy_mlp_gradients(params_from_mlp(mlp), X, y, activation)
    assert abs(loss.item() - ref_loss) < 1e-12
    got = grads_from_torch(model)
    assert got.keys() == ref_grads.keys() == {"W1", "b1", "W2", "b2", "W3", "b3"}
    for key in got:
        np.testing.assert_allclose(got[key], ref_grads[key], rtol=1e-10, atol=1e-14)


def test_hand_written_gradients_pass_gradcheck():
    """numpy_mlp_gradients agrees with autograd on leaf tensors (checked by gradcheck)."""
    rng = np.random.default_rng(0)
    params = {
        "W1": rng.normal(size=(3, 4)),
        "b1": rng.normal(size=4),
        "W2": rng.normal(size=(4, 2)),
        "b2": rng.normal(size=2),
    }
    X, y = _batch(3, n_in=3, classes=2, batch=5)
    names = list(params)

    def loss(*tensors):
        p = dict(zip(names, tensors, strict=True))
        h = torch.tanh(torch.from_numpy(X) @ p["W1"] + p["b1"])
        return F.cross_entropy(h @ p["W2"] + p["b2"], torch.from_numpy(y))

    leaves = [torch.tensor(params[k], requires_grad=True) for k in names]
    assert torch.autograd.gradcheck(loss, leaves)
    grads = torch.autograd.grad(loss(*leaves), leaves)
    _, ref = numpy_mlp_gradients(params, X, y, "tanh")
    for name, grad in zip(names, grads, strict=True):
        np.testing.assert_allclose(grad.numpy(), ref[name], rtol=1e-10, atol=1e-14)


def test_round_trip_keeps_the_parameters():
    """numpy layout -> nn.Linear (weight = W.T) -> numpy layout is the identity."""
    params = params_from_mlp(npnn.MLP([2, 3, 5], rng=4))
    model = torch_mlp_from_params(params, "tanh")
    assert model[0].weight.shape == (3, 2) and model[0].weight.dtype == torch.float64
    assert isinstance(model[1], torch.nn.Tanh) and len(model) == 3
    back = params_from_torch(model)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])
    again = params_from_mlp(mlp_from_params(back, "tanh"))
    for key in params:
        np.testing.assert_array_equal(again[key], params[key])


def test_float32_twin_is_float32():
    model = torch_mlp_from_params(params_from_mlp(npnn.MLP([2, 3], rng=0)), dtype=torch.float32)
    assert model[0].weight.dtype == torch.float32


def test_bad_parameter_dicts_are_refused():
    W = np.zeros((2, 3))
    with pytest.raises(ValueError, match="W1, b1"):
        n_layers({"W2": W, "b2": np.zeros(3)})
    with pytest.raises(ValueError, match="needs both"):
        n_layers({"W1": W, "W2": np.zeros((3, 2)), "b2": np.zeros(2)})
    with pytest.raises(ValueError, match="unexpected parameter name"):
        n_layers({"weight": W})
    with pytest.raises(ValueError, match="do not chain"):
        n_layers({"W1": W, "b1": np.zeros(3), "W2": W, "b2": np.zeros(3)})
    with pytest.raises(ValueError, match="activation must be one of"):
        torch_mlp_from_params({"W1": W, "b1": np.zeros(3)}, "gelu")


def test_grads_before_backward_are_an_error():
    model = torch_mlp_from_params({"W1": np.zeros((2, 3)), "b1": np.zeros(3)})
    with pytest.raises(ValueError, match="backward"):
        grads_from_torch(model)
