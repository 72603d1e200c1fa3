"""Layers with hand-written backward passes, on numpy arrays (lessons 05-08).

A batch is a 2-D array whose rows are examples. Each layer remembers what its
backward pass needs during ``forward`` and turns the gradient of the loss with
respect to its output, ``dy``, into the gradient with respect to its input,
``dx``, storing the gradients of its own parameters on the way.

Contents:

- :class:`Module`: the shared interface, ``forward``/``__call__``, ``backward``,
  ``parameters()``, ``gradients()``, ``train()``/``eval()``, ``name``.
- :class:`Linear`: ``y = x @ W + b`` with ``W`` of shape ``(in, out)``.
- :class:`ReLU`, :class:`Sigmoid`, :class:`Tanh`: elementwise activations.
- :class:`BatchNorm1d`: normalise each feature over the batch (torch semantics).
- :class:`LayerNorm`: normalise each example over its features (last axis).
- :class:`MSELoss`, :class:`SoftmaxCrossEntropy`: losses; ``forward`` returns
  a float, ``backward()`` the gradient with respect to the prediction.
- :func:`softmax`: probabilities along the last axis, computed stably.
- :class:`Sequential`: layers one after another; :class:`MLP` builds one.

Gradients are overwritten by each ``backward`` (not accumulated as in torch),
and parameter arrays are updated in place by optimizers, so
``parameters()`` and ``gradients()`` always return the same array objects.
Layers keep the dtype they are built with (float64 by default, float32 for
speed) and reject input of another dtype rather than silently converting it.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

__all__ = [
    "MLP",
    "BatchNorm1d",
    "LayerNorm",
    "Linear",
    "MSELoss",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "softmax",
]

INITS = ("he", "glorot", "normal")
ACTIVATIONS = ("relu", "tanh", "sigmoid")


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _shape(shape: tuple) -> str:
    """``(32, 10)``, ``(5,)``: a shape as Python prints a tuple."""
    return str(tuple(int(n) for n in shape))


def _check_array(
    x, who: str, expected: str, ndim: int | None, features: int | None, dtype
) -> np.ndarray:
    """Return ``x`` as an array, or raise ValueError naming the layer and both shapes.

    ``ndim=None`` accepts any number of axes (at least one); ``features`` is the
    required size of the last axis (None: any); ``dtype`` None accepts any
    floating dtype.
    """
    x = np.asarray(x)
    if (ndim is not None and x.ndim != ndim) or (ndim is None and x.ndim < 1):
        raise ValueError(f"{who} expects input of shape {expected}, got {_shape(x.shape)}")
    if features is not None and x.shape[-1] != features:
        raise ValueError(f"{who} expects input of shape {expected}, got {_shape(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{who} expects a floating-point array, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"{who} expects {np.dtype(dtype).name} input, got {x.dtype.name}; convert it with "
            f".astype(np.{np.dtype(dtype).name}) or build the layer with dtype=np.{x.dtype.name}"
        )
    return x


def _check_grad(dy, who: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``dy`` must have the shape and dtype of the output it is the gradient of."""
    dy = np.asarray(dy)
    if dy.shape != shape:
        raise ValueError(
            f"{who}.backward expects dy of shape {_shape(shape)} (the shape of its "
            f"last output), got {_shape(dy.shape)}"
        )
    if dy.dtype != dtype:
        raise ValueError(
            f"{who}.backward expects dy of dtype {dtype.name} (the dtype of its last "
            f"output), got {dy.dtype.name}"
        )
    return dy


