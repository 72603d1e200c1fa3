"""Lesson 07, training dynamics: vanishing gradients, initialization, clipping, normalization."""

from __future__ import annotations

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
from backprop_course.rules import call_under_rules

# By hand, in numpy: torch's autograd, the package's normalization layers (nn, transformer)
# and this module's reference computations are refused.
_NORM_REFERENCES = (
    "backprop_course.nn",
    "backprop_course.transformer",
    "backprop_course.autograd",
    "backprop_course.gradcheck",
    "backprop_course.exercises.lesson07",
)
_NORM_RULE = (
    "this exercise asks for the gradient by hand, without autograd or the course's "
    "normalization layers"
)
# Clipping is the learner's own: torch's clip_grad_norm_ (and friends) is refused.
_CLIP_REFERENCES = ("torch.nn.utils.clip_grad",)
_CLIP_RULE = "this exercise asks for your own clipping in numpy, not torch's clip_grad_norm_"


@exercise(
    "07.vanishing_bound",
    title="How much L sigmoid layers can shrink a gradient",
    points=1,
    answer="vanishing_bound",
    hints=(
        "Backpropagating through one neuron of the chain multiplies the gradient by its weight w "
        "and by the sigmoid's slope sigma'(z) = sigma(z) (1 - sigma(z)). How large can each "
        "factor be?",
        "sigma(z) (1 - sigma(z)) is at most 1/4 (at z = 0), and |w| is at most w_max, so one "
        "layer multiplies the gradient by at most w_max / 4. L layers multiply L such factors.",
        "Return (w_max / 4) ** L.",
    ),
)
def _vanishing_bound(answer, rng):
    depths = [*rng.choice(np.arange(3, 16), size=4, replace=False).tolist(), 1, 2]
    for depth in depths:
        depth = int(depth)
        w_max = float(rng.uniform(0.5, 8.0))
        while min(abs(w_max - c) for c in (1.0, 2.0, 4.0)) < 0.2:  # no coincidences
            w_max = float(rng.uniform(0.5, 8.0))
        got = call(answer, depth, w_max)
        factor = w_max / 4
        assert_close(
            got,
            factor**depth,
            name=f"vanishing_bound({depth}, {w_max:.4g})",
            rtol=1e-9,
            atol=0.0,
            context=f"for L={depth} layers and w_max={w_max:.4g}",
            mistakes={
                "ignored the weights: each layer multiplies by its weight too, so by at most "
                "w_max / 4": 0.25**depth,
                "ignored the sigmoid's slope: each layer also multiplies by sigma'(z) <= 1/4": (
                    w_max**depth
                ),
                "counted the weight once: every layer has its own weight, so the factor per "
                "layer is w_max / 4": w_max * 0.25**depth,
                "used 1/2, the sigmoid's value at 0; the bound is on its derivative, "
                "sigma(0) (1 - sigma(0)) = 1/4": (w_max / 2) ** depth,
                "off by one layer: each of the L layers contributes one factor w_max / 4": factor
                ** (depth - 1),
                "off by one layer (one factor too many)": factor ** (depth + 1),
                "multiplied by L instead of raising to the power L": factor * depth,
            },
        )


def _init_std(fan_in, fan_out, kind):
    if kind == "glorot":
        return np.sqrt(2.0 / (fan_in + fan_out))
    return np.sqrt(2.0 / fan_in)


