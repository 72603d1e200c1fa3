"""Lesson 04, from neuron to network: a neuron, loss gradients, the error flowing back, SGD."""

from __future__ import annotations

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_close,
    call,
    distinct_sizes,
    is_stub,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules
from backprop_course.scalar_nn import MLP

# A gradient asked for "by hand" may not come from autograd (torch's, or the Value engine),
# from the package's layers and losses, from finite differences or from this module.
_REFERENCES = (
    "backprop_course.nn",
    "backprop_course.autograd",
    "backprop_course.scalar_nn",
    "backprop_course.gradcheck",
    "backprop_course.exercises.lesson04",
)


def _by_hand(answer, *args):
    return call_under_rules(answer, *args, autograd=True, forbid=_REFERENCES)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@exercise(
    "04.neuron",
    title="One neuron: sigmoid(w . x + b)",
    points=2,
    answer="neuron",
    hints=(
        "A neuron does three things: multiply each input by its weight, add everything up "
        "together with the bias, then squash the sum with the activation.",
        "np.dot(w, x) is the weighted sum; the bias is added to it before the activation, "
        "here the sigmoid 1 / (1 + exp(-z)).",
        "z = np.dot(w, x) + b; return 1 / (1 + np.exp(-z)).",
    ),
)
def _neuron(answer, rng):
    for _ in range(8):
        n = int(rng.integers(2, 7))
        x = rng.normal(size=n)
        w = rng.normal(scale=0.6, size=n)
        b = float(rng.normal(scale=0.8))
        got = call(answer, x.copy(), w.copy(), b)
        z = float(w @ x)
        assert_close(
            got,
            _sigmoid(z + b),
            name="neuron(x, w, b)",
            rtol=1e-7,
            context=f"for {n} inputs x={np.round(x, 3).tolist()}, b={b:.3g}",
            mistakes={
                "forgot the bias: it goes inside, sigmoid(w . x + b)": _sigmoid(z),
                "forgot the activation: w . x + b is only the pre-activation z": z + b,
                "added the bias after the activation: sigmoid(w . x) + b": _sigmoid(z) + b,
                "used tanh, the lesson's activation; this neuron's activation is the sigmoid": (
                    np.tanh(z + b)
                ),
                "sign slip in the sigmoid: it is 1 / (1 + exp(-z)), not 1 / (1 + exp(z))": (
                    _sigmoid(-(z + b))
                ),
                "applied the sigmoid to each product before summing": float(_sigmoid(w * x).sum())
                + b,
            },
        )


@exercise(
    "04.mse_grad",
    title="The gradient of the mean squared error, for a batch of vector outputs",
    points=2,
    answer="mse_grad",
    hints=(
        "L = mean over all n * K entries of (y_hat - y)**2; differentiate with respect to one "
        "entry y_hat[i, k]: only one term of the sum contains it.",
        "The derivative of (y_hat[i, k] - y[i, k])**2 is 2 (y_hat[i, k] - y[i, k]); the mean "
        "divides by the number of entries, n * K, not by n alone.",
        "Return 2 * (y_hat - y) / y_hat.size.",
    ),
)
def _mse_grad(answer, rng):
    for _ in range(6):
        n, K = distinct_sizes(rng, 2, 2, 9)  # n != K: dividing by the wrong one shows
        y_hat, y = rng.normal(size=(n, K)), rng.normal(size=(n, K))
        got = _by_hand(answer, y_hat.copy(), y.copy())
        diff = y_hat - y
        assert_close(
            got,
            2 * diff / (n * K),
            name="mse_grad(y_hat, y)",
            rtol=1e-7,
            context=f"for a batch of n={n} examples with K={K} outputs each",
            mistakes={
                "sign error: the gradient is 2 (y_hat - y) / (n K), not 2 (y - y_hat) / (n K)": -2
                * diff
                / (n * K),
                "forgot the factor 2 from differentiating the square": diff / (n * K),
                "divided by the batch size n only: L is the mean over all n * K entries": 2
                * diff
                / n,
                "divided by the number of outputs K only: L is the mean over all n * K entries": 2
                * diff
                / K,
                "mean vs sum: L is the mean, so the gradient carries a factor 1/(n K)": 2 * diff,
                "forgot to subtract the target y": 2 * y_hat / (n * K),
            },
        )