class Module:
    """The interface every layer shares.

    Subclasses set ``_cache`` in ``forward`` (whatever backward needs) and read
    it in ``backward``; calling ``backward`` first is an error.
    """

    def __init__(self) -> None:
        self.training = True
        self._cache = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return self.name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def parameters(self) -> list[np.ndarray]:
        """The parameter arrays (updated in place by optimizers)."""
        return []

    def gradients(self) -> list[np.ndarray]:
        """Gradients of the loss, same order and shapes as :meth:`parameters`."""
        return []

    def train(self) -> Module:
        """Training mode (BatchNorm1d uses the batch statistics). Returns self."""
        self.training = True
        return self

    def eval(self) -> Module:
        """Evaluation mode (BatchNorm1d uses its running statistics). Returns self."""
        self.training = False
        return self

    def _cached(self):
        if self._cache is None:
            raise RuntimeError(
                f"{self.name}.backward() was called before forward(): run a forward pass "
                "first, backward uses the values that forward remembers"
            )
        return self._cache


# ---------------------------------------------------------------- Linear


class Linear(Module):
    """``y = x @ W + b``: x ``(B, in)``, W ``(in, out)``, b ``(out,)``, y ``(B, out)``.

    ``init`` sets the standard deviation of the normally distributed weights:
    ``"he"`` sqrt(2 / in) (for ReLU), ``"glorot"`` sqrt(2 / (in + out)) (for
    tanh and sigmoid), ``"normal"`` 1, or a float. Biases start at zero. The
    weights are drawn in float64 and then converted, so a seed gives the same
    starting point in float32 and float64.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str | float = "he",
        rng: np.random.Generator | int | None = None,
        dtype=np.float64,
    ):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"{self.name}: dtype must be a floating type, got {self.dtype}")
        if isinstance(init, str):
            stds = {
                "he": np.sqrt(2.0 / self.in_features),
                "glorot": np.sqrt(2.0 / (self.in_features + self.out_features)),
                "normal": 1.0,
            }
            if init not in stds:
                raise ValueError(f"init must be one of {INITS} or a float std, got {init!r}")
            std = stds[init]
        else:
            std = float(init)
        shape = (self.in_features, self.out_features)
        self.W = (_generator(rng).standard_normal(shape) * std).astype(self.dtype)
        self.b = np.zeros(self.out_features, dtype=self.dtype)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    @property
    def name(self) -> str:
        return f"Linear({self.in_features} -> {self.out_features})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_array(
            x, self.name, f"(batch, {self.in_features})", 2, self.in_features, self.dtype
        )
        self._cache = x
        y = x @ self.W
        y += self.b  # in place: no second (batch, out) array
        return y

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """From ``dy`` ``(B, out)``: ``dW = x.T @ dy`` ``(in, out)``,
        ``db = dy.sum(0)`` ``(out,)`` and the returned ``dx = dy @ W.T`` ``(B, in)``.

        ``input_grad=False`` skips ``dx`` (and returns None): the first layer of
        a network does not need the gradient with respect to the data.
        """
        x = self._cached()
        dy = _check_grad(dy, self.name, (len(x), self.out_features), self.dtype)
        np.matmul(x.T, dy, out=self.dW)  # written into the same arrays every step
        np.sum(dy, axis=0, out=self.db)
        return dy @ self.W.T if input_grad else None

    def parameters(self) -> list[np.ndarray]:
        return [self.W, self.b]

    def gradients(self) -> list[np.ndarray]:
        return [self.dW, self.db]


# ---------------------------------------------------------------- activations


class _Elementwise(Module):
    """An activation applied to every element; any shape, any float dtype."""

    def _input(self, x) -> np.ndarray:
        return _check_array(x, self.name, "(..., features) of floats", None, None, None)


class ReLU(_Elementwise):
    """``y = max(x, 0)``; ``dx = dy * (x > 0)`` (the gradient at exactly 0 is taken as 0)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.maximum(self._input(x), 0)
        self._cache = y  # y > 0 exactly where x > 0
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy * 1[y > 0]``, same shape as ``dy``."""
        y = self._cached()
        return _check_grad(dy, self.name, y.shape, y.dtype) * (y > 0)


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        # 0.5 * (1 + tanh(x / 2)) is the same function and never overflows exp.
        y = 0.5 * (1 + np.tanh(0.5 * self._input(x)))
        self._cache = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy * y * (1 - y)``, same shape as ``dy``."""
        y = self._cached()
        return _check_grad(dy, self.name, y.shape, y.dtype) * y * (1 - y)