@exercise(
    "07.init_std",
    title="Glorot and He initialization: the standard deviation",
    points=2,
    answer="init_std",
    hints=(
        "Both rules choose Var(W) so that the variance of the signal stays the same from layer "
        "to layer; the function returns the standard deviation, the square root of that variance.",
        "Glorot (normalized) init: Var(W) = 2 / (fan_in + fan_out), a compromise between the "
        "forward pass (1 / fan_in) and the backward pass (1 / fan_out). He init for ReLU: "
        "Var(W) = 2 / fan_in, the 2 making up for ReLU zeroing half of its inputs.",
        "Return np.sqrt(2 / (fan_in + fan_out)) for 'glorot' and np.sqrt(2 / fan_in) for 'he'.",
    ),
)
def _init_std_check(answer, rng):
    cases = [("he", 64, 64), ("glorot", 64, 64)]
    for _ in range(8):
        fan_in, fan_out = (int(v) for v in rng.integers(2, 600, size=2))
        while fan_out == fan_in:
            fan_out = int(rng.integers(2, 600))
        cases.append((str(rng.choice(["he", "glorot"])), fan_in, fan_out))
    # Unequal fans first, so that mixing them up is caught and named.
    cases = cases[2:] + cases[:2]
    for kind, fan_in, fan_out in cases:
        got = call_under_rules(answer, fan_in, fan_out, kind, forbid=("backprop_course.nn",))
        expected = _init_std(fan_in, fan_out, kind)
        variance = expected**2
        mistakes = {
            "forgot the square root: that is the variance Var(W), the function returns the "
            "standard deviation": variance,
            "variance vs std: took the square root twice": np.sqrt(expected),
        }
        if kind == "he":
            mistakes.update(
                {
                    "used fan_out: He init keeps the forward signal steady, Var(W) = 2 / fan_in": (
                        np.sqrt(2.0 / fan_out)
                    ),
                    "forgot the factor 2 that makes up for ReLU zeroing half its inputs "
                    "(1 / fan_in is LeCun init)": np.sqrt(1.0 / fan_in),
                    "used the Glorot formula; He init is sqrt(2 / fan_in)": np.sqrt(
                        2.0 / (fan_in + fan_out)
                    ),
                }
            )
        else:
            mistakes.update(
                {
                    "used fan_in only: Glorot init averages the fans, "
                    "Var(W) = 2 / (fan_in + fan_out)": np.sqrt(2.0 / fan_in),
                    "used fan_out only: Glorot init averages the fans, "
                    "Var(W) = 2 / (fan_in + fan_out)": np.sqrt(2.0 / fan_out),
                    "this is the bound a of the uniform distribution U(-a, a), "
                    "sqrt(6 / (fan_in + fan_out)); the std is sqrt(2 / (fan_in + fan_out))": (
                        np.sqrt(6.0 / (fan_in + fan_out))
                    ),
                    "forgot the 2 in the numerator: Var(W) = 2 / (fan_in + fan_out)": np.sqrt(
                        1.0 / (fan_in + fan_out)
                    ),
                    "used the He formula; Glorot init is sqrt(2 / (fan_in + fan_out))": np.sqrt(
                        2.0 / fan_in
                    ),
                }
            )
        assert_close(
            got,
            expected,
            name=f"init_std({fan_in}, {fan_out}, {kind!r})",
            rtol=1e-9,
            atol=0.0,
            context=f"for kind={kind!r}, fan_in={fan_in}, fan_out={fan_out}",
            mistakes=mistakes,
        )


@exercise(
    "07.clip_by_global_norm",
    title="Gradient clipping by global norm",
    points=2,
    answer="clip_by_global_norm",
    hints=(
        "Treat all gradient arrays as one long vector: its length is the global norm. Only if "
        "that norm is larger than max_norm, shrink every array by the same factor.",
        "total = sqrt(sum over arrays of (g ** 2).sum()); the factor is max_norm / total when "
        "total > max_norm and 1 otherwise. Never scale up.",
        "total = np.sqrt(sum((g ** 2).sum() for g in grads)); "
        "scale = min(1.0, max_norm / total); return [g * scale for g in grads].",
    ),
)
def _clip_check(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    # Over the threshold first, then under it, then one array only.
    for regime in ("over", "over", "under", "under", "single"):
        count = 1 if regime == "single" else int(rng.integers(2, 5))
        shapes = [tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))]
        shapes += [(int(rng.integers(2, 6)),) for _ in range(count - 1)]
        grads = [rng.normal(size=s) * rng.uniform(0.3, 3.0) for s in shapes]
        norms = np.array([np.sqrt((g**2).sum()) for g in grads])
        total = float(np.sqrt((norms**2).sum()))
        if regime == "under":
            # Between the largest single norm and the global norm would be ambiguous; pick a
            # threshold the global norm stays under, but whose square the norm exceeds.
            if total < 2.0:
                factor = rng.uniform(2.0, 4.0) / total
                grads = [g * factor for g in grads]
                norms, total = norms * factor, total * factor
            max_norm = total * rng.uniform(1.1, 1.5)
        else:
            max_norm = float(min(norms.min(), total) * rng.uniform(0.2, 0.6))
        got = call_under_rules(
            answer, [g.copy() for g in grads], max_norm, forbid=_CLIP_REFERENCES, rule=_CLIP_RULE
        )
        if got is None:
            raise Wrong("clip_by_global_norm returned None: is a `return` missing?")
        if not isinstance(got, (list, tuple)):
            raise Wrong(
                "clip_by_global_norm should return a list of arrays (one per gradient), got "
                f"{type(got).__name__}"
            )
        if len(got) != len(grads):
            raise Wrong(
                f"clip_by_global_norm returned {len(got)} arrays for {len(grads)} gradients: "
                "return every gradient, clipped, in the same order"
            )
        scale = min(1.0, max_norm / total)
        squared_total = total**2
        mistaken = {
            "clipped each tensor separately: the norm is global, over all arrays together, "
            "and every array is scaled by the same factor": [
                g * min(1.0, max_norm / n) for g, n in zip(grads, norms)
            ],
            "scaled when under the threshold: gradients with a global norm below max_norm "
            "stay unchanged (clipping never scales up)": [g * (max_norm / total) for g in grads],
            "forgot the square root in the norm: the global norm is sqrt(sum of squares)": [
                g * min(1.0, max_norm / squared_total) for g in grads
            ],
        }
        where = f"for {len(grads)} arrays with global norm {total:.4g} and max_norm={max_norm:.4g}"
        for i, (new, g) in enumerate(zip(got, grads)):
            assert_close(
                new,
                g * scale,
                name=f"clipped gradient [{i}]",
                rtol=1e-5,
                atol=1e-10,
                context=where,
                mistakes={name: value[i] for name, value in mistaken.items()},
            )


