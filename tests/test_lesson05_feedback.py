"""Lesson 05: correct answers pass, and typical wrong answers get a specific reason."""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd import grad as autograd_grad  # bound before the check, as a learner might

from backprop_course import nn
from backprop_course.exercises import lesson05 as reference
from backprop_course.gradcheck import numerical_gradient, relative_error
from feedback import lesson_feedback_tests


def gradient_shapes(B, n_in, n_hidden, n_out):
    return {
        "X": (B, n_in),
        "W1": (n_in, n_hidden),
        "b1": (n_hidden,),
        "H": (B, n_hidden),
        "W2": (n_hidden, n_out),
        "b2": (n_out,),
        "logits": (B, n_out),
    }


def shapes_with(**changes):
    return lambda *sizes: {**gradient_shapes(*sizes), **changes}


def linear_backward(X, W, dY):
    return dY @ W.T, X.T @ dY, dY.sum(axis=0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACTIVATIONS = {
    "relu": lambda x, dy: dy * (x > 0),
    "sigmoid": lambda x, dy: dy * sigmoid(x) * (1 - sigmoid(x)),
}


def activations_with(**changes):
    return {**ACTIVATIONS, **changes}


def softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def onehot(y, k):
    return np.eye(k)[y]


def softmax_ce_backward(logits, y):
    p = softmax(logits)
    p[np.arange(len(y)), y] -= 1
    return p / len(y)


def naive_softmax_ce_backward(logits, y):
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True) - onehot(y, logits.shape[1])) / len(y)


def make_grad_check(*, h=1e-5, reduce=np.max, relative="max", restore=True):
    def grad_check(f, x, analytic):
        num = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h
            fp = f(x)
            x[i] = old - h
            fm = f(x)
            x[i] = old if restore else old + h
            num[i] = (fp - fm) / (2 * h)
        diff = np.abs(analytic - num)
        if relative == "max":
            err = diff / np.maximum(np.maximum(np.abs(analytic), np.abs(num)), 1e-12)
        elif relative == "sum":
            err = diff / (np.abs(analytic) + np.abs(num))
        else:
            err = diff
        return reduce(err)

    return grad_check


def grad_check_forward_difference(f, x, analytic):
    x = x.copy()
    h, f0, num = 1e-5, f(x), np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        num[i] = (f(x) - f0) / h
        x[i] = old
    return float(np.max(np.abs(analytic - num) / np.maximum(np.abs(analytic), np.abs(num))))


def make_two_layer(*, mask=True, scale=1.0, sum_bias=True, transpose_w=False):
    def two_layer_backward(X, y, W1, b1, W2, b2):
        Z1 = X @ W1 + b1
        H = np.maximum(Z1, 0)
        dZ2 = softmax_ce_backward(H @ W2 + b2, y) * scale
        dH = dZ2 @ W2.T
        dZ1 = dH * (Z1 > 0) if mask else dH
        grads = {"W1": X.T @ dZ1, "W2": H.T @ dZ2}
        grads["b1"] = dZ1.sum(axis=0) if sum_bias else dZ1
        grads["b2"] = dZ2.sum(axis=0) if sum_bias else dZ2
        if transpose_w:
            grads["W1"] = grads["W1"].T
        return grads

    return two_layer_backward


CORRECT_ANSWERS = {
    "05.gradient_shapes": [
        gradient_shapes,
        lambda *s: {k: list(v) for k, v in gradient_shapes(*s).items()},
    ],
    "05.linear_backward": [linear_backward, lambda X, W, dY: list(linear_backward(X, W, dY))],
    "05.activation_backward": [
        ACTIVATIONS,
        activations_with(relu=lambda x, dy: np.where(x > 0, dy, 0.0)),
        activations_with(sigmoid=lambda x, dy: dy * np.exp(-x) / (1 + np.exp(-x)) ** 2),
    ],
    "05.softmax_ce_backward": [
        softmax_ce_backward,
        lambda z, y: (softmax(z) - onehot(y, z.shape[1])) / z.shape[0],
    ],
    "05.grad_check": [make_grad_check(), make_grad_check(h=1e-4), make_grad_check(h=1e-6)],
    "05.two_layer_backward": [make_two_layer()],
}


