"""Lesson 05, vectorized backprop: gradients of whole arrays, derived from shapes.

Conventions of the lesson (and of ``backprop_course.nn``): a batch is rows, a
linear layer is ``Y = X @ W + b`` with ``X (B, n_in)``, ``W (n_in, n_out)``,
``b (n_out,)``, and the loss is a scalar, so every gradient has the shape of
its variable. Checks draw fresh shapes and values, with every dimension
different from the others so that a transposed or wrongly reduced answer has a
shape or a value no right answer has. The reference computations use numpy
directly (not ``backprop_course.nn``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    as_array,
    assert_close,
    distinct_sizes,
    expect_mapping,
    unpack,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules

# What "by hand" rules out in this lesson: torch's autograd (and torch.no_grad around the
# answer), the Value engine, the package's numpy layers and losses, its finite differences,
# and this module's own reference computations.
_REFERENCES = (
    "backprop_course.nn",
    "backprop_course.autograd",
    "backprop_course.gradcheck",
    "backprop_course.transformer",
    "backprop_course.exercises.lesson05",
)


def _by_hand(answer, *args, what=None):
    """``answer(*args)`` under this lesson's rule: gradients by hand, in numpy."""
    return call_under_rules(answer, *args, autograd=True, forbid=_REFERENCES, what=what)