def _norm_backward(dy, x, gamma, eps, axis, ddof=0, mean_term=True, var_term=True, per_n=True):
    """Backward of y = gamma * (x - mean) / sqrt(var + eps) + beta, normalized along ``axis``.

    Correct with the defaults; the keywords reproduce typical mistakes (``per_n=False``:
    the 1/N of d(mean)/dx and d(var)/dx forgotten, sums where means belong).
    """
    n = x.shape[axis]
    mu = x.mean(axis=axis, keepdims=True)
    centred = x - mu
    var = (centred**2).sum(axis=axis, keepdims=True) / (n - ddof)
    std = np.sqrt(var + eps)
    x_hat = centred / std
    dx_hat = dy * gamma
    dx = dx_hat / std
    scale = 1.0 if per_n else float(n - ddof)
    if mean_term:
        dx = dx - scale * dx_hat.mean(axis=axis, keepdims=True) / std
    if var_term:
        dx = dx - scale * centred * (dx_hat * centred).sum(axis=axis, keepdims=True) / (
            std**3 * (n - ddof)
        )
    return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)


def _norm_exercise(answer, rng, *, axis):
    for trial in range(4):
        if axis == 0:
            n, d = int(rng.integers(3, 9)), int(rng.integers(2, 6))
        else:
            n, d = int(rng.integers(2, 6)), int(rng.integers(3, 9))
        if trial == 3:
            d = n  # square: summing over the wrong axis keeps the shape
        x = rng.normal(loc=rng.normal(size=d), scale=rng.uniform(0.5, 2.0, size=d), size=(n, d))
        gamma = rng.uniform(0.5, 1.5, size=d) * rng.choice([-1, 1], size=d)
        dy = rng.normal(size=(n, d))
        eps = 1e-5
        got = call_under_rules(
            answer,
            dy.copy(),
            x.copy(),
            gamma.copy(),
            eps,
            autograd=True,
            forbid=_NORM_REFERENCES,
            rule=_NORM_RULE,
        )
        parts = unpack(got, ("dx", "dgamma", "dbeta"))
        dgamma, dbeta = as_array(parts["dgamma"], "dgamma"), as_array(parts["dbeta"], "dbeta")
        dx = parts["dx"]  # as given: assert_close fits its message to a float32 answer
        ref_dx, ref_dgamma, ref_dbeta = _norm_backward(dy, x, gamma, eps, axis)
        where = f"for x of shape ({n}, {d})"
        other = 1 - axis
        if axis == 0:
            wrong_axis = (
                "normalized over the features (axis 1): batch norm normalizes each feature "
                "over the batch (axis 0)"
            )
        else:
            wrong_axis = (
                "normalized over the batch (axis 0): layer norm normalizes each row over "
                "its features (axis 1)"
            )

        # dbeta and dgamma first: they are the simplest and their mistakes are shapes.
        for name, value, expected in (("dbeta", dbeta, ref_dbeta), ("dgamma", dgamma, ref_dgamma)):
            if value.shape == (n, d) and n != d:
                raise Wrong(
                    f"{name} has shape {(n, d)} {where}: {name} not summed over the batch; "
                    f"gamma and beta have one entry per feature, shape ({d},)"
                )
            if value.shape == (n,) and n != d:
                raise Wrong(
                    f"{name} has shape ({n},) {where}: summed over the features; gamma and "
                    f"beta have one entry per feature, so sum over the batch (axis 0), "
                    f"shape ({d},)"
                )
            mistakes = {
                f"{name} averaged over the batch instead of summed": expected / n,
            }
            if name == "dbeta":
                mistakes[f"{name} summed over the features instead of the batch"] = dy.sum(axis=1)
                mistakes[f"{name} multiplied by gamma: beta is added after the scaling"] = (
                    expected * gamma
                )
            else:
                centred = x - x.mean(axis=axis, keepdims=True)
                x_hat = centred / np.sqrt((centred**2).mean(axis=axis, keepdims=True) + eps)
                mistakes[f"{name} summed over the features instead of the batch"] = (
                    dy * x_hat
                ).sum(axis=1)
                mistakes[f"{name} used x instead of the normalized x_hat"] = (dy * x).sum(axis=0)
                mistakes[wrong_axis] = _norm_backward(dy, x, gamma, eps, other)[1]
                biased = _norm_backward(dy, x, gamma, eps, axis, ddof=1)[1]
                mistakes[
                    "used the unbiased variance (divided by n - 1); normalization uses the "
                    "biased one, the mean of the squared deviations"
                ] = biased
            assert_close(
                value,
                expected,
                name=name,
                rtol=1e-6,
                atol=1e-9,
                context=where,
                mistakes=mistakes,
            )

        mistakes = {
            "forgot the mean term: the mean depends on every input, which adds "
            "-mean(dx_hat) / std": _norm_backward(dy, x, gamma, eps, axis, mean_term=False)[0],
            "forgot the variance term: the variance depends on every input, which adds "
            "-x_hat * mean(dx_hat * x_hat) / std": _norm_backward(
                dy, x, gamma, eps, axis, var_term=False
            )[0],
            "treated the mean and the variance as constants: only dx_hat / std is left": (
                _norm_backward(dy, x, gamma, eps, axis, mean_term=False, var_term=False)[0]
            ),
            "used the unbiased variance (divided by n - 1); normalization uses the biased "
            "one, the mean of the squared deviations": _norm_backward(
                dy, x, gamma, eps, axis, ddof=1
            )[0],
            "forgot the 1/N: the mean and the variance average over the N values normalized "
            "together, so their terms are means, not sums (d mean / dx = 1/N)": _norm_backward(
                dy, x, gamma, eps, axis, per_n=False
            )[0],
            "forgot to multiply by gamma: dx_hat = dy * gamma": _norm_backward(
                dy, x, np.ones_like(gamma), eps, axis
            )[0],
            wrong_axis: _norm_backward(dy, x, gamma, eps, other)[0],
        }
        assert_close(dx, ref_dx, name="dx", rtol=1e-6, atol=1e-9, context=where, mistakes=mistakes)


