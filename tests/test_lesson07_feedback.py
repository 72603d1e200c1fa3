"""Lesson 07: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import numpy as np
import torch

from backprop_course import nn
from backprop_course.exercises import lesson07 as reference
from backprop_course.transformer import layer_norm_backward
from feedback import lesson_feedback_tests


def init_std(fan_in, fan_out, kind, *, mistake=None):
    if kind == "glorot":
        if mistake == "no sqrt":
            return 2 / (fan_in + fan_out)
        if mistake == "fan_in only":
            return np.sqrt(2 / fan_in)
        if mistake == "uniform bound":
            return np.sqrt(6 / (fan_in + fan_out))
        return np.sqrt(2 / (fan_in + fan_out))
    if mistake == "no sqrt":
        return 2 / fan_in
    if mistake == "fan_out":
        return np.sqrt(2 / fan_out)
    if mistake == "lecun":
        return np.sqrt(1 / fan_in)
    return np.sqrt(2 / fan_in)


def make_init_std(mistake):
    return lambda fan_in, fan_out, kind: init_std(fan_in, fan_out, kind, mistake=mistake)


def clip(grads, max_norm, *, mistake=None):
    squares = sum(float((g**2).sum()) for g in grads)
    total = squares if mistake == "no sqrt" else np.sqrt(squares)
    if mistake == "per tensor":
        return [g * min(1.0, max_norm / np.linalg.norm(g)) for g in grads]
    if mistake == "always":
        return [g * max_norm / total for g in grads]
    return [g * min(1.0, max_norm / total) for g in grads]


def clip_torch_style(grads, max_norm):
    total = np.sqrt(sum(np.sum(g * g) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return grads


def make_clip(mistake):
    return lambda grads, max_norm: clip(grads, max_norm, mistake=mistake)


def norm_backward(dy, x, gamma, eps, *, axis, mistake=None):
    """Batch norm (axis=0) or layer norm (axis=1) backward; the keyword adds a mistake."""
    ddof = 1 if mistake == "unbiased" else 0
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    std = np.sqrt(var + eps)
    x_hat = (x - mu) / std
    g = dy * gamma
    if mistake == "sums":  # forgot the 1/N of d(mean)/dx and d(var)/dx
        dx = (
            g - g.sum(axis=axis, keepdims=True) - x_hat * (g * x_hat).sum(axis=axis, keepdims=True)
        ) / std
    elif mistake == "no mean":
        dx = (g - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)) / std
    elif mistake == "no var":
        dx = (g - g.mean(axis=axis, keepdims=True)) / std
    elif mistake == "unbiased":
        n = x.shape[axis]
        dx = (g - g.mean(axis=axis, keepdims=True)) / std - (x - mu) * (g * (x - mu)).sum(
            axis=axis, keepdims=True
        ) / (std**3 * (n - 1))
    else:
        dx = (
            g
            - g.mean(axis=axis, keepdims=True)
            - x_hat * (g * x_hat).mean(axis=axis, keepdims=True)
        ) / std
    dgamma = (dy * x_hat).sum(axis=0)
    dbeta = dy if mistake == "dbeta not summed" else dy.sum(axis=0)
    if mistake == "dbeta mean":
        dbeta = dy.mean(axis=0)
    return dx, dgamma, dbeta


def make_norm(axis, mistake=None):
    return lambda dy, x, gamma, eps: norm_backward(dy, x, gamma, eps, axis=axis, mistake=mistake)


def batchnorm_centred(dy, x, gamma, eps):
    """The three-path form (through x_hat, the mean and the variance), written out."""
    n = len(x)
    mu, var = x.mean(axis=0), x.var(axis=0)
    inv = 1 / np.sqrt(var + eps)
    g = dy * gamma
    dvar = np.sum(g * (x - mu), axis=0) * -0.5 * inv**3
    dmu = -inv * g.sum(axis=0)
    dx = g * inv + dmu / n + dvar * 2 * (x - mu) / n
    return dx, np.einsum("nd,nd->d", dy, (x - mu) * inv), np.einsum("nd->d", dy)


def batchnorm_torch(dy, x, gamma, eps):
    """The gradients by torch autograd: refused, the exercise is by hand."""

    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    y.backward(torch.tensor(dy))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def layernorm_torch(dy, x, gamma, eps):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.layer_norm(xt, (x.shape[1],), gt, bt, eps=eps)
    y.backward(torch.tensor(dy))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


CORRECT_ANSWERS = {
    "07.vanishing_bound": lambda L, w_max: (w_max / 4) ** L,
    "07.init_std": make_init_std(None),
    "07.clip_by_global_norm": make_clip(None),
    "07.batchnorm_backward": make_norm(0),
    "07.layernorm_backward": make_norm(1),
}

ALSO_CORRECT = [
    ("07.vanishing_bound", lambda L, w: float(np.prod([w * 0.5 * (1 - 0.5)] * L))),
    ("07.init_std", lambda fi, fo, kind: (2 / (fi + fo if kind == "glorot" else fi)) ** 0.5),
    ("07.clip_by_global_norm", clip_torch_style),
    ("07.layernorm_backward", lambda dy, x, g, eps: list(make_norm(1)(dy, x, g, eps))),
    ("07.batchnorm_backward", batchnorm_centred),
]

WRONG_ANSWERS = [
    ("07.vanishing_bound", lambda L, w: (w / 2) ** L, "used 1/2"),
    ("07.vanishing_bound", lambda L, w: (w / 4) ** (L - 1), "off by one layer"),
    ("07.vanishing_bound", lambda L, w: w / 4 * L, "instead of raising to the power"),
    ("07.vanishing_bound", lambda L, w: 0.25**L, "ignored the weights"),
    ("07.vanishing_bound", lambda L, w: w**L, "ignored the sigmoid's slope"),
    ("07.vanishing_bound", lambda L, w: w * 0.25**L, "counted the weight once"),
    ("07.init_std", make_init_std("no sqrt"), "forgot the square root"),
    ("07.init_std", make_init_std("fan_in only"), "used fan_in only"),
    ("07.init_std", make_init_std("uniform bound"), "uniform distribution"),
    ("07.init_std", make_init_std("fan_out"), "used fan_out"),
    ("07.init_std", make_init_std("lecun"), "forgot the factor 2"),
    ("07.init_std", lambda fi, fo, kind: np.sqrt(init_std(fi, fo, kind)), "variance vs std"),
    ("07.clip_by_global_norm", make_clip("per tensor"), "clipped each tensor separately"),
    ("07.clip_by_global_norm", make_clip("always"), "scaled when under the threshold"),
    ("07.clip_by_global_norm", make_clip("no sqrt"), "forgot the square root in the norm"),
    ("07.clip_by_global_norm", lambda grads, m: grads[0], "list of arrays"),
    ("07.clip_by_global_norm", lambda grads, m: None, "is a `return` missing?"),
    ("07.clip_by_global_norm", lambda grads, m: grads[:1], "returned 1 arrays"),
    ("07.batchnorm_backward", make_norm(0, "no mean"), "forgot the mean term"),
    ("07.batchnorm_backward", make_norm(0, "no var"), "forgot the variance term"),
    ("07.batchnorm_backward", make_norm(0, "unbiased"), "used the unbiased variance"),
    ("07.batchnorm_backward", make_norm(0, "dbeta not summed"), "dbeta not summed over the batch"),
    ("07.batchnorm_backward", make_norm(0, "dbeta mean"), "averaged over the batch"),
    ("07.batchnorm_backward", make_norm(1), "normalized over the features"),
    ("07.batchnorm_backward", lambda dy, x, g, eps: make_norm(0)(dy, x, g, eps)[0], "tuple"),
    ("07.layernorm_backward", make_norm(1, "no mean"), "forgot the mean term"),
    ("07.layernorm_backward", make_norm(1, "no var"), "forgot the variance term"),
    ("07.layernorm_backward", make_norm(1, "unbiased"), "used the unbiased variance"),
    ("07.layernorm_backward", make_norm(1, "dbeta not summed"), "dbeta not summed over the batch"),
    ("07.layernorm_backward", make_norm(0), "normalized over the batch"),
    (
        "07.layernorm_backward",
        lambda dy, x, g, eps: (*make_norm(1)(dy, x, g, eps)[:2], dy.sum(axis=1)),
        "summed over the features",
    ),
    ("07.batchnorm_backward", make_norm(0, "sums"), "forgot the 1/N"),
    ("07.layernorm_backward", make_norm(1, "sums"), "forgot the 1/N"),
    ("07.batchnorm_backward", lambda dy, x, g, eps: None, "is a `return` missing?"),
    (
        "07.layernorm_backward",
        lambda dy, x, g, eps: (make_norm(1)(dy, x, g, eps)[0].T, *make_norm(1)(dy, x, g, eps)[1:]),
        "transposed",
    ),
    ("07.vanishing_bound", lambda L, w: None, "is a `return` missing?"),
]

# ---------------------------------------------------------------- shortcuts (refused)


def batchnorm_package(dy, x, gamma, eps):
    layer = nn.BatchNorm1d(x.shape[1], eps=eps)
    layer.gamma[...] = gamma
    layer.forward(x)
    return layer.backward(dy), layer.dgamma, layer.dbeta


def layernorm_package(dy, x, gamma, eps):
    layer = nn.LayerNorm(x.shape[1], eps=eps)
    layer.gamma[...] = gamma
    layer.forward(x)
    return layer.backward(dy), layer.dgamma, layer.dbeta


def layernorm_transformer(dy, x, gamma, eps):
    grads = layer_norm_backward(torch.tensor(x), torch.tensor(gamma), torch.tensor(dy), eps)
    return tuple(g.numpy() for g in grads)


def clip_torch(grads, max_norm):
    tensors = [torch.zeros(g.shape, dtype=torch.float64) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    return [t.grad.numpy() for t in tensors]


def init_std_package(fan_in, fan_out, kind):
    return float(nn.Linear(fan_in, fan_out, init=kind, rng=0).W.std())


BY_HAND = "by hand, without autograd"
SHORTCUTS = [
    ("07.batchnorm_backward", batchnorm_torch, BY_HAND),
    ("07.batchnorm_backward", batchnorm_package, "backprop_course.nn.BatchNorm1d"),
    ("07.batchnorm_backward", lambda *a: reference._norm_backward(*a, axis=0), "lesson07"),
    ("07.layernorm_backward", layernorm_torch, BY_HAND),
    ("07.layernorm_backward", layernorm_package, "backprop_course.nn.LayerNorm"),
    ("07.layernorm_backward", layernorm_transformer, "backprop_course.transformer"),
    ("07.clip_by_global_norm", clip_torch, "clip_grad_norm_"),
    ("07.init_std", init_std_package, "backprop_course.nn.Linear"),
]
RULED = ["07.batchnorm_backward", "07.layernorm_backward", "07.clip_by_global_norm"]


globals().update(
    lesson_feedback_tests(
        "07",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        ruled=RULED,
    )
)
