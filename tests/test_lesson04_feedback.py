"""Lesson 04: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import numpy as np
import torch

from backprop_course import nn
from backprop_course.autograd import Value
from backprop_course.exercises import lesson04 as reference
from backprop_course.optim import SGD
from feedback import lesson_feedback_tests


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _bce_loss(model, X, y, mean=True):
    total = 0
    for x, label in zip(X, y):
        p = model(list(x)).sigmoid()
        total = total - (label * p.log() + (1 - label) * (1 - p).log())
    return total / len(y) if mean else total


def make_train_step(
    *, sign=-1, use_lr=True, mean=True, zero="before", loss_after=False, decay=1.0, penalty=1.0
):
    """A train_step, correct by default; the keywords reproduce typical mistakes."""

    def train_step(model, X, y, lr, wd):
        loss = _bce_loss(model, X, y, mean=mean)
        squares = sum(p.data**2 for p in model.parameters())
        if zero == "before":
            model.zero_grad()
        loss.backward()
        if zero == "between":
            model.zero_grad()
        for p in model.parameters():
            p.data += sign * (lr if use_lr else 1) * (p.grad + decay * wd * p.data)
        if zero == "after":
            model.zero_grad()
        if loss_after:
            return _bce_loss(model, X, y).data + wd / 2 * sum(p.data**2 for p in model.parameters())
        return loss.data + penalty * wd / 2 * squares

    return train_step


def train_step_in_graph(model, X, y, lr, wd):
    """The penalty built into the Value graph, the stable logistic form log(1 + exp(-t s))."""
    scores = [model(list(x)) for x in X]
    signs = [2 * int(t) - 1 for t in y]
    losses = [((-t * s).exp() + 1).log() for s, t in zip(scores, signs)]
    penalty = sum(p * p for p in model.parameters()) * (wd / 2)
    loss = sum(losses) / len(losses) + penalty
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data -= lr * p.grad
    return loss


def train_step_rebinding(model, X, y, lr, wd):
    loss = _bce_loss(model, X, y)
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p = p.data - lr * (p.grad + wd * p.data)  # the mistake under test: rebinds the name only
    return loss.data + wd / 2 * sum(p.data**2 for p in model.parameters())


def sgd_in_place(params, grads, lr):
    for p, g in zip(params, grads):
        p -= lr * g
    return params


def weighted_bce_grad(z, y, a):
    p = _sigmoid(z)
    return (1 - y) * p - a * y * (1 - p)


CORRECT_ANSWERS = {
    "04.neuron": lambda x, w, b: _sigmoid(np.dot(w, x) + b),
    "04.mse_grad": lambda y_hat, y: 2 * (y_hat - y) / y_hat.size,
    "04.bce_grad_logit": weighted_bce_grad,
    "04.hidden_deltas": lambda W2, d, z: (W2.T @ d) * _sigmoid(z) * (1 - _sigmoid(z)),
    "04.sgd_step": lambda params, grads, lr: [p - lr * g for p, g in zip(params, grads)],
    "04.train_step": make_train_step(),
}

# Other correct ways to write the same answers.
ALSO_CORRECT = [
    ("04.neuron", lambda x, w, b: float(0.5 * (1 + np.tanh(0.5 * (w @ x + b))))),
    ("04.mse_grad", lambda y_hat, y: (2 / np.prod(y.shape)) * (y_hat - y)),
    (
        "04.bce_grad_logit",
        lambda z, y, a: np.where(y == 1, -a / (1 + np.exp(z)), np.exp(z) / (1 + np.exp(z))),
    ),
    ("04.hidden_deltas", lambda W2, d, z: (d @ W2) * np.exp(-z) / (1 + np.exp(-z)) ** 2),
    ("04.sgd_step", sgd_in_place),
    ("04.sgd_step", lambda params, grads, lr: tuple(p - lr * g for p, g in zip(params, grads))),
    ("04.train_step", make_train_step(zero="after")),
    ("04.train_step", train_step_in_graph),
]

WRONG_ANSWERS = [
    ("04.neuron", lambda x, w, b: _sigmoid(np.dot(w, x)), "forgot the bias"),
    ("04.neuron", lambda x, w, b: np.dot(w, x) + b, "forgot the activation"),
    ("04.neuron", lambda x, w, b: _sigmoid(np.dot(w, x)) + b, "after the activation"),
    ("04.neuron", lambda x, w, b: np.tanh(np.dot(w, x) + b), "used tanh"),
    ("04.neuron", lambda x, w, b: 1 / (1 + np.exp(np.dot(w, x) + b)), "sign slip"),
    ("04.neuron", lambda x, w, b: _sigmoid(w * x + b), "shape"),
    ("04.neuron", lambda x, w, b: None, "is a `return` missing?"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y - y_hat) / y.size, "sign error"),
    ("04.mse_grad", lambda y_hat, y: (y_hat - y) / y.size, "forgot the factor 2"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y_hat - y) / len(y), "divided by the batch size n only"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y_hat - y) / y.shape[1], "number of outputs K only"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y_hat - y), "mean vs sum"),
    ("04.mse_grad", lambda y_hat, y: 2 * y_hat / y.size, "forgot to subtract the target"),
    ("04.mse_grad", lambda y_hat, y: np.mean((y_hat - y) ** 2), "shape"),
    ("04.mse_grad", lambda y_hat, y: (2 * (y_hat - y) / y.size).T, "transposed"),
    ("04.mse_grad", lambda y_hat, y: None, "is a `return` missing?"),
    ("04.bce_grad_logit", lambda z, y, a: _sigmoid(z) - y, "ignored pos_weight"),
    ("04.bce_grad_logit", lambda z, y, a: a * (_sigmoid(z) - y), "the whole gradient"),
    (
        "04.bce_grad_logit",
        lambda z, y, a: a * (1 - y) * _sigmoid(z) - y * (1 - _sigmoid(z)),
        "instead of the y log p term",
    ),
    ("04.bce_grad_logit", lambda z, y, a: -weighted_bce_grad(z, y, a), "sign error"),
    (
        "04.bce_grad_logit",
        lambda z, y, a: -a * y / _sigmoid(z) + (1 - y) / (1 - _sigmoid(z)),
        "with respect to p, not z",
    ),
    ("04.bce_grad_logit", lambda z, y, a: (1 - y) * z - a * y * (1 - z), "forgot the sigmoid"),
    (
        "04.bce_grad_logit",
        lambda z, y, a: weighted_bce_grad(z, y, a).astype(np.float32) + 1e-3,
        "differs",
    ),
    (
        "04.hidden_deltas",
        lambda W2, d, z: (W2 @ d) * _sigmoid(z) * (1 - _sigmoid(z)),
        "transposed weight matrix",
    ),
    ("04.hidden_deltas", lambda W2, d, z: W2.T @ d, "forgot the activation derivative"),
    ("04.hidden_deltas", lambda W2, d, z: (W2.T @ d) * (1 - np.tanh(z) ** 2), "lesson's tanh"),
    ("04.hidden_deltas", lambda W2, d, z: (W2.T @ d) * z * (1 - z), "used z (1 - z)"),
    ("04.hidden_deltas", lambda W2, d, z: (W2.T @ d) * _sigmoid(z), "instead of its derivative"),
    (
        "04.hidden_deltas",
        lambda W2, d, z: d.sum() * _sigmoid(z) * (1 - _sigmoid(z)),
        "ignored the weights",
    ),
    (
        "04.sgd_step",
        lambda params, grads, lr: [p + lr * g for p, g in zip(params, grads)],
        "added the gradient (sign error)",
    ),
    (
        "04.sgd_step",
        lambda params, grads, lr: [p - g for p, g in zip(params, grads)],
        "forgot the learning rate",
    ),
    (
        "04.sgd_step",
        lambda params, grads, lr: [lr * g for g in grads],
        "returned the step",
    ),
    ("04.sgd_step", lambda params, grads, lr: params[0] - lr * grads[0], "list of new parameter"),
    (
        "04.sgd_step",
        lambda params, grads, lr: [p - lr * g for p, g in zip(params[:2], grads[:2])],
        "returned 2 arrays for 4",
    ),
    ("04.train_step", make_train_step(sign=1), "added the gradient (sign error)"),
    ("04.train_step", make_train_step(use_lr=False), "forgot the learning rate"),
    ("04.train_step", make_train_step(mean=False), "sum of the per-example losses"),
    ("04.train_step", make_train_step(zero="never"), "forgot model.zero_grad()"),
    ("04.train_step", make_train_step(zero="between"), "before the update"),
    ("04.train_step", make_train_step(loss_after=True), "the loss after the update"),
    ("04.train_step", make_train_step(decay=0.0), "forgot the weight decay"),
    ("04.train_step", make_train_step(decay=2.0), "twice too strong"),
    ("04.train_step", make_train_step(decay=-1.0), "wrong sign"),
    ("04.train_step", make_train_step(penalty=0.0), "without the penalty"),
    ("04.train_step", make_train_step(penalty=2.0), "without its 1/2"),
    ("04.train_step", train_step_rebinding, "did not change"),
    ("04.train_step", lambda model, X, y, lr, wd: None, "is a `return` missing?"),
    ("04.train_step", lambda model, X, y, lr, wd: "small", "as a number"),
    ("04.sgd_step", lambda params, grads, lr: None, "is a `return` missing?"),
]


# ---------------------------------------------------------------- shortcuts (refused)


def mse_grad_torch(y_hat, y):
    t = torch.tensor(y_hat, requires_grad=True)
    torch.mean((t - torch.tensor(y)) ** 2).backward()
    return t.grad.numpy()


def mse_grad_nn(y_hat, y):
    loss = nn.MSELoss()
    loss.forward(y_hat, y)
    return loss.backward()


def mse_grad_values(y_hat, y):
    values = [Value(float(v)) for v in y_hat.ravel()]
    loss = sum((v - float(t)) ** 2 for v, t in zip(values, y.ravel())) * (1.0 / y.size)
    loss.backward()
    return np.array([v.grad for v in values]).reshape(y.shape)


def bce_grad_torch(z, y, a):
    t = torch.tensor(z, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        t, torch.tensor(y), pos_weight=torch.tensor(a), reduction="sum"
    )
    return torch.autograd.grad(loss, t)[0].numpy()


def hidden_deltas_values(W2, d, z):
    zs = [Value(float(v)) for v in z]
    hidden = [v.sigmoid() for v in zs]
    out = sum(
        float(d[k]) * sum(float(W2[k, h]) * hidden[h] for h in range(len(z))) for k in range(len(d))
    )
    out.backward()
    return np.array([v.grad for v in zs])


def sgd_step_package(params, grads, lr):
    SGD(params, lr).step(grads)
    return params


def train_step_reference(model, X, y, lr, wd):
    return reference._reference_step(model, X, y, lr, wd)


BY_HAND = "by hand, without autograd"
SHORTCUTS = [
    ("04.mse_grad", mse_grad_torch, "torch.Tensor.backward"),
    ("04.mse_grad", mse_grad_nn, "backprop_course.nn.MSELoss"),
    ("04.mse_grad", mse_grad_values, "backprop_course.autograd.Value"),
    ("04.bce_grad_logit", bce_grad_torch, BY_HAND),
    ("04.hidden_deltas", hidden_deltas_values, BY_HAND),
    ("04.sgd_step", sgd_step_package, "backprop_course.optim.SGD"),
    ("04.train_step", train_step_reference, "exercises.lesson04._reference_step"),
]
RULED = ["04.mse_grad", "04.bce_grad_logit", "04.hidden_deltas", "04.sgd_step"]

globals().update(
    lesson_feedback_tests(
        "04",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        ruled=RULED,
    )
)
