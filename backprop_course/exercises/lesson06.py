"""Lesson 06, a hand-written MLP in numpy: layers as objects, softmax cross-entropy, SGD."""

from __future__ import annotations

import copy

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    as_array,
    assert_close,
    call,
    is_stub,
    unpack,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules, refuse_reference

# The learner writes the library: the package's numpy layers and losses, its optimizers and
# this module's reference layers are refused (by identity and by what runs), and so is torch's
# autograd inside a layer's forward or backward.
_REFERENCES = ("backprop_course.nn", "backprop_course.exercises.lesson06")
_RULE = (
    "this exercise asks for your own code, with its gradients by hand: not the course's "
    "reference implementation, not autograd"
)

# ------------------------------------------------------------------ reference layers


class _Linear:
    """Reference layer y = x @ W + b, used to build test networks for the checks."""

    def __init__(self, W, b):
        self.W, self.b = W, b
        self.dW, self.db = np.zeros_like(W), np.zeros_like(b)

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dy):
        self.dW = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.W.T

    def parameters(self):
        return [self.W, self.b]

    def gradients(self):
        return [self.dW, self.db]


class _ReLU:
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask

    def parameters(self):
        return []

    def gradients(self):
        return []


def _softmax(logits, axis=-1):
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _calling(method, *args, what, missing="", forbid=_REFERENCES, autograd=True):
    """The learner's method under the lesson's rules, with a pointer added when their code
    hit a missing attribute."""
    try:
        return call_under_rules(
            method, *args, autograd=autograd, forbid=forbid, rule=_RULE, what=what
        )
    except Wrong as error:
        if missing and isinstance(error.__cause__, AttributeError):
            raise Wrong(f"{error}. {missing}") from error
        raise


def _attribute(layer, name, what):
    if not hasattr(layer, name):
        raise Wrong(f"{what}: after backward() the layer has no attribute {name!r}; store it there")
    return getattr(layer, name)


# ------------------------------------------------------------------------ 06.linear


