"""Lesson 06: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import numpy as np
import torch

from backprop_course import nn
from backprop_course.exercises import lesson06 as reference
from backprop_course.optim import SGD
from feedback import lesson_feedback_tests


def make_linear(
    *, dW="right", db="right", dx="right", bias=True, cache=True, accumulate=False, update=False
):
    """A Linear class, correct by default; the keywords reproduce typical mistakes."""

    class Linear:
        def __init__(self, W, b):
            self.W, self.b = W, b
            self.dW, self.db = np.zeros_like(W), np.zeros_like(b)

        def forward(self, x):
            if cache:
                self.x = x
            self.out = x @ self.W + (self.b if bias else 0)
            return self.out

        def backward(self, dy):
            x, B = self.x, len(dy)
            grads = {
                "right": lambda: x.T @ dy,
                "transposed": lambda: dy.T @ x,
                "mean": lambda: x.T @ dy / B,
                "output": lambda: self.out.T @ dy,
            }
            new_dW = grads[dW]()
            new_db = {"right": dy.sum(axis=0), "unsummed": dy, "mean": dy.mean(axis=0)}[db]
            if accumulate:
                self.dW = self.dW + new_dW
                self.db = self.db + new_db
            else:
                self.dW, self.db = new_dW, new_db
            if update:
                self.W -= 0.1 * self.dW
            return dy @ self.W.T if dx == "right" else dy @ self.W

    return Linear


def make_relu(*, backward="right", in_place=False):
    class ReLU:
        def forward(self, x):
            self.x = x
            if in_place:
                np.maximum(x, 0, out=x)
                self.mask = x > 0
                return x
            return np.maximum(x, 0)

        def backward(self, dy):
            mask = self.x > 0
            return {
                "right": dy * mask,
                "identity": dy,
                "mask": mask.astype(float),
                "output": dy * np.maximum(self.x, 0),
                "dy_mask": dy * (dy > 0),
            }[backward]

    return ReLU


def make_sequential(*, order="reversed", chain=True, return_dy=False):
    class Sequential:
        def __init__(self, *layers):
            self.layers = list(layers)

        def forward(self, x):
            h = x
            for layer in self.layers:
                h = layer.forward(h if chain else x)
            return h

        def backward(self, dy):
            layers = reversed(self.layers) if order == "reversed" else self.layers
            g = dy
            for layer in layers:
                g = layer.backward(g)
            return dy if return_dy else g

    return Sequential


def softmax_ce(*, stable=True, mean=True, divide=True, axis=1, sign=1):
    def softmax_cross_entropy(logits, y):
        z = logits - logits.max(axis=axis, keepdims=True) if stable else logits
        p = np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True)
        rows = np.arange(len(y))
        losses = -np.log(p[rows, y])
        loss = losses.mean() if mean else losses.sum()
        d = p.copy()
        d[rows, y] -= 1
        return loss, sign * d / (len(y) if divide else 1)

    return softmax_cross_entropy


def make_batches(*, shuffle=True, drop_last=False, separate=False, replace=False, global_rng=False):
    def iterate_minibatches(X, y, batch_size, rng):
        n = len(X)
        if replace:
            order = rng.integers(0, n, size=n)
        elif not shuffle:
            order = np.arange(n)
        elif global_rng:
            order = np.random.permutation(n)
        else:
            order = rng.permutation(n)
        order_y = rng.permutation(n) if separate else order
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield X[order[start : start + batch_size]], y[order_y[start : start + batch_size]]

    return iterate_minibatches


def iterate_as_list(X, y, batch_size, rng):
    order = rng.permutation(len(X))
    chunks = np.array_split(order, range(batch_size, len(X), batch_size))
    return [(X[c], y[c]) for c in chunks]


def sgd_update(params, grads, lr):
    for p, g in zip(params, grads):
        p -= lr * g


def sgd_slices(params, grads, lr):
    for i in range(len(params)):
        params[i][...] = params[i] - lr * grads[i]


def sgd_rebinding(params, grads, lr):
    for p, g in zip(params, grads):
        p = p - lr * g


def sgd_list(params, grads, lr):
    for i in range(len(params)):
        params[i] = params[i] - lr * grads[i]


def sgd_sign(params, grads, lr):
    for p, g in zip(params, grads):
        p += lr * g


def sgd_no_lr(params, grads, lr):
    for p, g in zip(params, grads):
        p -= g


def sgd_touches_grads(params, grads, lr):
    for p, g in zip(params, grads):
        g *= lr
        p -= g


CORRECT_ANSWERS = {
    "06.linear": make_linear(),
    "06.relu": make_relu(),
    "06.sequential": make_sequential(),
    "06.softmax_cross_entropy": softmax_ce(),
    "06.iterate_minibatches": make_batches(),
    "06.sgd_update": sgd_update,
    "06.accuracy": lambda scores, y: float(np.mean(scores.argmax(axis=1) == y)),
}

ALSO_CORRECT = [
    ("06.iterate_minibatches", iterate_as_list),
    ("06.sgd_update", sgd_slices),
    ("06.accuracy", lambda scores, y: (np.argmax(scores, 1) == y).sum() / len(y)),
]

WRONG_ANSWERS = [
    ("06.linear", make_linear(dW="transposed"), "transposed weight gradient"),
    ("06.linear", make_linear(dW="mean"), "mean vs sum"),
    ("06.linear", make_linear(db="mean"), "mean vs sum"),
    ("06.linear", make_linear(db="unsummed"), "not summed over the batch"),
    ("06.linear", make_linear(dW="output"), "output instead of its input"),
    ("06.linear", make_linear(cache=False), "store its input"),
    ("06.linear", make_linear(dx="no_transpose"), "used W instead of W.T"),
    ("06.linear", make_linear(bias=False), "forgot the bias"),
    ("06.linear", make_linear(accumulate=True), "(+=)"),
    ("06.linear", make_linear(update=True), "changed self.W"),
    ("06.relu", make_relu(backward="identity"), "passed dy through unchanged"),
    ("06.relu", make_relu(backward="mask"), "without multiplying it by dy"),
    ("06.relu", make_relu(backward="output"), "ReLU output instead of its slope"),
    ("06.relu", make_relu(backward="dy_mask"), "masked with dy > 0"),
    ("06.relu", make_relu(in_place=True), "in place"),
    ("06.sequential", make_sequential(order="forward"), "forward order"),
    ("06.sequential", make_sequential(chain=False), "gave every layer the input x"),
    ("06.sequential", make_sequential(return_dy=True), "returned dy unchanged"),
    ("06.softmax_cross_entropy", softmax_ce(stable=False), "subtract each row's maximum"),
    ("06.softmax_cross_entropy", softmax_ce(mean=False), "the sum over the batch"),
    ("06.softmax_cross_entropy", softmax_ce(divide=False), "divide by the batch size"),
    ("06.softmax_cross_entropy", softmax_ce(sign=-1), "sign error"),
    ("06.softmax_cross_entropy", softmax_ce(axis=0), "wrong axis"),
    ("06.softmax_cross_entropy", lambda logits, y: 0.0, "(loss, dlogits)"),
    ("06.softmax_cross_entropy", lambda logits, y: None, "is a `return` missing?"),
    ("06.iterate_minibatches", make_batches(drop_last=True), "dropped the last partial batch"),
    ("06.iterate_minibatches", make_batches(shuffle=False), "not shuffled"),
    ("06.iterate_minibatches", make_batches(separate=True), "X and y shuffled differently"),
    ("06.iterate_minibatches", make_batches(replace=True), "exactly once per epoch"),
    ("06.iterate_minibatches", make_batches(global_rng=True), "the rng argument"),
    ("06.iterate_minibatches", lambda X, y, batch_size, rng: None, "is a `yield`"),
    ("06.accuracy", lambda scores, y: None, "is a `return` missing?"),
    ("06.sgd_update", sgd_rebinding, "rebinding instead of updating in place"),
    ("06.sgd_update", sgd_list, "rebinding instead of updating in place"),
    ("06.sgd_update", sgd_sign, "sign error"),
    ("06.sgd_update", sgd_no_lr, "forgot the learning rate"),
    ("06.sgd_update", sgd_touches_grads, "changed the gradient arrays"),
    ("06.accuracy", lambda s, y: int((s.argmax(axis=1) == y).sum()), "number of correct"),
    ("06.accuracy", lambda s, y: np.mean(s.argmax(axis=1) != y), "error rate"),
    ("06.accuracy", lambda s, y: 100 * np.mean(s.argmax(axis=1) == y), "percentage"),
    ("06.accuracy", lambda s, y: np.mean(s.max(axis=1) == y), "compared the largest score"),
]


# ---------------------------------------------------------------- shortcuts (refused)


class LinearFromPackage(nn.Linear):
    """A subclass of the package's layer, set up with the given weights."""

    def __init__(self, W, b):
        super().__init__(*W.shape)
        self.W, self.b = W, b