WRONG_ANSWERS = [
    ("05.gradient_shapes", shapes_with(W1=None), "should be a tuple of ints"),
    (
        "05.gradient_shapes",
        lambda B, i, h, o: {**gradient_shapes(B, i, h, o), "W1": (h, i)},
        "transposed",
    ),
    (
        "05.gradient_shapes",
        lambda B, i, h, o: {**gradient_shapes(B, i, h, o), "b2": (B, o)},
        "no batch axis",
    ),
    ("05.gradient_shapes", shapes_with(logits=()), "one entry per entry"),
    ("05.gradient_shapes", lambda *s: {"X": s[:2]}, "without the key(s)"),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W.T, dY.T @ X, dY.sum(0)),
        "transposed weight gradient (dY.T @ X)",
    ),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W.T, X.T @ dY, dY),
        "bias gradient not summed over the batch",
    ),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W.T, X.T @ dY / len(X), dY.mean(0)),
        "mean instead of sum (a factor of the batch size)",
    ),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W.T, X.T @ dY, dY.mean(0)),
        "mean instead of sum (a factor of the batch size)",
    ),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W, X.T @ dY, dY.sum(0)),
        "dX uses W instead of W.T",
    ),
    (
        "05.linear_backward",
        lambda X, W, dY: (dY @ W.T, X.T @ dY, dY.sum(0, keepdims=True)),
        "kept the batch axis",
    ),
    ("05.linear_backward", lambda X, W, dY: X.T @ dY, "the tuple (dX, dW, db)"),
    (
        "05.activation_backward",
        activations_with(relu=lambda x, dy: dy),
        "forgot the activation derivative",
    ),
    (
        "05.activation_backward",
        activations_with(relu=lambda x, dy: 1.0 * (x > 0)),
        "only the local",
    ),
    (
        "05.activation_backward",
        activations_with(relu=lambda x, dy: dy * np.maximum(x, 0)),
        "instead of its derivative",
    ),
    (
        "05.activation_backward",
        activations_with(sigmoid=lambda x, dy: dy * x * (1 - x)),
        "used the input instead of the output",
    ),
    (
        "05.activation_backward",
        activations_with(sigmoid=lambda x, dy: dy),
        "forgot the activation derivative",
    ),
    (
        "05.activation_backward",
        activations_with(sigmoid=lambda x, dy: dy * sigmoid(x)),
        "not its own derivative",
    ),
    ("05.activation_backward", activations_with(sigmoid=lambda x, dy: ...), "still return `...`"),
    ("05.activation_backward", {"relu": ACTIVATIONS["relu"]}, "missing the key(s)"),
    (
        "05.softmax_ce_backward",
        lambda z, y: softmax(z) / len(y),
        "without subtracting the one-hot target",
    ),
    (
        "05.softmax_ce_backward",
        lambda z, y: softmax(z) - onehot(y, z.shape[1]),
        "sum instead of mean (a factor of the batch size)",
    ),
    ("05.softmax_ce_backward", lambda z, y: -softmax_ce_backward(z, y), "sign error"),
    (
        "05.softmax_ce_backward",
        lambda z, y: (softmax(z, axis=0) - onehot(y, z.shape[1])) / len(y),
        "wrong axis",
    ),
    ("05.softmax_ce_backward", naive_softmax_ce_backward, "subtract the row maximum"),
    ("05.grad_check", make_grad_check(relative="abs"), "absolute error"),
    ("05.grad_check", make_grad_check(reduce=np.mean), "mean instead of max"),
    ("05.grad_check", make_grad_check(relative="sum"), "denominator |a| + |n|"),
    ("05.grad_check", make_grad_check(restore=False), "changed x"),
    ("05.grad_check", grad_check_forward_difference, "A forward difference"),
    ("05.grad_check", make_grad_check(reduce=lambda e: e), "one number"),
    ("05.two_layer_backward", make_two_layer(mask=False), "forgot the ReLU derivative"),
    ("05.two_layer_backward", make_two_layer(scale=3.0), "differs from the expected"),
    ("05.two_layer_backward", make_two_layer(sum_bias=False), "bias gradient not summed"),
    ("05.two_layer_backward", make_two_layer(transpose_w=True), "transposed"),
    ("05.two_layer_backward", make_two_layer(scale=-1.0), "sign error"),
    ("05.two_layer_backward", lambda *a: {"W1": 0}, "without the key(s)"),
]


def _sum_instead_of_mean(X, y, *params):
    return make_two_layer(scale=len(X))(X, y, *params)


def _divided_twice(X, y, *params):
    return make_two_layer(scale=1 / len(X))(X, y, *params)


WRONG_ANSWERS += [
    ("05.two_layer_backward", _sum_instead_of_mean, "sum instead of mean"),
    ("05.two_layer_backward", _divided_twice, "divided by the batch size twice"),
]


# ---------------------------------------------------------------- shortcuts (refused)


def _t(array, grad=True):
    return torch.tensor(array, dtype=torch.float64, requires_grad=grad)


def shapes_from_nn(B, n_in, n_hidden, n_out):
    W1, b1, W2, b2 = (p.shape for p in nn.MLP([n_in, n_hidden, n_out], rng=0).parameters())
    return {**gradient_shapes(B, n_in, n_hidden, n_out), "W1": W1, "b1": b1, "W2": W2, "b2": b2}