@exercise(
    "04.bce_grad_logit",
    title="Weighted cross-entropy after a sigmoid: the gradient at the logit",
    points=2,
    answer="bce_grad_logit",
    hints=(
        "Chain rule: dL/dz = dL/dp * dp/dz with p = sigmoid(z) and dp/dz = p (1 - p). Do it "
        "for each of the two terms of L separately.",
        "d/dz of -a y log p is -a y (1 - p); d/dz of -(1 - y) log(1 - p) is (1 - y) p. "
        "With a = 1 their sum is the lesson's p - y.",
        "p = 1 / (1 + np.exp(-z)); return (1 - y) * p - pos_weight * y * (1 - p).",
    ),
)
def _bce_grad_logit(answer, rng):
    for _ in range(5):
        n = int(rng.integers(4, 11))
        z = rng.uniform(-6, 6, size=n)
        y = rng.permutation(np.r_[0.0, 1.0, rng.integers(0, 2, size=n - 2).astype(float)])
        a = float(rng.uniform(2.0, 6.0))  # far enough from 1 that ignoring it shows
        got = _by_hand(answer, z.copy(), y.copy(), a)
        p = _sigmoid(z)
        assert_close(
            got,
            (1 - y) * p - a * y * (1 - p),
            name="bce_grad_logit(z, y, pos_weight)",
            rtol=1e-7,
            context=f"for z={np.round(z, 3).tolist()}, y={y.astype(int).tolist()}, "
            f"pos_weight={a:.3g}",
            mistakes={
                "ignored pos_weight: p - y is the gradient only for pos_weight = 1": p - y,
                "multiplied the whole gradient by pos_weight; it weights only the y log p term": a
                * (p - y),
                "weighted the (1 - y) log(1 - p) term instead of the y log p term": a * (1 - y) * p
                - y * (1 - p),
                "sign error: dL/dz = (1 - y) p - pos_weight y (1 - p)": a * y * (1 - p)
                - (1 - y) * p,
                "the gradient with respect to p, not z: multiply by dp/dz = p (1 - p)": (
                    -a * y / p + (1 - y) / (1 - p)
                ),
                "forgot the sigmoid: used z where p = sigmoid(z) belongs": (1 - y) * z
                - a * y * (1 - z),
            },
        )


@exercise(
    "04.hidden_deltas",
    title="The error flowing back to a sigmoid hidden layer",
    points=3,
    answer="hidden_deltas",
    hints=(
        "Hidden neuron h sends its output to every output neuron k along the weight "
        "W2[k, h], so it collects delta_out[k] * W2[k, h] from each of them.",
        "The sum over k of W2[k, h] * delta_out[k] is (W2.T @ delta_out)[h]; then the chain "
        "rule passes through the activation: multiply by sigmoid'(z_h) = s (1 - s), "
        "s = sigmoid(z_h).",
        "s = 1 / (1 + np.exp(-z_hidden)); return (W2.T @ delta_out) * s * (1 - s).",
    ),
)
def _hidden_deltas(answer, rng):
    # Square cases first: there a transposed W2 still has the right shape, so the
    # mistake can be named instead of surfacing as a shape error.
    shapes = [(3, 3), (4, 4), (1, 4), (2, 5), (3, 2), (2, 6)]
    for n_out, n_hidden in shapes:
        W2 = rng.normal(size=(n_out, n_hidden))
        delta_out = rng.normal(size=n_out)
        z = rng.uniform(-2.5, 2.5, size=n_hidden)
        got = _by_hand(answer, W2.copy(), delta_out.copy(), z.copy())
        back = W2.T @ delta_out
        s_z = _sigmoid(z)
        slope = s_z * (1 - s_z)
        mistakes = {
            "forgot the activation derivative: multiply by sigmoid'(z) = s (1 - s)": back,
            "used the lesson's tanh slope 1 - tanh(z)**2; this layer is sigmoid, "
            "s (1 - s) with s = sigmoid(z)": back * (1 - np.tanh(z) ** 2),
            "used z (1 - z): the slope is s (1 - s) with s = sigmoid(z), the neuron's output": (
                back * z * (1 - z)
            ),
            "multiplied by sigmoid(z) instead of its derivative s (1 - s)": back * s_z,
            "ignored the weights: each output error reaches neuron h scaled by W2[k, h]": (
                delta_out.sum() * slope
            ),
        }
        if n_out == n_hidden:
            mistakes = {
                "transposed weight matrix: neuron h collects along column h of W2, "
                "W2.T @ delta_out, not W2 @ delta_out": (W2 @ delta_out) * slope,
                **mistakes,
            }
        assert_close(
            got,
            back * slope,
            name="hidden_deltas(W2, delta_out, z_hidden)",
            rtol=1e-7,
            context=f"for W2 of shape {W2.shape} ({n_out} outputs, {n_hidden} hidden neurons)",
            mistakes=mistakes,
        )


