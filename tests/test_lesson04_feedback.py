"""Lesson 04: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import numpy as np

from feedback import lesson_feedback_tests


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _bce_loss(model, X, y, mean=True):
    total = 0
    for x, label in zip(X, y):
        p = model(list(x)).sigmoid()
        total = total - (label * p.log() + (1 - label) * (1 - p).log())
    return total / len(y) if mean else total


def make_train_step(*, sign=-1, use_lr=True, mean=True, zero="before", loss_after=False):
    """A train_step, correct by default; the keywords reproduce typical mistakes."""

    def train_step(model, X, y, lr):
        loss = _bce_loss(model, X, y, mean=mean)
        if zero == "before":
            model.zero_grad()
        loss.backward()
        if zero == "between":
            model.zero_grad()
        for p in model.parameters():
            p.data += sign * (lr if use_lr else 1) * p.grad
        if zero == "after":
            model.zero_grad()
        return _bce_loss(model, X, y).data if loss_after else loss.data

    return train_step


def train_step_stable(model, X, y, lr):
    """The same step with the stable logistic form log(1 + exp(-t s)), t = +-1."""
    scores = [model(list(x)) for x in X]
    signs = [2 * int(t) - 1 for t in y]
    losses = [((-t * s).exp() + 1).log() for s, t in zip(scores, signs)]
    loss = sum(losses) / len(losses)
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data -= lr * p.grad
    return loss


def train_step_rebinding(model, X, y, lr):
    loss = _bce_loss(model, X, y)
    model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p = p.data - lr * p.grad  # the mistake under test: rebinds the name only
    return loss.data


def sgd_in_place(params, grads, lr):
    for p, g in zip(params, grads):
        p -= lr * g
    return params


CORRECT_ANSWERS = {
    "04.neuron": lambda x, w, b: np.tanh(np.dot(w, x) + b),
    "04.mse_grad": lambda y_hat, y: 2 * (y_hat - y) / len(y),
    "04.bce_grad_logit": lambda z, y: _sigmoid(z) - y,
    "04.hidden_deltas": lambda W2, d, z: (W2.T @ d) * (1 - np.tanh(z) ** 2),
    "04.sgd_step": lambda params, grads, lr: [p - lr * g for p, g in zip(params, grads)],
    "04.train_step": make_train_step(),
}

# Other correct ways to write the same answers.
ALSO_CORRECT = [
    ("04.neuron", lambda x, w, b: float(np.tanh(sum(wi * xi for wi, xi in zip(w, x)) + b))),
    ("04.mse_grad", lambda y_hat, y: (2 / y.shape[0]) * (y_hat - y)),
    ("04.bce_grad_logit", lambda z, y: np.exp(z) / (1 + np.exp(z)) - y),
    ("04.hidden_deltas", lambda W2, d, z: (d @ W2) / np.cosh(z) ** 2),
    ("04.sgd_step", sgd_in_place),
    ("04.sgd_step", lambda params, grads, lr: tuple(p - lr * g for p, g in zip(params, grads))),
    ("04.train_step", make_train_step(zero="after")),
    ("04.train_step", train_step_stable),
]

WRONG_ANSWERS = [
    ("04.neuron", lambda x, w, b: np.tanh(np.dot(w, x)), "forgot the bias"),
    ("04.neuron", lambda x, w, b: np.dot(w, x) + b, "forgot the activation"),
    ("04.neuron", lambda x, w, b: np.tanh(np.dot(w, x)) + b, "after the activation"),
    ("04.neuron", lambda x, w, b: _sigmoid(np.dot(w, x) + b), "used the sigmoid"),
    ("04.neuron", lambda x, w, b: np.tanh(w * x + b), "shape"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y - y_hat) / len(y), "sign error"),
    ("04.mse_grad", lambda y_hat, y: (y_hat - y) / len(y), "forgot the factor 2"),
    ("04.mse_grad", lambda y_hat, y: 2 * (y_hat - y), "mean vs sum"),
    ("04.mse_grad", lambda y_hat, y: 2 * y_hat / len(y), "forgot to subtract the target"),
    ("04.mse_grad", lambda y_hat, y: np.mean((y_hat - y) ** 2), "shape"),
    ("04.bce_grad_logit", lambda z, y: y - _sigmoid(z), "sign error"),
    ("04.bce_grad_logit", lambda z, y: z - y, "forgot the sigmoid"),
    ("04.bce_grad_logit", lambda z, y: _sigmoid(z), "forgot to subtract the target"),
    (
        "04.bce_grad_logit",
        lambda z, y: 2 * (_sigmoid(z) - y) * _sigmoid(z) * (1 - _sigmoid(z)),
        "squared error",
    ),
    (
        "04.bce_grad_logit",
        lambda z, y: -y / _sigmoid(z) + (1 - y) / (1 - _sigmoid(z)),
        "with respect to p, not z",
    ),
    (
        "04.hidden_deltas",
        lambda W2, d, z: (W2 @ d) * (1 - np.tanh(z) ** 2),
        "transposed weight matrix",
    ),
    ("04.hidden_deltas", lambda W2, d, z: W2.T @ d, "forgot the activation derivative"),
    ("04.hidden_deltas", lambda W2, d, z: (W2.T @ d) * (1 - z**2), "used 1 - z**2"),
    ("04.hidden_deltas", lambda W2, d, z: (W2.T @ d) * np.tanh(z), "instead of its derivative"),
    ("04.hidden_deltas", lambda W2, d, z: d.sum() * (1 - np.tanh(z) ** 2), "ignored the weights"),
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
    ("04.train_step", make_train_step(zero="between"), "did not change"),
    ("04.train_step", make_train_step(loss_after=True), "the loss after the update"),
    ("04.train_step", train_step_rebinding, "did not change"),
    ("04.train_step", lambda model, X, y, lr: None, "as a number"),
]


globals().update(
    lesson_feedback_tests("04", CORRECT_ANSWERS, WRONG_ANSWERS, also_correct=ALSO_CORRECT)
)
