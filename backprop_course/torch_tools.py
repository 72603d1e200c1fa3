"""Bridges between the numpy MLP of lessons 05-08 and PyTorch (lesson 09).

The numpy layers of :mod:`backprop_course.nn` store a linear layer's weight as
``W`` of shape ``(in, out)`` and compute ``x @ W + b``; ``torch.nn.Linear``
stores ``weight`` of shape ``(out, in)`` and computes ``x @ weight.T + bias``.
The helpers here convert in both directions, so the same network can be run
by the hand-written backward pass and by autograd and the gradients compared
element by element.

Parameters travel as a plain dict ``{"W1": W1, "b1": b1, "W2": ..., ...}``
(numpy layout, layers numbered from 1), which is also how the lesson 09
exercises receive and return them.

- :func:`params_from_mlp`: copy the parameters of a :class:`~backprop_course.nn.MLP`.
- :func:`mlp_from_params`: a numpy :class:`~backprop_course.nn.MLP` holding given parameters.
- :func:`torch_mlp_from_params`, :func:`torch_mlp_from_numpy`: the same network as an
  ``nn.Sequential`` of ``nn.Linear`` and activation modules (float64 by default).
- :func:`params_from_torch`, :func:`grads_from_torch`: read a torch MLP's parameters or
  their ``.grad`` back in numpy layout.
- :func:`numpy_mlp_gradients`: loss and gradients of the numpy reference, as a dict.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from backprop_course import nn as npnn

__all__ = [
    "ACTIVATIONS",
    "grads_from_torch",
    "mlp_from_params",
    "n_layers",
    "numpy_mlp_gradients",
    "params_from_mlp",
    "params_from_torch",
    "torch_mlp_from_numpy",
    "torch_mlp_from_params",
]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

_KEY = re.compile(r"^[Wb](\d+)$")


def n_layers(params: dict) -> int:
    """How many linear layers a parameter dict ``{"W1", "b1", ...}`` describes.

    Raises ValueError when keys are missing, unexpected, or shapes do not chain.
    """
    numbers = set()
    for key in params:
        match = _KEY.match(str(key))
        if not match:
            raise ValueError(f"unexpected parameter name {key!r}: use 'W1', 'b1', 'W2', ...")
        numbers.add(int(match[1]))
    count = len(numbers)
    if count == 0 or numbers != set(range(1, count + 1)):
        raise ValueError(f"parameter names must be W1, b1, ..., Wn, bn; got {sorted(params)}")
    for i in range(1, count + 1):
        if f"W{i}" not in params or f"b{i}" not in params:
            raise ValueError(f"layer {i} needs both W{i} and b{i}")
        W, b = np.shape(params[f"W{i}"]), np.shape(params[f"b{i}"])
        if len(W) != 2 or b != (W[1],):
            raise ValueError(f"W{i} must be (in, out) and b{i} (out,), got {W} and {b}")
        if i > 1 and np.shape(params[f"W{i - 1}"])[1] != W[0]:
            raise ValueError(f"W{i - 1} and W{i} do not chain: {params[f'W{i - 1}'].shape}, {W}")
    return count


def params_from_mlp(mlp: npnn.Sequential) -> dict[str, np.ndarray]:
    """Copies of the weights and biases of a numpy MLP: ``{"W1": (in, out), "b1": (out,), ...}``."""
    linears = [layer for layer in mlp if isinstance(layer, npnn.Linear)]
    params = {}
    for i, layer in enumerate(linears, start=1):
        params[f"W{i}"] = layer.W.copy()
        params[f"b{i}"] = layer.b.copy()
    return params


def mlp_from_params(params: dict, activation: str = "relu") -> npnn.MLP:
    """A float64 numpy :class:`~backprop_course.nn.MLP` holding copies of ``params``."""
    count = n_layers(params)
    sizes = [np.shape(params["W1"])[0]] + [
        np.shape(params[f"W{i}"])[1] for i in range(1, count + 1)
    ]
    mlp = npnn.MLP(sizes, activation=activation, rng=0)
    for i, layer in enumerate((la for la in mlp if isinstance(la, npnn.Linear)), start=1):
        layer.W[...] = np.asarray(params[f"W{i}"], dtype=np.float64)
        layer.b[...] = np.asarray(params[f"b{i}"], dtype=np.float64)
    return mlp


def torch_mlp_from_params(
    params: dict, activation: str = "relu", dtype: torch.dtype = torch.float64
) -> nn.Sequential:
    """``nn.Sequential(Linear, activation, ..., Linear)`` holding copies of ``params``.

    Each ``nn.Linear`` gets ``weight = W.T`` (torch keeps ``(out, in)``) and
    ``bias = b``; no activation after the last layer, as in the numpy MLP.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    count = n_layers(params)
    layers: list[nn.Module] = []
    for i in range(1, count + 1):
        W = torch.as_tensor(np.asarray(params[f"W{i}"]), dtype=dtype)
        b = torch.as_tensor(np.asarray(params[f"b{i}"]), dtype=dtype)
        linear = nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(W.T)
            linear.bias.copy_(b)
        layers.append(linear)
        if i < count:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def torch_mlp_from_numpy(mlp: npnn.MLP, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The torch twin of a numpy :class:`~backprop_course.nn.MLP`: same weights, same activation."""
    return torch_mlp_from_params(params_from_mlp(mlp), activation=mlp.activation, dtype=dtype)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def params_from_torch(model: nn.Module) -> dict[str, np.ndarray]:
    """The parameters of the linear layers of ``model``, in numpy layout (``W = weight.T``)."""
    params = {}
    for i, linear in enumerate(_linears(model), start=1):
        params[f"W{i}"] = linear.weight.detach().T.cpu().numpy().copy()
        params[f"b{i}"] = linear.bias.detach().cpu().numpy().copy()
    return params


def grads_from_torch(model: nn.Module) -> dict[str, np.ndarray]:
    """The ``.grad`` of every linear layer of ``model`` in numpy layout (``dW = weight.grad.T``).

    Raises ValueError when a gradient is missing (no backward pass yet).
    """
    grads = {}
    for i, linear in enumerate(_linears(model), start=1):
        if linear.weight.grad is None or linear.bias.grad is None:
            raise ValueError(f"linear layer {i} has no .grad: call loss.backward() first")
        grads[f"W{i}"] = linear.weight.grad.detach().T.cpu().numpy().copy()
        grads[f"b{i}"] = linear.bias.grad.detach().cpu().numpy().copy()
    return grads


def numpy_mlp_gradients(
    params: dict, X: np.ndarray, y: np.ndarray, activation: str = "relu"
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy of the numpy MLP and its hand-written gradients.

    Returns ``(loss, {"W1": dW1, "b1": db1, ...})``.
    """
    mlp = mlp_from_params(params, activation)
    loss_fn = npnn.SoftmaxCrossEntropy()
    loss = loss_fn(mlp(np.asarray(X, dtype=np.float64)), np.asarray(y))
    mlp.backward(loss_fn.backward())
    linears = [layer for layer in mlp if isinstance(layer, npnn.Linear)]
    grads = {}
    for i, layer in enumerate(linears, start=1):
        grads[f"W{i}"], grads[f"b{i}"] = layer.dW.copy(), layer.db.copy()
    return loss, grads