class Tanh(_Elementwise):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(self._input(x))
        self._cache = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy * (1 - y**2)``, same shape as ``dy``."""
        y = self._cached()
        return _check_grad(dy, self.name, y.shape, y.dtype) * (1 - y * y)


# ---------------------------------------------------------------- normalisation

# Both normalisation layers compute, along some axis with N elements,
#     mu = mean(x),  var = mean((x - mu)**2),  s = 1 / sqrt(var + eps),
#     xhat = (x - mu) * s,  y = gamma * xhat + beta.
# Backward, with g = dy * gamma (the gradient reaching xhat): x_j reaches every
# xhat_i by three paths,
#     directly:          d xhat_j / d x_j = s                      (only i = j)
#     through the mean:  d mu / d x_j = 1 / N, giving -s / N        (every i)
#     through the var:   d var / d x_j = 2 (x_j - mu) / N and d s / d var = -s**3 / 2,
#                        giving (x_i - mu) * (-s**3 / 2) * 2 (x_j - mu) / N
#                        = -s * xhat_i * xhat_j / N                 (every i)
# (the mean's effect on var vanishes because sum(x - mu) = 0). Summing g_i over
# the paths: dx_j = s * (g_j - mean(g) - xhat_j * mean(g * xhat)), that is, the
# gradient of xhat with its mean and its component along xhat removed, times s.


def _normalized_backward(g: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray, axis: int):
    """``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))`` along ``axis``."""
    mean_g = g.mean(axis=axis, keepdims=True)
    mean_gx = (g * xhat).mean(axis=axis, keepdims=True)
    return inv_std * (g - mean_g - xhat * mean_gx)


class BatchNorm1d(Module):
    """Normalise each of the ``num_features`` columns over the batch, then scale and shift.

    Training mode uses the batch mean and biased variance and updates
    ``running_mean``/``running_var`` (the latter with the unbiased batch
    variance), ``running = (1 - momentum) * running + momentum * batch``, as
    torch does. Evaluation mode normalises with the running statistics.
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float64
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.dtype = np.dtype(dtype)
        self.gamma = np.ones(self.num_features, dtype=self.dtype)
        self.beta = np.zeros(self.num_features, dtype=self.dtype)
        self.dgamma = np.zeros_like(self.gamma)
        self.dbeta = np.zeros_like(self.beta)
        self.running_mean = np.zeros(self.num_features, dtype=self.dtype)
        self.running_var = np.ones(self.num_features, dtype=self.dtype)

    @property
    def name(self) -> str:
        return f"BatchNorm1d({self.num_features})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_array(
            x, self.name, f"(batch, {self.num_features})", 2, self.num_features, self.dtype
        )
        if self.training:
            if len(x) < 2:
                raise ValueError(
                    f"{self.name} in training mode needs a batch of at least 2 rows to "
                    f"compute a variance, got {_shape(x.shape)}; call .eval() to use "
                    "the running statistics"
                )
            mean, var = x.mean(axis=0), x.var(axis=0)
            m, n = self.momentum, len(x)
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += m * var * (n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv_std
        self._cache = (xhat, inv_std, self.training)
        return self.gamma * xhat + self.beta

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """From ``dy`` ``(B, F)``: ``dgamma = (dy * xhat).sum(0)``, ``dbeta = dy.sum(0)``
        (both ``(F,)``) and the returned ``dx`` ``(B, F)``.

        Training mode: ``dx = s * (g - g.mean(0) - xhat * (g * xhat).mean(0))``
        with ``g = dy * gamma`` and ``s = 1 / sqrt(var + eps)`` (derivation above
        :func:`_normalized_backward`). Evaluation mode: the statistics are
        constants, so ``dx = g * s``.
        """
        xhat, inv_std, training = self._cached()
        dy = _check_grad(dy, self.name, xhat.shape, xhat.dtype)
        np.sum(dy * xhat, axis=0, out=self.dgamma)
        np.sum(dy, axis=0, out=self.dbeta)
        g = dy * self.gamma
        if not training:
            return g * inv_std
        return _normalized_backward(g, xhat, inv_std, axis=0)

    def parameters(self) -> list[np.ndarray]:
        return [self.gamma, self.beta]

    def gradients(self) -> list[np.ndarray]:
        return [self.dgamma, self.dbeta]


class LayerNorm(Module):
    """Normalise each example over its last axis (``num_features`` values), then scale and shift.

    The same computation in training and evaluation mode; input ``(..., F)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, dtype=np.float64):
        super().__init__()
        self.num_features, self.eps = int(num_features), eps
        self.dtype = np.dtype(dtype)
        self.gamma = np.ones(self.num_features, dtype=self.dtype)
        self.beta = np.zeros(self.num_features, dtype=self.dtype)
        self.dgamma = np.zeros_like(self.gamma)
        self.dbeta = np.zeros_like(self.beta)

    @property
    def name(self) -> str:
        return f"LayerNorm({self.num_features})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _check_array(
            x, self.name, f"(..., {self.num_features})", None, self.num_features, self.dtype
        )
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv_std
        self._cache = (xhat, inv_std)
        return self.gamma * xhat + self.beta

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """From ``dy`` ``(..., F)``: ``dgamma = (dy * xhat)`` and ``dbeta = dy``, both
        summed over every axis but the last (``(F,)``), and the returned ``dx``
        ``(..., F)``: ``dx = s * (g - g.mean(-1) - xhat * (g * xhat).mean(-1))`` with
        ``g = dy * gamma`` (derivation above :func:`_normalized_backward`).
        """
        xhat, inv_std = self._cached()
        dy = _check_grad(dy, self.name, xhat.shape, xhat.dtype)
        batch_axes = tuple(range(dy.ndim - 1))
        np.sum(dy * xhat, axis=batch_axes, out=self.dgamma)
        np.sum(dy, axis=batch_axes, out=self.dbeta)
        return _normalized_backward(dy * self.gamma, xhat, inv_std, axis=-1)

    def parameters(self) -> list[np.ndarray]:
        return [self.gamma, self.beta]

    def gradients(self) -> list[np.ndarray]:
        return [self.dgamma, self.dbeta]


# ---------------------------------------------------------------- losses


def softmax(logits: np.ndarray) -> np.ndarray:
    """``exp(z) / sum(exp(z))`` along the last axis, with the row maximum
    subtracted first so that ``exp`` cannot overflow. Keeps the dtype."""
    z = np.asarray(logits)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


class MSELoss(Module):
    """``mean((y_hat - y)**2)`` over all elements; ``backward() = 2 (y_hat - y) / N``."""

    def __call__(self, y_hat: np.ndarray, y: np.ndarray) -> float:  # type: ignore[override]
        return self.forward(y_hat, y)

    def forward(self, y_hat: np.ndarray, y: np.ndarray) -> float:  # type: ignore[override]
        y_hat = _check_array(y_hat, self.name, "(...) of floats", None, None, None)
        y = np.asarray(y)
        if y.shape != y_hat.shape:
            raise ValueError(
                f"{self.name} expects targets of the prediction's shape "
                f"{_shape(y_hat.shape)}, got {_shape(y.shape)}"
            )
        diff = y_hat - y.astype(y_hat.dtype, copy=False)
        self._cache = diff
        return float(np.mean(diff * diff))

    def backward(self) -> np.ndarray:  # type: ignore[override]
        """``d loss / d y_hat = 2 (y_hat - y) / N``, N the number of elements; shape of y_hat."""
        diff = self._cached()
        return diff * (2 / diff.size)


class SoftmaxCrossEntropy(Module):
    """Mean over the batch of ``-log softmax(logits)[target]``.

    ``forward(logits (B, K), targets (B,) of ints in [0, K))`` returns a float;
    ``backward()`` returns ``dlogits = (softmax(logits) - onehot(targets)) / B``.
    The loss is ``logsumexp(z) - z[target]`` with the row maximum subtracted,
    so it stays finite in float32 even for confident, wrong predictions.
    """

    def __call__(self, logits: np.ndarray, targets: np.ndarray) -> float:  # type: ignore[override]
        return self.forward(logits, targets)

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:  # type: ignore[override]
        logits = _check_array(logits, self.name, "(batch, classes)", 2, None, None)
        targets = np.asarray(targets)
        batch, classes = logits.shape
        if targets.shape != (batch,) or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(
                f"{self.name} expects integer targets of shape ({batch},) for logits of "
                f"shape {_shape(logits.shape)}, got {targets.dtype} of shape "
                f"{_shape(targets.shape)}"
            )
        if batch and (targets.min() < 0 or targets.max() >= classes):
            raise ValueError(
                f"{self.name}: targets must be class indices in [0, {classes}), "
                f"got values from {targets.min()} to {targets.max()}"
            )
        rows = np.arange(batch)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        sums = e.sum(axis=1)
        loss = np.mean(np.log(sums) - z[rows, targets])
        e /= sums[:, None]  # now the softmax probabilities
        self._cache = (e, rows, targets)
        return float(loss)

    def backward(self) -> np.ndarray:  # type: ignore[override]
        """``dlogits = (probs - onehot) / B``, shape ``(B, K)``, dtype of the logits."""
        probs, rows, targets = self._cached()
        dlogits = probs.copy()
        dlogits[rows, targets] -= 1
        dlogits /= len(probs)
        return dlogits


# ---------------------------------------------------------------- containers


class Sequential(Module):
    """Layers applied one after another; backward runs them in reverse."""

    def __init__(self, *layers: Module):
        super().__init__()
        self.layers = list(layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"{self.name}({inner}\n)"

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Chain rule through the layers from last to first; returns ``dx``.

        ``input_grad=False`` lets a first ``Linear`` skip ``dx`` (returns None):
        a training step needs no gradient with respect to the data.
        """
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad and isinstance(layer, (Linear, Sequential)):
                return layer.backward(dy, input_grad=False)
            dy = layer.backward(dy)
        return dy

    def parameters(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.parameters()]

    def gradients(self) -> list[np.ndarray]:
        return [g for layer in self.layers for g in layer.gradients()]

    def train(self) -> Sequential:
        self.training = True
        for layer in self.layers:
            layer.train()
        return self

    def eval(self) -> Sequential:
        self.training = False
        for layer in self.layers:
            layer.eval()
        return self


class MLP(Sequential):
    """``Linear, activation, ..., Linear`` for ``sizes`` like ``[2, 64, 64, 3]``.

    No activation after the last ``Linear`` (its outputs are scores or
    predictions for a loss). ``activation`` in ``{"relu", "tanh", "sigmoid"}``;
    ``init``, ``rng`` and ``dtype`` are passed to every ``Linear`` (one
    generator for all, so a seed fixes the whole network).
    """

    def __init__(
        self,
        sizes,
        activation: str = "relu",
        init: str | float = "he",
        rng: np.random.Generator | int | None = None,
        dtype=np.float64,
    ):
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        kinds = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
        if activation not in kinds:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        rng = _generator(rng)
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(pairwise(sizes)):
            layers.append(Linear(n_in, n_out, init=init, rng=rng, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(kinds[activation]())
        super().__init__(*layers)
        self.sizes, self.activation = sizes, activation

    @property
    def name(self) -> str:
        return f"MLP({'-'.join(str(n) for n in self.sizes)}, {self.activation})"