def shapes_from_torch(B, n_in, n_hidden, n_out):
    X, W1, b1 = _t(np.ones((B, n_in))), _t(np.ones((n_in, n_hidden))), _t(np.ones(n_hidden))
    W2, b2 = _t(np.ones((n_hidden, n_out))), _t(np.ones(n_out))
    H = torch.relu(X @ W1 + b1)
    logits = H @ W2 + b2
    logits.sum().backward()
    leaves = {"X": X, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
    shapes = {k: tuple(v.grad.shape) for k, v in leaves.items()}
    return {**shapes, "H": tuple(H.shape), "logits": tuple(logits.shape)}


def linear_backward_torch(X, W, dY):
    Xt, Wt, bt = _t(X), _t(W), _t(np.zeros(W.shape[1]))
    (Xt @ Wt + bt).backward(torch.tensor(dY))
    return Xt.grad.numpy(), Wt.grad.numpy(), bt.grad.numpy()


def linear_backward_grad_alias(X, W, dY):
    Xt, Wt, bt = _t(X), _t(W), _t(np.zeros(W.shape[1]))
    with torch.enable_grad():  # even switching grad mode back on does not help
        grads = autograd_grad((Xt @ Wt + bt,), (Xt, Wt, bt), torch.tensor(dY))
    return tuple(g.numpy() for g in grads)


def linear_backward_nn(X, W, dY):
    layer = nn.Linear(*W.shape)
    layer.W[...] = W
    layer.forward(X)
    dX = layer.backward(dY)
    return dX, layer.dW, layer.db


def linear_backward_differences(X, W, dY):
    dX = numerical_gradient(lambda X_: np.sum(dY * (X_ @ W)), X.copy())
    dW = numerical_gradient(lambda W_: np.sum(dY * (X @ W_)), W.copy())
    return dX, dW, dY.sum(axis=0)


def relu_backward_nn(x, dy):
    layer = nn.ReLU()
    layer.forward(x)
    return layer.backward(dy)


def sigmoid_backward_torch(x, dy):
    xt = _t(x)
    torch.sigmoid(xt).backward(torch.tensor(dy))
    return xt.grad.numpy()


def softmax_ce_nn(logits, y):
    loss = nn.SoftmaxCrossEntropy()
    loss.forward(logits, y)
    return loss.backward()


def softmax_ce_torch(logits, y):
    z = _t(logits)
    torch.nn.functional.cross_entropy(z, torch.tensor(y)).backward()
    return z.grad.numpy()


def grad_check_package(f, x, analytic):
    return float(relative_error(analytic, numerical_gradient(f, x)).max())


def two_layer_torch(X, y, W1, b1, W2, b2):
    params = {k: _t(v) for k, v in {"W1": W1, "b1": b1, "W2": W2, "b2": b2}.items()}
    hidden = torch.relu(torch.tensor(X) @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    return {k: v.grad.numpy() for k, v in params.items()}


def two_layer_nn(X, y, W1, b1, W2, b2):
    model = nn.MLP([W1.shape[0], W1.shape[1], W2.shape[1]], rng=0)
    for p, v in zip(model.parameters(), (W1, b1, W2, b2)):
        p[...] = v
    loss = nn.SoftmaxCrossEntropy()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    return dict(zip(("W1", "b1", "W2", "b2"), model.gradients()))


BY_HAND = "by hand, without autograd"
SHORTCUTS = [
    ("05.gradient_shapes", shapes_from_nn, "backprop_course.nn"),
    ("05.gradient_shapes", shapes_from_torch, BY_HAND),
    ("05.linear_backward", linear_backward_torch, "torch.Tensor.backward"),
    ("05.linear_backward", linear_backward_grad_alias, "torch.autograd.grad"),
    ("05.linear_backward", linear_backward_nn, "backprop_course.nn.Linear"),
    ("05.linear_backward", linear_backward_differences, "backprop_course.gradcheck"),
    ("05.activation_backward", activations_with(relu=relu_backward_nn), "backprop_course.nn.ReLU"),
    ("05.activation_backward", activations_with(sigmoid=sigmoid_backward_torch), BY_HAND),
    ("05.softmax_ce_backward", softmax_ce_nn, "backprop_course.nn.SoftmaxCrossEntropy"),
    ("05.softmax_ce_backward", softmax_ce_torch, BY_HAND),
    ("05.softmax_ce_backward", reference.softmax_ce_grad, "exercises.lesson05.softmax_ce_grad"),
    ("05.grad_check", grad_check_package, "your own code"),
    ("05.two_layer_backward", two_layer_torch, BY_HAND),
    ("05.two_layer_backward", two_layer_nn, "backprop_course.nn"),
    (
        "05.two_layer_backward",
        lambda *args: reference.two_layer_grads(*args),
        "exercises.lesson05.two_layer_grads",
    ),
]
RULED = sorted({s[0] for s in SHORTCUTS})

WRONG_ANSWERS += [
    ("05.linear_backward", lambda X, W, dY: None, "is a `return` missing?"),
    ("05.linear_backward", lambda X, W, dY: (dY @ W.T, None, dY.sum(axis=0)), "is a `return`"),
    ("05.softmax_ce_backward", lambda z, y: softmax_ce_backward(z, y).T, "transposed"),
    ("05.two_layer_backward", lambda *a: None, "is a `return` missing?"),
]

STUBS = {"05.activation_backward": {k: (lambda *args: ...) for k in ACTIVATIONS}}

globals().update(
    lesson_feedback_tests(
        "05",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        several=True,
        stubs=STUBS,
        shortcuts=SHORTCUTS,
        ruled=RULED,
    )
)