@exercise(
    "06.linear",
    title="A Linear layer with forward and backward",
    points=3,
    answer="Linear",
    hints=(
        "forward: remember x (backward needs it), then return x @ W + b. backward gets "
        "dy = dL/dy of shape (B, out) and returns dL/dx of shape (B, in).",
        "Check the shapes: dW must have W's shape (in, out), and x.T @ dy does; every row "
        "of the batch used the same b, so its gradient adds the rows of dy up.",
        "forward: self.x = x; return x @ self.W + self.b. backward: self.dW = self.x.T @ dy; "
        "self.db = dy.sum(axis=0); return dy @ self.W.T.",
    ),
)
def _linear(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    refuse_reference(
        answer, ("backprop_course.nn.Linear", "backprop_course.exercises.lesson06._Linear")
    )
    # Square layers first: there a transposed matrix still has the right shape, so the
    # mistake can be named instead of surfacing as a shape error.
    for batch, n_in, n_out in [(5, 3, 3), (4, 4, 4), (6, 3, 2), (3, 2, 5), (7, 4, 1)]:
        W = rng.normal(size=(n_in, n_out))
        b = rng.normal(size=n_out)
        where = f"for W of shape {W.shape}, a batch of {batch} rows"
        layer = call(answer, W.copy(), b.copy(), what="Linear(W, b)")
        square = n_in == n_out
        previous_dW = previous_db = None
        for _ in range(2):
            x = rng.normal(size=(batch, n_in))
            dy = rng.normal(size=(batch, n_out))
            y = _calling(layer.forward, x.copy(), what="Linear.forward")
            forward_mistakes = {"forgot the bias: y = x @ W + b": x @ W}
            if square:
                forward_mistakes["used W.T: with W of shape (in, out), y = x @ W + b"] = x @ W.T + b
            assert_close(
                y,
                x @ W + b,
                name="Linear.forward(x)",
                rtol=1e-7,
                context=where,
                mistakes=forward_mistakes,
            )
            dx = _calling(
                layer.backward,
                dy.copy(),
                what="Linear.backward",
                missing="Did forward() store its input (self.x = x)? backward needs it "
                "for dW = x.T @ dy",
            )
            if not np.array_equal(np.asarray(getattr(layer, "W", W), dtype=float), W):
                raise Wrong(
                    "backward changed self.W: it should only compute gradients; "
                    "the update is the optimizer's job"
                )
            dx_mistakes = {"sign error: dx = dy @ W.T": -dy @ W.T}
            if square:
                dx_mistakes["used W instead of W.T: dx = dy @ W.T"] = dy @ W
            assert_close(
                dx,
                dy @ W.T,
                name="the dx returned by Linear.backward(dy)",
                rtol=1e-7,
                context=where,
                mistakes=dx_mistakes,
            )
            dW = _attribute(layer, "dW", "Linear")
            db = _attribute(layer, "db", "Linear")
            dW_mistakes = {
                "divided by the batch size (mean vs sum): dy already carries the loss's 1/B, "
                "so dW = x.T @ dy is a plain sum over the rows": x.T @ dy / batch,
                "sign error: dW = x.T @ dy": -x.T @ dy,
            }
            if square:
                dW_mistakes[
                    "used the layer's output instead of its input: dW = x.T @ dy with the x "
                    "that forward received"
                ] = (x @ W + b).T @ dy
            if previous_dW is not None:
                dW_mistakes[
                    "added this batch's gradient to the previous one (+=): backward should "
                    "overwrite self.dW with this batch's gradient"
                ] = x.T @ dy + previous_dW
            if square:
                dW_mistakes["transposed weight gradient: dW = x.T @ dy, not dy.T @ x"] = dy.T @ x
            assert_close(
                dW,
                x.T @ dy,
                name="self.dW after backward",
                rtol=1e-7,
                context=where,
                mistakes=dW_mistakes,
            )
            db_array = np.asarray(db, dtype=float)
            if db_array.shape == dy.shape:
                raise Wrong(
                    f"self.db has shape {db_array.shape}, the shape of dy, {where}: the bias "
                    f"was not summed over the batch; b has shape {b.shape}, and every row used "
                    "it, so db = dy.sum(axis=0)"
                )
            db_mistakes = {
                "divided by the batch size (mean vs sum): db = dy.sum(axis=0)": dy.mean(axis=0),
            }
            if batch == n_out:
                db_mistakes["summed over the wrong axis: db = dy.sum(axis=0)"] = dy.sum(axis=1)
            if previous_db is not None:
                db_mistakes[
                    "added this batch's gradient to the previous one (+=): backward should "
                    "overwrite self.db"
                ] = dy.sum(axis=0) + previous_db
            assert_close(
                db,
                dy.sum(axis=0),
                name="self.db after backward",
                rtol=1e-7,
                context=where,
                mistakes=db_mistakes,
            )
            previous_dW, previous_db = x.T @ dy, dy.sum(axis=0)


# -------------------------------------------------------------------------- 06.relu


@exercise(
    "06.relu",
    title="A ReLU layer with forward and backward",
    points=2,
    answer="ReLU",
    hints=(
        "ReLU passes positive inputs through and zeroes the rest; its slope is 1 where the "
        "input was positive and 0 elsewhere. backward needs to know where that was.",
        "In forward, store the boolean mask x > 0; in backward, let dy through only there.",
        "forward: self.mask = x > 0; return x * self.mask. backward: return dy * self.mask.",
    ),
)
def _relu(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    refuse_reference(
        answer, ("backprop_course.nn.ReLU", "backprop_course.exercises.lesson06._ReLU")
    )
    layer = call(answer, what="ReLU()")
    for _ in range(4):
        shape = (int(rng.integers(2, 7)), int(rng.integers(2, 6)))
        x = rng.normal(size=shape)
        dy = rng.normal(size=shape)
        where = f"for x of shape {shape}"
        x_in, dy_in = x.copy(), dy.copy()
        y = _calling(layer.forward, x_in, what="ReLU.forward")
        assert_close(
            y,
            np.maximum(x, 0),
            name="ReLU.forward(x)",
            rtol=1e-7,
            context=where,
            mistakes={
                "returned the mask (x > 0), not the values max(x, 0)": (x > 0).astype(float),
            },
        )
        dx = _calling(
            layer.backward,
            dy_in,
            what="ReLU.backward",
            missing="Did forward() store what backward needs (the mask x > 0)?",
        )
        mask = x > 0
        assert_close(
            dx,
            dy * mask,
            name="the dx returned by ReLU.backward(dy)",
            rtol=1e-7,
            context=where,
            mistakes={
                "passed dy through unchanged: zero it where the input was <= 0": dy,
                "returned the mask (the local slope) without multiplying it by dy": mask * 1.0,
                "multiplied dy by the ReLU output instead of its slope (0 or 1)": dy
                * np.maximum(x, 0),
                "masked with dy > 0; the mask comes from the forward input, x > 0": dy * (dy > 0),
                "used the mask x <= 0; the gradient flows where x > 0": dy * ~mask,
            },
        )
        if not np.array_equal(x_in, x):
            raise Wrong(
                "ReLU.forward changed its input array in place: the layer before may still need "
                "it; return a new array (np.maximum(x, 0) or x * mask)"
            )
        if not np.array_equal(dy_in, dy):
            raise Wrong("ReLU.backward changed dy in place; return a new array (dy * self.mask)")


# -------------------------------------------------------------------- 06.sequential


def _net(rng, d):
    layers = []
    for i in range(3):
        layers.append(_Linear(rng.normal(size=(d, d)), rng.normal(size=d)))
        if i < 2:
            layers.append(_ReLU())
    return layers


def _run(layers, x, dy, *, order="reversed", chain=True):
    """Forward and backward through copies of ``layers``; keywords reproduce mistakes."""
    layers = copy.deepcopy(layers)
    h = x
    for layer in layers:
        h = layer.forward(h if chain else x)
    order = reversed(layers) if order == "reversed" else layers
    g = dy
    for layer in order:
        g = layer.backward(g)
    return h, g, [g_.copy() for layer in layers for g_ in layer.gradients()]


# The test layers are this module's reference layers, which the container must call.
_CONTAINER_RULES = {"forbid": ("backprop_course.nn",), "autograd": False}


@exercise(
    "06.sequential",
    title="Sequential: a network as a list of layers",
    points=2,
    answer="Sequential",
    hints=(
        "forward feeds the output of each layer into the next; backward sends the gradient "
        "through the same layers, last to first.",
        "In backward, loop over reversed(self.layers), replacing the gradient by what each "
        "layer's backward returns; return the final gradient, dL/dx of the network's input.",
        "forward: for layer in self.layers: x = layer.forward(x); return x. backward: for "
        "layer in reversed(self.layers): dy = layer.backward(dy); return dy.",
    ),
)
def _sequential(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    refuse_reference(answer, ("backprop_course.nn.Sequential",))
    for _ in range(3):
        d, batch = int(rng.integers(3, 6)), int(rng.integers(2, 7))
        layers = _net(rng, d)
        x = rng.normal(size=(batch, d))
        dy = rng.normal(size=(batch, d))
        where = f"for Linear-ReLU-Linear-ReLU-Linear layers of width {d}, a batch of {batch}"
        expected_y, expected_dx, expected_grads = _run(layers, x, dy)
        unchained_y, _, _ = _run(layers, x, dy, chain=False)
        _, forward_order_dx, _ = _run(layers, x, dy, order="forward")
        mine = copy.deepcopy(layers)
        model = call(answer, *mine, what="Sequential(*layers)")
        y = _calling(model.forward, x.copy(), what="Sequential.forward", **_CONTAINER_RULES)
        assert_close(
            y,
            expected_y,
            name="Sequential.forward(x)",
            rtol=1e-7,
            context=where,
            mistakes={
                "gave every layer the input x: each layer must get the previous layer's "
                "output (x = layer.forward(x))": unchained_y,
                "returned the input x, not the last layer's output": x,
            },
        )
        dx = _calling(model.backward, dy.copy(), what="Sequential.backward", **_CONTAINER_RULES)
        assert_close(
            dx,
            expected_dx,
            name="the dx returned by Sequential.backward(dy)",
            rtol=1e-7,
            context=where,
            mistakes={
                "went through the layers in forward order: backward must visit them last to "
                "first, reversed(self.layers)": forward_order_dx,
                "returned dy unchanged; return what the first layer's backward returned": dy,
            },
        )
        grads = [g for layer in mine for g in layer.gradients()]
        for i, (got, want) in enumerate(zip(grads, expected_grads)):
            assert_close(
                got,
                want,
                name=f"the gradient of parameter {i} stored in its layer",
                rtol=1e-7,
                context=where,
            )


# ---------------------------------------------------------- 06.softmax_cross_entropy


@exercise(
    "06.softmax_cross_entropy",
    title="Softmax cross-entropy: loss and gradient",
    points=2,
    answer="softmax_cross_entropy",
    hints=(
        "Softmax each row of the logits into probabilities; the loss is the mean over the "
        "batch of -log(probability of the true class); its gradient at the logits is "
        "(probabilities - one-hot targets) / B.",
        "Subtract each row's maximum from the logits before np.exp: softmax does not change, "
        "and exp can no longer overflow. p[np.arange(B), y] picks each row's true class.",
        "z = logits - logits.max(axis=1, keepdims=True); p = np.exp(z) / np.exp(z).sum(axis=1, "
        "keepdims=True); loss = -np.log(p[np.arange(B), y]).mean(); d = p.copy(); "
        "d[np.arange(B), y] -= 1; return loss, d / B.",
    ),
)
def _softmax_cross_entropy(answer, rng):
    for case in range(5):
        batch, k = int(rng.integers(2, 9)), int(rng.integers(2, 6))
        if case == 1:
            batch = k  # square: softmax over the wrong axis keeps the shape
        logits = rng.normal(scale=2.0, size=(batch, k))
        if case == 4:
            logits = logits + rng.uniform(500, 1000, size=(batch, 1))
        y = rng.integers(0, k, size=batch)
        rows = np.arange(batch)
        where = f"for logits of shape {logits.shape}" + (" (large logits)" if case == 4 else "")
        got = call_under_rules(
            answer, logits.copy(), y.copy(), autograd=True, forbid=_REFERENCES, rule=_RULE
        )
        parts = unpack(got, ("loss", "dlogits"))
        loss, dlogits = parts["loss"], parts["dlogits"]
        p = _softmax(logits)
        onehot = np.zeros_like(p)
        onehot[rows, y] = 1
        expected_loss = -np.log(p[rows, y]).mean()
        if case == 4 and not np.all(np.isfinite(as_array(loss, "the loss"))):
            raise Wrong(
                f"the loss is nan or inf {where}: np.exp overflows; subtract each row's "
                "maximum from the logits before exponentiating (it does not change the softmax)"
            )
        p0 = _softmax(logits, axis=0)
        assert_close(
            loss,
            expected_loss,
            name="the loss",
            rtol=1e-7,
            context=where,
            mistakes={
                "the sum over the batch, not the mean": -np.log(p[rows, y]).sum(),
                "softmax over the wrong axis: normalise each row (axis=1)": -np.log(
                    p0[rows, y]
                ).mean(),
                "forgot the minus sign: the loss is -log p": np.log(p[rows, y]).mean(),
                "took -log of the raw logit instead of the softmax probability": np.mean(
                    -logits[rows, y]
                ),
            },
        )
        if case == 4 and not np.all(np.isfinite(as_array(dlogits, "dlogits"))):
            raise Wrong(
                f"dlogits contains nan or inf {where}: subtract each row's maximum from the "
                "logits before np.exp"
            )
        mistakes = {
            "forgot to divide by the batch size B: the loss is a mean": p - onehot,
            "sign error: dlogits = (p - onehot) / B": (onehot - p) / batch,
            "forgot to subtract the one-hot targets": p / batch,
        }
        if batch == k:
            mistakes["softmax over the wrong axis: normalise each row (axis=1)"] = (
                p0 - onehot
            ) / batch
        assert_close(
            dlogits,
            (p - onehot) / batch,
            name="dlogits",
            rtol=1e-6,
            context=where,
            mistakes=mistakes,
        )


# ------------------------------------------------------------ 06.iterate_minibatches


def _collect(answer, X, y, batch_size, seed):
    got = call(
        answer,
        X.copy(),
        y.copy(),
        batch_size,
        np.random.default_rng(seed),
    )
    if got is None:
        raise Wrong(
            "iterate_minibatches returned None: is a `yield` (or the `return` of a list of "
            "batches) missing?"
        )
    try:
        batches = list(got)
    except TypeError as error:
        raise Wrong(
            "iterate_minibatches should yield (or return a list of) pairs (X_batch, y_batch), "
            f"got {type(got).__name__}"
        ) from error
    pairs = []
    for i, pair in enumerate(batches):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise Wrong(f"batch {i} is not a pair (X_batch, y_batch): got {type(pair).__name__}")
        xb, yb = np.asarray(pair[0]), np.asarray(pair[1])
        if xb.ndim != 2 or xb.shape[1] != X.shape[1] or yb.shape != (len(xb),):
            raise Wrong(
                f"batch {i}: X_batch has shape {xb.shape} and y_batch {yb.shape}; expected "
                f"(b, {X.shape[1]}) and (b,) with the same b"
            )
        pairs.append((xb, yb))
    return pairs


@exercise(
    "06.iterate_minibatches",
    title="Minibatches: one shuffled pass over the data",
    points=2,
    answer="iterate_minibatches",
    hints=(
        "One epoch visits every sample exactly once, in a new random order. Draw one random "
        "permutation of the indices 0..n-1 and cut it into consecutive slices.",
        "Index X and y with the SAME slice of the permutation, so each row keeps its label. "
        "range(0, n, batch_size) gives the slice starts; the last slice may be shorter: keep it.",
        "order = rng.permutation(len(X)); for start in range(0, len(X), batch_size): "
        "idx = order[start:start + batch_size]; yield X[idx], y[idx].",
    ),
)
def _iterate_minibatches(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(4):
        batch_size = int(rng.integers(3, 9))
        n = batch_size * int(rng.integers(3, 7)) + int(rng.integers(1, batch_size))
        X = rng.normal(size=(n, 3))
        X[:, 0] = np.arange(n)  # the row number travels with the row
        y = rng.permutation(n) + 10  # one distinct label per row
        label_of_row = dict(zip(range(n), y.tolist()))
        seed = int(rng.integers(2**31))
        where = f"for n={n} samples and batch_size={batch_size}"
        pairs = _collect(answer, X, y, batch_size, seed)
        rows = np.concatenate([xb[:, 0] for xb, _ in pairs]).astype(int) if pairs else []
        sizes = [len(yb) for _, yb in pairs]
        if len(rows) == n - n % batch_size and len(set(rows.tolist())) == len(rows):
            raise Wrong(
                f"{len(rows)} of the {n} samples came out {where}: dropped the last partial "
                f"batch (the final {n % batch_size} samples); keep it, even if it is smaller"
            )
        if len(rows) != n or len(set(np.asarray(rows).tolist())) != n:
            missing = n - len(set(np.asarray(rows).tolist()))
            raise Wrong(
                f"every sample must appear exactly once per epoch {where}: got {len(rows)} "
                f"rows, {missing} samples missing (sampled with replacement? use one "
                "permutation of the indices)"
            )
        if any(s != batch_size for s in sizes[:-1]) or not 0 < sizes[-1] <= batch_size:
            raise Wrong(
                f"batch sizes {sizes} {where}: every batch but the last must hold exactly "
                "batch_size samples"
            )
        if np.array_equal(rows, np.arange(n)):
            raise Wrong(
                f"the batches are not shuffled {where}: draw a new random order every epoch "
                "(rng.permutation)"
            )
        for xb, yb in pairs:
            expected = np.array([label_of_row[int(r)] for r in xb[:, 0]])
            if not np.array_equal(yb, expected):
                raise Wrong(
                    f"X and y shuffled differently {where}: a batch's labels do not belong to "
                    "its rows; index X and y with the same indices"
                )
            if not np.allclose(xb, X[xb[:, 0].astype(int)]):
                raise Wrong(f"the rows of X_batch are not rows of X {where}")
        again = _collect(answer, X, y, batch_size, seed)
        again_rows = np.concatenate([xb[:, 0] for xb, _ in again]).astype(int)
        if not np.array_equal(again_rows, rows):
            raise Wrong(
                "two calls with generators seeded alike gave different orders: shuffle with "
                "the rng argument (rng.permutation), not np.random, so runs are reproducible"
            )


# ------------------------------------------------------------------- 06.sgd_update


@exercise(
    "06.sgd_update",
    title="The SGD update, in place",
    points=2,
    answer="sgd_update",
    hints=(
        "The arrays in params belong to the layers. Change their contents; do not make new "
        "arrays, or the layers never see the update.",
        "`p = p - lr * g` only rebinds the loop variable p to a new array. `p -= lr * g` "
        "writes into the existing array.",
        "for p, g in zip(params, grads): p -= lr * g",
    ),
)
def _sgd_update(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(4):
        shapes = [(int(rng.integers(2, 5)), 3), (3,), (3, int(rng.integers(1, 4))), (1,)]
        params = [rng.normal(size=s) for s in shapes]
        grads = [rng.normal(size=s) for s in shapes]
        lr = float(rng.uniform(0.01, 0.5))
        originals = [p.copy() for p in params]
        grads_in = [g.copy() for g in grads]
        # the lists are new, the arrays ours: an in-place update shows in `params`
        call_under_rules(answer, list(params), grads_in, lr, forbid=("backprop_course.optim",))
        if all(np.array_equal(p, o) for p, o in zip(params, originals)):
            raise Wrong(
                "the parameter arrays did not change: rebinding instead of updating in place "
                "(p = p - lr * g makes a new array; the layer keeps the old one). Write "
                "p -= lr * g"
            )
        if not all(np.array_equal(a, b) for a, b in zip(grads_in, grads)):
            raise Wrong("sgd_update changed the gradient arrays; only the parameters should move")
        for i, (p, o, g) in enumerate(zip(params, originals, grads)):
            assert_close(
                p,
                o - lr * g,
                name=f"params[{i}] after the update",
                rtol=1e-7,
                context=f"for lr={lr:.3g}",
                mistakes={
                    "added the gradient (sign error): p -= lr * g": o + lr * g,
                    "forgot the learning rate: p -= lr * g": o - g,
                    "divided by the learning rate instead of multiplying": o - g / lr,
                },
            )


# ----------------------------------------------------------------------- 06.accuracy


@exercise(
    "06.accuracy",
    title="Accuracy from class scores",
    points=1,
    answer="accuracy",
    hints=(
        "The predicted class of a row is the column with the largest score.",
        "scores.argmax(axis=1) gives one predicted class per row; compare with y and average.",
        "return float(np.mean(scores.argmax(axis=1) == y))",
    ),
)
def _accuracy(answer, rng):
    for _ in range(6):
        m, k = int(rng.integers(5, 30)), int(rng.integers(2, 6))
        scores = rng.normal(size=(m, k))
        y = rng.integers(0, k, size=m)
        correct = scores.argmax(axis=1) == y
        if correct.all() or not correct.any():
            y[0] = (scores[0].argmax() + 1) % k if correct.all() else scores[0].argmax()
            correct = scores.argmax(axis=1) == y
        got = call(answer, scores.copy(), y.copy())
        acc = correct.mean()
        assert_close(
            got,
            acc,
            name="accuracy(scores, y)",
            rtol=1e-9,
            context=f"for {m} rows and {k} classes",
            mistakes={
                "returned the number of correct predictions, not the fraction": correct.sum(),
                "returned the error rate 1 - accuracy": 1 - acc,
                "a percentage; return a fraction between 0 and 1": 100 * acc,
                "compared the largest score itself with y; compare its index "
                "(scores.argmax(axis=1))": np.mean(scores.max(axis=1) == y),
            },
        )