# ---------------------------------------------------------------- reference math


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable softmax along ``axis``."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    """(B,) int labels -> (B, classes) float one-hot rows."""
    out = np.zeros((len(y), classes))
    out[np.arange(len(y)), y] = 1.0
    return out


# ---------------------------------------------------------------- helpers for checks


def _close(
    got: Any,
    expected: np.ndarray,
    *,
    name: str,
    context: str,
    mistakes: Mapping[str, Any] | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-10,
) -> None:
    """assert_close, but a named mistake with a DIFFERENT shape is recognised too."""
    got_array = as_array(got, name)
    mistakes = dict(mistakes or {})
    for mistake, value in mistakes.items():
        value = np.asarray(value, dtype=float)
        if (
            value.shape != np.shape(expected)
            and value.shape == got_array.shape
            and np.allclose(got_array, value, rtol=max(rtol, 1e-6), atol=atol)
        ):
            raise Wrong(
                f"{name} has shape {got_array.shape}, expected {np.shape(expected)} {context}: "
                f"it matches a common mistake: {mistake}"
            )
    same_shape = {k: v for k, v in mistakes.items() if np.shape(v) == np.shape(expected)}
    # the answer as given, so that a float32 one is told so
    assert_close(
        got, expected, name=name, rtol=rtol, atol=atol, mistakes=same_shape, context=context
    )


# ---------------------------------------------------------------- 05.gradient_shapes

_SHAPE_KEYS = ("X", "W1", "b1", "H", "W2", "b2", "logits")


@exercise(
    "05.gradient_shapes",
    title="Every gradient has the shape of its variable",
    points=2,
    answer="gradient_shapes",
    hints=(
        "The loss is one number, so dL/dV has one entry per entry of V: the same shape as V. "
        "Write down the shape of each variable of the forward pass.",
        "X is (B, n_in). W1 maps n_in features to n_hidden ones in X @ W1, so it is "
        "(n_in, n_hidden). A bias has one number per output feature, with no batch axis.",
        "X: (B, n_in), W1: (n_in, n_hidden), b1: (n_hidden,), H: (B, n_hidden), "
        "W2: (n_hidden, n_out), b2: (n_out,), logits: (B, n_out).",
    ),
)
def _gradient_shapes(answer, rng):
    for _ in range(6):
        B, n_in, n_hidden, n_out = distinct_sizes(rng, 4, 2, 40)
        expected = {
            "X": (B, n_in),
            "W1": (n_in, n_hidden),
            "b1": (n_hidden,),
            "H": (B, n_hidden),
            "W2": (n_hidden, n_out),
            "b2": (n_out,),
            "logits": (B, n_out),
        }
        where = f"for B={B}, n_in={n_in}, n_hidden={n_hidden}, n_out={n_out}"
        got = unpack(_by_hand(answer, B, n_in, n_hidden, n_out), _SHAPE_KEYS)
        for key in _SHAPE_KEYS:
            value = got[key]
            try:
                shape = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                raise Wrong(
                    f"the shape for {key!r} should be a tuple of ints such as (3, 4), got {value!r}"
                ) from None
            want = expected[key]
            if shape == want:
                continue
            message = f"the gradient of {key} has shape {want}, not {shape} ({where})"
            if len(want) == 2 and shape == want[::-1]:
                if key.startswith("W"):
                    message += (
                        ": that is transposed. In X @ W the weight matrix is (inputs, outputs), "
                        "and dW has the shape of W"
                    )
                else:
                    message += ": that is transposed; a batch is rows, (B, features)"
            elif key.startswith("b") and shape in ((B, want[0]), (1, want[0])):
                message += (
                    ": the bias has no batch axis. It is shared by every row of the batch, so "
                    "its gradient is summed over the batch: one number per feature"
                )
            elif shape == ():
                message += ": the loss is a number, but its gradient has one entry per entry"
            raise Wrong(message)


# ---------------------------------------------------------------- 05.linear_backward


def _linear_cases(rng: np.random.Generator):
    # the first case is square (n_in == n_out), so that "W instead of W.T" does not crash
    # and is recognised by its value
    n = int(rng.integers(3, 7))
    B = n + int(rng.integers(1, 4))
    yield B, n, n
    for _ in range(5):
        B, n_in, n_out = distinct_sizes(rng, 3)
        yield B, n_in, n_out


@exercise(
    "05.linear_backward",
    title="Backward pass of a linear layer Y = X @ W + b",
    points=4,
    answer="linear_backward",
    hints=(
        "Each gradient has the shape of its variable: dX (B, n_in), dW (n_in, n_out), "
        "db (n_out,). Find the one product of X, W and dY (transposed where needed) that has "
        "each shape.",
        "dW must be (n_in, n_out): X.T is (n_in, B) and dY is (B, n_out). dX must be (B, n_in): "
        "dY is (B, n_out) and W.T is (n_out, n_in). b is added to every row of the batch, so "
        "every row sends its gradient back to the same b.",
        "dX = dY @ W.T; dW = X.T @ dY; db = dY.sum(axis=0). Sums, not means: the loss already "
        "averaged over the batch, and dY carries that 1/B.",
    ),
)
def _linear_backward(answer, rng):
    for B, n_in, n_out in _linear_cases(rng):
        X = rng.normal(size=(B, n_in))
        W = rng.normal(size=(n_in, n_out))
        dY = rng.normal(size=(B, n_out))
        where = f"for X of shape {X.shape}, W of shape {W.shape}"
        got = unpack(_by_hand(answer, X.copy(), W.copy(), dY.copy()), ("dX", "dW", "db"))
        dX, dW, db = got["dX"], got["dW"], got["db"]
        expected_dW = X.T @ dY
        _close(
            dW,
            expected_dW,
            name="dW",
            context=where,
            mistakes={
                "transposed weight gradient (dY.T @ X); dW = X.T @ dY has the shape of W": dY.T @ X,
                "mean instead of sum (a factor of the batch size): dW = X.T @ dY": expected_dW / B,
            },
        )
        _close(
            db,
            dY.sum(axis=0),
            name="db",
            context=where,
            mistakes={
                "bias gradient not summed over the batch: db = dY.sum(axis=0)": dY,
                "mean instead of sum (a factor of the batch size): db = dY.sum(axis=0)": dY.mean(
                    axis=0
                ),
                "summed over the wrong axis: the batch is axis 0": dY.sum(axis=1),
                "kept the batch axis: db has the shape of b, (n_out,)": dY.sum(
                    axis=0, keepdims=True
                ),
            },
        )
        mistakes_dX = {
            "dX uses W instead of W.T: dX = dY @ W.T": dY @ W if n_in == n_out else None,
            "divided dX by the batch size; dY already carries the 1/B of the mean": dY @ W.T / B,
        }
        _close(
            dX,
            dY @ W.T,
            name="dX",
            context=where,
            mistakes={k: v for k, v in mistakes_dX.items() if v is not None},
        )


# ---------------------------------------------------------------- 05.activation_backward

_ACTIVATIONS = ("relu", "sigmoid")


def _activation_expected(kind: str, x: np.ndarray, dy: np.ndarray):
    forgot = "forgot the activation derivative: the upstream dy passed through unchanged"
    only_local = "returned only the local derivative: multiply it by the upstream dy"
    if kind == "relu":
        mask = (x > 0).astype(float)
        return dy * mask, {
            forgot: dy,
            only_local + " (dx = dy * (x > 0))": mask,
            "the mask is the wrong way round: the gradient passes where x > 0": dy * (x <= 0),
            "multiplied by relu(x) instead of its derivative, the mask (x > 0)": dy
            * np.maximum(x, 0),
        }
    if kind == "sigmoid":
        s = sigmoid(x)
        return dy * s * (1 - s), {
            forgot: dy,
            "used the input instead of the output: the derivative is s * (1 - s) with "
            "s = sigmoid(x), not x * (1 - x)": dy * x * (1 - x),
            only_local: s * (1 - s),
            "sigmoid is not its own derivative: d sigmoid/dx = s * (1 - s)": dy * s,
            "sign error: d sigmoid/dx = s * (1 - s), which is positive": -dy * s * (1 - s),
        }
    raise ValueError(f"unknown activation {kind!r}")


@exercise(
    "05.activation_backward",
    title="Backward of ReLU and sigmoid (elementwise)",
    points=3,
    answer="activation_backward",
    hints=(
        "An elementwise activation y = f(x) has a diagonal Jacobian: y[i, j] depends only on "
        "x[i, j]. So the backward pass is an elementwise product dx = f'(x) * dy, no matmul.",
        "ReLU: f'(x) is 1 where x > 0 and 0 elsewhere. Sigmoid: s * (1 - s) with s = sigmoid(x), "
        "written with the OUTPUT s, as the lesson wrote tanh's slope with tanh(x).",
        "relu: dy * (x > 0); sigmoid: s = 1 / (1 + np.exp(-x)); dy * s * (1 - s).",
    ),
)
def _activation_backward(answer, rng):
    expect_mapping(answer, _ACTIVATIONS, name="activation_backward")
    unfinished = []
    for kind in _ACTIVATIONS:
        function = answer[kind]
        name = f"{kind}_backward"
        try:
            for _ in range(4):
                B, n = distinct_sizes(rng, 2)
                x = rng.normal(scale=1.5, size=(B, n))
                x = np.where(np.abs(x) < 0.05, 0.5, x)  # away from the kink of ReLU
                dy = rng.normal(size=(B, n))
                expected, mistakes = _activation_expected(kind, x, dy)
                got = _by_hand(function, x.copy(), dy.copy(), what=name)
                _close(
                    got,
                    expected,
                    name=f"{name}(x, dy)",
                    context=f"for x of shape {x.shape}",
                    mistakes=mistakes,
                )
        except NotAttempted:
            unfinished.append(name)
    if len(unfinished) == len(_ACTIVATIONS):
        raise NotAttempted
    if unfinished:
        raise Wrong(f"the others are right, but {', '.join(unfinished)} still return `...`")


# ---------------------------------------------------------------- 05.softmax_ce_backward


def softmax_ce_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean cross-entropy)/d logits = (softmax(logits) - onehot(y)) / B."""
    return (softmax(logits) - one_hot(y, logits.shape[1])) / len(y)