@exercise(
    "04.sgd_step",
    title="The update w <- w - lr * dL/dw",
    points=2,
    answer="sgd_step",
    hints=(
        "The gradient points uphill: to lower the loss, step against it.",
        "Each parameter array moves by -lr times its own gradient array; keep the order.",
        "Return [p - lr * g for p, g in zip(params, grads)].",
    ),
)
def _sgd_step(answer, rng):
    for _ in range(5):
        shapes = [(int(rng.integers(2, 5)), 2), (int(rng.integers(1, 4)),), (1, 3), (1,)]
        params = [rng.normal(size=s) for s in shapes]
        grads = [rng.normal(size=s) for s in shapes]
        lr = float(rng.uniform(0.01, 0.5))
        got = call_under_rules(
            answer,
            [p.copy() for p in params],
            [g.copy() for g in grads],
            lr,
            forbid=("backprop_course.optim",),
        )
        if got is None:
            raise Wrong("sgd_step returned None: is a `return` missing? It returns the new arrays")
        if not isinstance(got, (list, tuple)):
            raise Wrong(
                f"sgd_step should return a list of new parameter arrays, got {type(got).__name__}"
            )
        if len(got) != len(params):
            raise Wrong(
                f"sgd_step returned {len(got)} arrays for {len(params)} parameters: "
                "return one updated array per parameter, in the same order"
            )
        for i, (new, p, g) in enumerate(zip(got, params, grads)):
            assert_close(
                new,
                p - lr * g,
                name=f"the new params[{i}]",
                rtol=1e-7,
                context=f"for lr={lr:.3g}",
                mistakes={
                    "added the gradient (sign error): step against it, p - lr * g": p + lr * g,
                    "forgot the learning rate: p - lr * g": p - g,
                    "divided by the learning rate instead of multiplying": p - g / lr,
                    "returned the step lr * g, not the new parameter p - lr * g": lr * g,
                    "returned the step -lr * g, not the new parameter p - lr * g": -lr * g,
                },
            )


# ---------------------------------------------------------------- 04.train_step


def _bce(model, X, y, mean=True):
    """Binary cross-entropy of sigmoid(model(x)) over the batch, as one Value."""
    total = 0.0
    for x, label in zip(X, y):
        p = model([float(v) for v in x]).sigmoid()
        total = total + (-p.log() if label == 1 else -(1 - p).log())
    return total * (1.0 / len(y)) if mean else total


def _reference_step(
    model, X, y, lr, wd, *, sign=-1.0, use_lr=True, mean=True, zero="before", decay=1.0
):
    """One step, correct by default; the keywords reproduce typical mistakes.

    Returns the loss with its penalty, (wd / 2) * sum of squared parameters, before the update.
    """
    loss = _bce(model, X, y, mean=mean)
    if zero == "before":
        model.zero_grad()
    loss.backward()
    if zero == "between":
        model.zero_grad()
    penalty = float(sum(p.data**2 for p in model.parameters()))
    for p in model.parameters():
        p.data += sign * (lr if use_lr else 1.0) * (p.grad + decay * wd * p.data)
    return loss.data + wd / 2 * penalty


def _params(model) -> np.ndarray:
    return np.array([p.data for p in model.parameters()])


def _as_loss(value, step: int) -> float:
    if value is None:
        raise Wrong(f"train_step returned None in step {step}: is a `return` missing?")
    if hasattr(value, "data") and not isinstance(value, np.ndarray):
        value = value.data
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise Wrong(
            f"train_step should return the loss as a number (or a Value), got "
            f"{type(value).__name__} at step {step}"
        ) from error