class LinearWrappingPackage:
    """Delegates the work to a package layer held inside: caught by what runs."""

    def __init__(self, W, b):
        self.inner = nn.Linear(*W.shape)
        self.inner.W, self.inner.b = W, b
        self.W, self.b = W, b

    def forward(self, x):
        return self.inner.forward(x)

    def backward(self, dy):
        dx = self.inner.backward(dy)
        self.dW, self.db = self.inner.dW, self.inner.db
        return dx

    def parameters(self):
        return [self.W, self.b]

    def gradients(self):
        return [self.dW, self.db]


class LinearByAutograd:
    """Backward through torch's autograd."""

    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = torch.tensor(x, requires_grad=True)
        self.Wt = torch.tensor(self.W, requires_grad=True)
        self.bt = torch.tensor(self.b, requires_grad=True)
        self.y = self.x @ self.Wt + self.bt
        return self.y.detach().numpy()

    def backward(self, dy):
        self.y.backward(torch.tensor(dy))
        self.dW, self.db = self.Wt.grad.numpy(), self.bt.grad.numpy()
        return self.x.grad.numpy()


class ReLUWrappingPackage:
    def __init__(self):
        self.inner = nn.ReLU()

    def forward(self, x):
        return self.inner.forward(x)

    def backward(self, dy):
        return self.inner.backward(dy)