@exercise(
    "05.softmax_ce_backward",
    title="Backward of softmax with cross-entropy: (p - y) / B",
    points=4,
    answer="softmax_ce_backward",
    hints=(
        "For one row, L = -log p[y] with p = softmax(z). The derivative of L with respect to "
        "z[k] is p[k] - 1 for the true class and p[k] for every other class.",
        "So per row dz = p - onehot(y). The loss is the MEAN over the B rows, which multiplies "
        "every row's gradient by 1/B. Subtract the row maximum before np.exp so that large "
        "logits do not overflow.",
        "p = np.exp(z - z.max(axis=1, keepdims=True)); p /= p.sum(axis=1, keepdims=True); "
        "p[np.arange(B), y] -= 1; return p / B.",
    ),
)
def _softmax_ce_backward(answer, rng):
    for case in range(6):
        B, K = distinct_sizes(rng, 2, 2, 9)
        logits = rng.normal(scale=2.0, size=(B, K))
        y = rng.integers(0, K, size=B)
        if case == 5:
            logits = logits + 1000.0  # softmax does not change, a naive np.exp overflows
        where = f"for logits of shape {logits.shape}"
        with np.errstate(all="ignore"):
            got = _by_hand(answer, logits.copy(), y.copy())
        expected = softmax_ce_grad(logits, y)
        got_array = as_array(got, "dlogits")
        if case == 5 and got_array.shape == expected.shape and not np.isfinite(got_array).all():
            raise Wrong(
                "dlogits contains nan or inf for logits around 1000: np.exp overflowed. "
                "Softmax does not change when a constant is subtracted from a row, so subtract "
                "the row maximum before np.exp"
            )
        onehot = one_hot(y, K)
        p = softmax(logits)
        _close(
            got_array,
            expected,
            name="dlogits",
            context=where,
            mistakes={
                "without subtracting the one-hot target: dlogits = (p - onehot(y)) / B": p / B,
                "sum instead of mean (a factor of the batch size): the loss is the mean over "
                "the batch, so divide by B": p - onehot,
                "sign error: dlogits = (p - onehot(y)) / B, not (onehot(y) - p) / B": (onehot - p)
                / B,
                "used the logits instead of the softmax probabilities p": (logits - onehot) / B,
                "softmax over the wrong axis: each ROW (one example) is normalised, axis=1": (
                    softmax(logits, axis=0) - onehot
                )
                / B,
            },
        )