_STEP_MISTAKES = {
    "the sum of the per-example losses, not their mean": {"mean": False},
    "added the gradient (sign error): p.data -= lr * (gradient)": {"sign": 1.0},
    "forgot the learning rate: p.data -= lr * (gradient)": {"use_lr": False},
    "forgot model.zero_grad(): the gradients of the previous step were added to "
    "this step's (backward accumulates with +=)": {"zero": "never"},
    "zeroed the gradients after the backward pass and before the update, so only the weight "
    "decay moved the parameters: call model.zero_grad() before backward": {"zero": "between"},
    "forgot the weight decay: the penalty (wd / 2) * sum(w**2) adds wd * w to the gradient "
    "of every parameter": {"decay": 0.0},
    "the weight decay is twice too strong: the gradient of (wd / 2) * w**2 is wd * w "
    "(the 1/2 cancels the 2 of the square)": {"decay": 2.0},
    "the weight decay has the wrong sign: it should pull every parameter towards 0, "
    "p.data -= lr * (p.grad + wd * p.data)": {"decay": -1.0},
}


@exercise(
    "04.train_step",
    title="One training step with the scalar engine, with L2 weight decay",
    points=3,
    answer="train_step",
    hints=(
        "Four stages: forward pass and loss, zero the gradients, backward pass, update. "
        "The data loss is the mean over the batch of -[y log p + (1 - y) log(1 - p)], "
        "p = model(x).sigmoid(); the penalty (wd / 2) * sum(w**2) runs over every parameter.",
        "Gradients accumulate (+=) in every backward pass: call model.zero_grad() before "
        "backward. The penalty's gradient is wd * w: either build the penalty into the Value "
        "graph, or add wd * p.data to p.grad in the update. Change p.data, not p.",
        "data = sum(per-example losses) / len(y); model.zero_grad(); data.backward(); then for "
        "every parameter p.data -= lr * (p.grad + wd * p.data); return data.data + wd / 2 * "
        "(the sum of the squared parameters from before the update).",
    ),
)
def _train_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(2):
        n = int(rng.integers(5, 9))
        X = rng.normal(size=(n, 2))
        y = rng.permutation(np.r_[0, 1, rng.integers(0, 2, size=n - 2)])
        lr = float(rng.uniform(0.05, 0.5))
        wd = float(rng.uniform(0.05, 0.5))
        seed = int(rng.integers(2**31))
        sizes = [int(rng.integers(2, 5)), 1]
        where = f"for an MLP(2, {sizes}), a batch of {n} points, lr={lr:.3g} and wd={wd:.3g}"

        def fresh(seed=seed, sizes=sizes):
            return MLP(2, sizes, rng=seed)

        model, reference = fresh(), fresh()
        start = _params(model)
        variants = {name: fresh() for name in _STEP_MISTAKES}
        for step in (1, 2):
            # the model is the package's MLP and its gradients come from the Value engine; only
            # the check's own reference step is off limits
            got = _as_loss(
                call_under_rules(
                    answer,
                    model,
                    X.copy(),
                    y.copy(),
                    lr,
                    wd,
                    forbid=("backprop_course.exercises.lesson04", "backprop_course.optim"),
                ),
                step,
            )
            before = _params(reference)
            penalty = wd / 2 * float(np.sum(before**2))
            expected = _reference_step(reference, X, y, lr, wd)
            data_loss = expected - penalty
            for name, variant in variants.items():
                _reference_step(variant, X, y, lr, wd, **_STEP_MISTAKES[name])
            after = _bce(reference, X, y).data + wd / 2 * float(np.sum(_params(reference) ** 2))
            assert_close(
                got,
                expected,
                name=f"the loss returned by step {step}",
                rtol=1e-6,
                context=where,
                mistakes={
                    "the sum of the per-example losses, not their mean": n * data_loss + penalty,
                    "returned the data loss without the penalty (wd / 2) * sum(w**2)": data_loss,
                    "the penalty without its 1/2: (wd / 2) * sum(w**2)": data_loss + 2 * penalty,
                    "returned the loss after the update; return the one the gradients "
                    "came from": after,
                },
            )
            now = _params(model)
            previous = start if step == 1 else before
            if np.allclose(now, previous, rtol=0, atol=1e-12):
                raise Wrong(
                    f"the parameters did not change in step {step} {where}: update p.data "
                    "for each p in model.parameters() (rebinding p does nothing), after "
                    "the backward pass and not after zeroing the gradients"
                )
            assert_close(
                now,
                _params(reference),
                name=f"model.parameters() after step {step}",
                rtol=1e-6,
                atol=1e-9,
                context=where,
                mistakes={name: _params(v) for name, v in variants.items()},
            )
