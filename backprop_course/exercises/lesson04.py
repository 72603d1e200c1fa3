"""Lesson 04, from neuron to network: a neuron, loss gradients, the error flowing back, SGD."""

from __future__ import annotations

import numpy as np

from backprop_course.compare import NotAttempted, Wrong, assert_close, call, is_stub
from backprop_course.exercises import exercise
from backprop_course.scalar_nn import MLP


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@exercise(
    "04.neuron",
    title="One neuron: tanh(w . x + b)",
    points=2,
    answer="neuron",
    hints=(
        "A neuron does three things: multiply each input by its weight, add everything up "
        "together with the bias, then squash the sum with the activation.",
        "np.dot(w, x) is the weighted sum; the bias is added to it before the activation.",
        "Return np.tanh(np.dot(w, x) + b).",
    ),
)
def _neuron(answer, rng):
    for _ in range(8):
        n = int(rng.integers(2, 7))
        x = rng.normal(size=n)
        w = rng.normal(scale=0.6, size=n)
        b = float(rng.normal(scale=0.8))
        got = call(answer, x.copy(), w.copy(), b, what="neuron")
        z = float(w @ x)
        assert_close(
            got,
            np.tanh(z + b),
            name="neuron(x, w, b)",
            rtol=1e-7,
            context=f"for {n} inputs x={np.round(x, 3).tolist()}, b={b:.3g}",
            mistakes={
                "forgot the bias: it goes inside, tanh(w . x + b)": np.tanh(z),
                "forgot the activation: w . x + b is only the pre-activation z": z + b,
                "added the bias after the activation: tanh(w . x) + b": np.tanh(z) + b,
                "used the sigmoid; this neuron's activation is tanh": _sigmoid(z + b),
                "applied tanh to each product before summing": float(np.tanh(w * x).sum()) + b,
            },
        )


def _batch(rng):
    n = int(rng.integers(3, 13))
    return n, rng.normal(size=n), rng.normal(size=n)


@exercise(
    "04.mse_grad",
    title="The gradient of the mean squared error",
    points=2,
    answer="mse_grad",
    hints=(
        "L = (1/n) Σ (ŷ_i - y_i)²; differentiate with respect to one prediction ŷ_i: "
        "only one term of the sum contains it.",
        "The derivative of (ŷ_i - y_i)² is 2 (ŷ_i - y_i); the 1/n of the mean stays.",
        "Return 2 * (y_hat - y) / len(y).",
    ),
)
def _mse_grad(answer, rng):
    for _ in range(6):
        n, y_hat, y = _batch(rng)
        got = call(answer, y_hat.copy(), y.copy(), what="mse_grad")
        diff = y_hat - y
        assert_close(
            got,
            2 * diff / n,
            name="mse_grad(y_hat, y)",
            rtol=1e-7,
            context=f"for a batch of n={n}",
            mistakes={
                "sign error: the gradient is 2 (y_hat - y) / n, not 2 (y - y_hat) / n": -2
                * diff
                / n,
                "forgot the factor 2 from differentiating the square": diff / n,
                "mean vs sum: L is the mean, so the gradient carries a factor 1/n "
                "(the batch size)": 2 * diff,
                "mean vs sum and no factor 2": diff,
                "forgot to subtract the target y": 2 * y_hat / n,
            },
        )


@exercise(
    "04.bce_grad_logit",
    title="Cross-entropy after a sigmoid: the gradient at the logit",
    points=2,
    answer="bce_grad_logit",
    hints=(
        "Chain rule: dL/dz = dL/dp * dp/dz with p = sigmoid(z) and dp/dz = p (1 - p).",
        "dL/dp = -y/p + (1 - y)/(1 - p); multiply by p (1 - p) and almost everything cancels.",
        "Return 1 / (1 + np.exp(-z)) - y, that is p - y.",
    ),
)
def _bce_grad_logit(answer, rng):
    for _ in range(5):
        n = int(rng.integers(4, 11))
        z = rng.uniform(-6, 6, size=n)
        y = rng.permutation(np.r_[0.0, 1.0, rng.integers(0, 2, size=n - 2).astype(float)])
        got = call(answer, z.copy(), y.copy(), what="bce_grad_logit")
        p = _sigmoid(z)
        assert_close(
            got,
            p - y,
            name="bce_grad_logit(z, y)",
            rtol=1e-7,
            context=f"for z={np.round(z, 3).tolist()}, y={y.astype(int).tolist()}",
            mistakes={
                "sign error: the gradient is p - y, not y - p": y - p,
                "forgot the sigmoid: z - y instead of sigmoid(z) - y": z - y,
                "forgot to subtract the target y": p,
                "this is the gradient of the squared error 2 (p - y) p (1 - p), "
                "not of the cross-entropy": 2 * (p - y) * p * (1 - p),
                "the gradient with respect to p, not z: multiply by dp/dz = p (1 - p)": (
                    -y / p + (1 - y) / (1 - p)
                ),
            },
        )