class SequentialFromPackage(nn.Sequential):
    pass


class SequentialWrappingPackage:
    def __init__(self, *layers):
        self.inner = nn.Sequential(*layers)

    def forward(self, x):
        return nn.Sequential.forward(self.inner, x)

    def backward(self, dy):
        return nn.Sequential.backward(self.inner, dy)


def softmax_ce_package(logits, y):
    criterion = nn.SoftmaxCrossEntropy()
    return criterion.forward(logits, y), criterion.backward()


def softmax_ce_torch(logits, y):
    z = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    loss.backward()
    return float(loss), z.grad.numpy()


def sgd_package(params, grads, lr):
    SGD(params, lr).step(grads)


OWN = "your own code"
SHORTCUTS = [
    ("06.linear", nn.Linear, "backprop_course.nn.Linear"),
    ("06.linear", LinearFromPackage, OWN),
    ("06.linear", reference._Linear, "exercises.lesson06._Linear"),
    ("06.linear", LinearWrappingPackage, "backprop_course.nn.Linear"),
    ("06.linear", LinearByAutograd, "not autograd"),
    ("06.relu", nn.ReLU, "backprop_course.nn.ReLU"),
    ("06.relu", ReLUWrappingPackage, "backprop_course.nn.ReLU"),
    ("06.sequential", nn.Sequential, "backprop_course.nn.Sequential"),
    ("06.sequential", SequentialFromPackage, OWN),
    ("06.sequential", SequentialWrappingPackage, "backprop_course.nn.Sequential"),
    ("06.softmax_cross_entropy", softmax_ce_package, "backprop_course.nn.SoftmaxCrossEntropy"),
    ("06.softmax_cross_entropy", softmax_ce_torch, "not autograd"),
    ("06.sgd_update", sgd_package, "backprop_course.optim.SGD"),
]
RULED = ["06.linear", "06.relu", "06.sequential", "06.softmax_cross_entropy", "06.sgd_update"]


class _StubLayer:
    def forward(self, x):
        return ...

    def backward(self, dy):
        return ...


class _StubLinear(_StubLayer):
    def __init__(self, W, b):
        self.W, self.b = W, b


class _StubSequential(_StubLayer):
    def __init__(self, *layers):
        self.layers = list(layers)


STUBS = {
    "06.linear": _StubLinear,
    "06.relu": _StubLayer,
    "06.sequential": _StubSequential,
}


globals().update(
    lesson_feedback_tests(
        "06",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        also_correct=ALSO_CORRECT,
        stubs=STUBS,
        shortcuts=SHORTCUTS,
        ruled=RULED,
    )
)