# ---------------------------------------------------------------- 05.grad_check


# Module-level test functions (bound with functools.partial), so that the grader can
# send them by name to the learner's kernel: a lambda cannot be pickled.
def _bind(function, **values):
    bound = functools.partial(function, **values)
    bound.__name__ = "f"  # how an error message shows it: f(x), not the bound arrays
    return bound


def _sum_c_sin(x, c):
    return float(np.sum(c * np.sin(x)))


def _log_sum_exp(x):
    return float(np.log(np.sum(np.exp(x))))


def _sum_w_cube(x, w):
    return float(np.sum(w * x**3) / 3)


def _check_functions(rng: np.random.Generator):
    """(description, f, x, exact gradient) for a few smooth functions with gradients away from 0."""
    B, n = distinct_sizes(rng, 2, 2, 6)
    c = rng.uniform(0.5, 1.5, size=(B, n)) * rng.choice([-1.0, 1.0], size=(B, n))
    x = rng.uniform(-1.0, 1.0, size=(B, n))
    yield "f(x) = sum(c * sin(x))", _bind(_sum_c_sin, c=c), x, c * np.cos(x)

    k = int(rng.integers(3, 8))
    x = rng.normal(scale=0.5, size=k)
    yield "f(x) = log(sum(exp(x)))", _log_sum_exp, x, softmax(x)

    B, n = distinct_sizes(rng, 2, 2, 6)
    x = rng.uniform(0.5, 1.5, size=(B, n)) * rng.choice([-1.0, 1.0], size=(B, n))
    w = rng.uniform(0.5, 1.5, size=(B, n))
    yield "f(x) = sum(w * x**3) / 3", _bind(_sum_w_cube, w=w), x, w * x**2