@exercise(
    "07.batchnorm_backward",
    title="The backward pass of batch normalization",
    points=3,
    answer="batchnorm_backward",
    hints=(
        "Recompute the forward pass: mu and var per feature over the batch (axis 0, biased "
        "variance), x_hat = (x - mu) / sqrt(var + eps). Then dbeta = dy summed over the batch, "
        "dgamma = (dy * x_hat) summed over the batch, and dx_hat = dy * gamma.",
        "x reaches x_hat three ways: directly, through mu and through var. Adding the three "
        "paths gives dx = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / std, the means "
        "over the batch (axis 0, keepdims=True).",
        "std = np.sqrt(x.var(axis=0) + eps); x_hat = (x - x.mean(axis=0)) / std; g = dy * gamma; "
        "dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) / std; "
        "return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0).",
    ),
)
def _batchnorm_backward(answer, rng):
    _norm_exercise(answer, rng, axis=0)


@exercise(
    "07.layernorm_backward",
    title="The backward pass of layer normalization",
    points=3,
    answer="layernorm_backward",
    hints=(
        "Layer norm is batch norm turned sideways: each ROW (one example) is normalized over "
        "its features, axis 1. gamma and beta still have one entry per feature, so their "
        "gradients are still summed over the batch, axis 0.",
        "The formula for dx is the batch-norm one with every mean taken over axis 1 "
        "(keepdims=True): dx = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / std.",
        "std = np.sqrt(x.var(axis=1, keepdims=True) + eps); x_hat = (x - x.mean(axis=1, "
        "keepdims=True)) / std; g = dy * gamma; dx = (g - g.mean(axis=1, keepdims=True) - x_hat * "
        "(g * x_hat).mean(axis=1, keepdims=True)) / std; "
        "return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0).",
    ),
)
def _layernorm_backward(answer, rng):
    _norm_exercise(answer, rng, axis=1)