@exercise(
    "04.hidden_deltas",
    title="The error flowing back to the hidden layer",
    points=3,
    answer="hidden_deltas",
    hints=(
        "Hidden neuron h sends its output to every output neuron k along the weight "
        "W2[k, h], so it collects delta_out[k] * W2[k, h] from each of them.",
        "The sum over k of W2[k, h] * delta_out[k] is (W2.T @ delta_out)[h]; then the chain "
        "rule passes through the activation: multiply by tanh'(z_h) = 1 - tanh(z_h)**2.",
        "Return (W2.T @ delta_out) * (1 - np.tanh(z_hidden) ** 2).",
    ),
)
def _hidden_deltas(answer, rng):
    # Square cases first: there a transposed W2 still has the right shape, so the
    # mistake can be named instead of surfacing as a shape error.
    shapes = [(3, 3), (4, 4), (1, 4), (2, 5), (3, 2), (2, 6)]
    for n_out, n_hidden in shapes:
        W2 = rng.normal(size=(n_out, n_hidden))
        delta_out = rng.normal(size=n_out)
        z = rng.uniform(-1.5, 1.5, size=n_hidden)
        got = call(answer, W2.copy(), delta_out.copy(), z.copy(), what="hidden_deltas")
        back = W2.T @ delta_out
        slope = 1 - np.tanh(z) ** 2
        mistakes = {
            "forgot the activation derivative: multiply by tanh'(z) = 1 - tanh(z)**2": back,
            "used 1 - z**2: the derivative of tanh is 1 - tanh(z)**2": back * (1 - z**2),
            "multiplied by tanh(z) instead of its derivative 1 - tanh(z)**2": back * np.tanh(z),
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
        got = call(
            answer,
            [p.copy() for p in params],
            [g.copy() for g in grads],
            lr,
            what="sgd_step",
        )
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


def _reference_step(model, X, y, lr, *, sign=-1.0, use_lr=True, mean=True, zero=True):
    """One step, correct by default; the keywords reproduce typical mistakes."""
    loss = _bce(model, X, y, mean=mean)
    if zero:
        model.zero_grad()
    loss.backward()
    for p in model.parameters():
        p.data += sign * (lr if use_lr else 1.0) * p.grad
    return loss.data


def _params(model) -> np.ndarray:
    return np.array([p.data for p in model.parameters()])


def _as_loss(value, step: int) -> float:
    if hasattr(value, "data") and not isinstance(value, np.ndarray):
        value = value.data
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise Wrong(
            f"train_step should return the loss as a number (or a Value), got "
            f"{type(value).__name__} at step {step}"
        ) from error


@exercise(
    "04.train_step",
    title="One training step with the scalar engine",
    points=3,
    answer="train_step",
    hints=(
        "Four stages: forward pass and loss, zero the gradients, backward pass, update. "
        "The loss is the mean over the batch of -[y log p + (1 - y) log(1 - p)], "
        "p = model(x).sigmoid().",
        "Gradients accumulate (+=) in every backward pass: call model.zero_grad() before "
        "loss.backward(), and change p.data (not p) for each p in model.parameters().",
        "loss = sum(per-example losses) / len(y); model.zero_grad(); loss.backward(); then "
        "p.data -= lr * p.grad for every parameter; return loss.data.",
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
        seed = int(rng.integers(2**31))
        sizes = [int(rng.integers(2, 5)), 1]
        where = f"for an MLP(2, {sizes}), a batch of {n} points and lr={lr:.3g}"

        def fresh(seed=seed, sizes=sizes):
            return MLP(2, sizes, rng=seed)

        model, reference = fresh(), fresh()
        start = _params(model)
        variants = {
            "the sum of the per-example losses, not their mean": fresh(),
            "added the gradient (sign error): p.data -= lr * p.grad": fresh(),
            "forgot the learning rate: p.data -= lr * p.grad": fresh(),
            "forgot model.zero_grad(): the gradients of the previous step were added to "
            "this step's (backward accumulates with +=)": fresh(),
        }
        options = [
            {"mean": False},
            {"sign": 1.0},
            {"use_lr": False},
            {"zero": False},
        ]
        for step in (1, 2):
            got = _as_loss(call(answer, model, X.copy(), y.copy(), lr, what="train_step"), step)
            before = _params(reference)
            expected = _reference_step(reference, X, y, lr)
            for variant, option in zip(variants.values(), options):
                _reference_step(variant, X, y, lr, **option)
            assert_close(
                got,
                expected,
                name=f"the loss returned by step {step}",
                rtol=1e-6,
                context=where,
                mistakes={
                    "the sum of the per-example losses, not their mean": n * expected,
                    "returned the loss after the update; return the one the gradients "
                    "came from": _bce(reference, X, y).data,
                },
            )
            now = _params(model)
            previous = start if step == 1 else before
            if np.allclose(now, previous, rtol=0, atol=1e-12):
                raise Wrong(
                    f"the parameters did not change in step {step} {where}: update p.data "
                    "for each p in model.parameters() (rebinding p does nothing), after "
                    "loss.backward() and not after zeroing the gradients"
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