def _bugged(exact: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A wrong gradient: one element scaled, or all of it."""
    wrong = exact.copy()
    kind = int(rng.integers(0, 3))
    if kind == 0:
        index = tuple(int(rng.integers(0, s)) for s in exact.shape)
        wrong[index] *= float(rng.choice([0.6, 1.3, -1.0]))
    elif kind == 1:
        wrong *= 2.0  # a lost factor 1/2
    else:
        index = tuple(int(rng.integers(0, s)) for s in exact.shape)
        wrong[index] *= 0.5
    return wrong


# The checker is the skill: the package's finite differences and checks are refused (the
# functions it is given live in this module, so the module itself stays allowed).
_OWN_CHECKER = ("backprop_course.gradcheck", "backprop_course.nn", "backprop_course.autograd")


@exercise(
    "05.grad_check",
    title="A gradient checker: the max relative error",
    points=3,
    answer="grad_check",
    hints=(
        "For each element x[i] of the array (x may be 1-D or 2-D: np.ndindex(x.shape) walks "
        "every index), compute the central difference (f(x + h e_i) - f(x - h e_i)) / (2h) "
        "with h = 1e-5, and put x[i] back afterwards.",
        "Then the elementwise relative error |a - n| / max(|a|, |n|) between the analytic "
        "gradient a and the numerical one n, and return its largest value as one float.",
        "num = np.zeros_like(x); for i in np.ndindex(x.shape): old = x[i]; x[i] = old + h; "
        "fp = f(x); x[i] = old - h; fm = f(x); x[i] = old; num[i] = (fp - fm) / (2 * h). "
        "Then return float(np.max(np.abs(analytic - num) / np.maximum(np.maximum(np.abs(analytic), "
        "np.abs(num)), 1e-12))).",
    ),
)
def _grad_check(answer, rng):
    for round_ in range(2):
        for description, f, x, exact in _check_functions(rng):
            cases = [("the correct gradient", exact)] if round_ == 0 else []
            cases.append(("a wrong gradient", _bugged(exact, rng)))
            for which, analytic in cases:
                x_in = x.copy()
                where = f"for {description} with {which}, x of shape {x.shape}"
                got = call_under_rules(answer, f, x_in, analytic.copy(), forbid=_OWN_CHECKER)
                if not np.array_equal(x_in, x):
                    raise Wrong(
                        f"grad_check changed x {where}: put each element back after perturbing it"
                    )
                if (isinstance(got, np.ndarray) and got.ndim > 0) or isinstance(got, (list, tuple)):
                    raise Wrong(
                        f"grad_check should return one number (the largest relative error), "
                        f"got an array of shape {np.shape(got)}"
                    )
                value = float(as_array(got, "grad_check(f, x, analytic)"))
                if analytic is exact:
                    if not value < 1e-6:
                        raise Wrong(
                            f"grad_check returned {value:.3g} {where}, but this gradient is "
                            "exact: a central difference with h = 1e-5 in float64 agrees to "
                            "about 1e-9. A forward difference, a step far from 1e-5, or a slip "
                            "in the relative error?"
                        )
                    continue
                diff = np.abs(analytic - exact)
                relative = diff / np.maximum(np.maximum(np.abs(analytic), np.abs(exact)), 1e-12)
                _close(
                    value,
                    relative.max(),
                    name="grad_check(f, x, analytic)",
                    context=where,
                    rtol=1e-4,
                    atol=1e-8,
                    mistakes={
                        "absolute error max|a - n| instead of the relative error": diff.max(),
                        "mean instead of max of the relative errors": relative.mean(),
                        "denominator |a| + |n|; the task asks for max(|a|, |n|)": (
                            diff / (np.abs(analytic) + np.abs(exact))
                        ).max(),
                        "divided by |n| only; the relative error divides by max(|a|, |n|)": (
                            diff / np.abs(exact)
                        ).max(),
                        "divided by |a| only; the relative error divides by max(|a|, |n|)": (
                            diff / np.abs(analytic)
                        ).max(),
                    },
                )


# ---------------------------------------------------------------- 05.two_layer_backward

_PARAMS = ("W1", "b1", "W2", "b2")


def two_layer_grads(X, y, W1, b1, W2, b2, *, relu_mask=True, scale=1.0) -> dict:
    """Gradients of mean softmax cross-entropy of relu(X @ W1 + b1) @ W2 + b2."""
    Z1 = X @ W1 + b1
    H = np.maximum(Z1, 0)
    dZ2 = softmax_ce_grad(H @ W2 + b2, y) * scale
    dH = dZ2 @ W2.T
    dZ1 = dH * (Z1 > 0) if relu_mask else dH
    return {
        "W1": X.T @ dZ1,
        "b1": dZ1.sum(axis=0),
        "W2": H.T @ dZ2,
        "b2": dZ2.sum(axis=0),
        "dZ1": dZ1,
        "dZ2": dZ2,
    }


@exercise(
    "05.two_layer_backward",
    title="All four gradients of a two-layer network",
    points=4,
    answer="two_layer_backward",
    hints=(
        "Forward: Z1 = X @ W1 + b1, H = relu(Z1), Z2 = H @ W2 + b2, L = mean cross-entropy of "
        "Z2. Keep Z1 and H: the backward pass needs them. Then go back one step at a time with "
        "the pieces of this notebook.",
        "dZ2 = (softmax(Z2) - onehot(y)) / B; the second layer is a linear layer with input H "
        "and upstream dZ2; dH goes back through the ReLU (mask Z1 > 0) to dZ1; the first layer "
        "is a linear layer with input X and upstream dZ1.",
        "dW2 = H.T @ dZ2; db2 = dZ2.sum(0); dH = dZ2 @ W2.T; dZ1 = dH * (Z1 > 0); "
        "dW1 = X.T @ dZ1; db1 = dZ1.sum(0). Divide by B exactly once, in dZ2.",
    ),
)
def _two_layer_backward(answer, rng):
    for _ in range(5):
        B, D, H, K = distinct_sizes(rng, 4, 2, 10)
        X = rng.normal(size=(B, D))
        y = rng.integers(0, K, size=B)
        W1 = rng.normal(scale=0.8, size=(D, H))
        b1 = rng.normal(scale=0.5, size=H)
        W2 = rng.normal(scale=0.8, size=(H, K))
        b2 = rng.normal(scale=0.5, size=K)
        args = (X, y, W1, b1, W2, b2)
        where = f"for X {X.shape}, W1 {W1.shape}, W2 {W2.shape}"
        got = unpack(_by_hand(answer, *(a.copy() for a in args)), _PARAMS)
        expected = two_layer_grads(*args)
        no_mask = two_layer_grads(*args, relu_mask=False)
        summed = two_layer_grads(*args, scale=B)
        twice = two_layer_grads(*args, scale=1 / B)
        flipped = two_layer_grads(*args, scale=-1)
        for key in ("W2", "b2", "W1", "b1"):
            mistakes = {
                "sum instead of mean (a factor of the batch size): divide by B once, in dZ2": (
                    summed[key]
                ),
                "divided by the batch size twice: the 1/B is in dZ2 already, and the layers "
                "only sum": twice[key],
                "sign error: dZ2 = (p - onehot(y)) / B": flipped[key],
            }
            if key in ("W1", "b1"):
                mistakes["forgot the ReLU derivative: dZ1 = dH * (Z1 > 0)"] = no_mask[key]
            if key.startswith("W"):
                mistakes["transposed weight gradient: dW has the shape of W"] = expected[key].T
            else:
                mistakes["bias gradient not summed over the batch: db = dZ.sum(axis=0)"] = expected[
                    "dZ" + key[1]
                ]
            _close(
                got[key],
                expected[key],
                name=f"the gradient of {key}",
                context=where,
                mistakes=mistakes,
            )
