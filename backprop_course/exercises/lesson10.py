"""Lesson 10, backprop through a transformer block: softmax, layer norm, GELU, attention.

Every answer is a plain function on float64 torch tensors: forward values and an
upstream gradient in, gradients out. The checks draw fresh shapes and values,
compute the expected gradients with autograd through the forward references in
:mod:`backprop_course.transformer`, and, when several gradients come back, say
which one is wrong, by how much and where (e.g. ``dK is wrong: max abs error
0.31 (relative 0.97) at [0, 1, 3, 2]; dQ and dV are right``).

Only tensors, numbers and dicts of them cross between the checks and the
learner's functions, so the grader can run the functions in a sandbox.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np
import torch

from backprop_course import transformer as tr
from backprop_course.compare import (
    NotAttempted,
    Wrong,
    as_array,
    assert_close,
    check_gradients,
    is_stub,
    unpack,
)
from backprop_course.exercises import exercise
from backprop_course.exercises._torch import one_thread, random_tensor, require_exact
from backprop_course.rules import BY_HAND, call_under_rules

RTOL, ATOL = 1e-6, 1e-9
# A formula derived by hand agrees with autograd to about 1e-15 of the gradient's largest
# entry (measured: at most 3e-15 over these checks); a finite difference, at best, to about
# 1e-11. After the usual comparison (which names mistakes), every answer must also agree to
# EXACT of its largest entry: the exercises ask for the exact gradient.
EXACT = 1e-12

_TR = "backprop_course.transformer."
# The package's hand-written backward passes: each is the answer to one of these exercises
# (or to all of them at once); numerical gradients and numpy layers are no derivation either.
OP_BACKWARDS = tuple(
    _TR + name
    for name in (
        "softmax_backward",
        "layer_norm_backward",
        "_layer_norm_backward_cached",  # what layer_norm_backward and _ln_backward call
        "_ln_backward",
        "gelu_backward",
        "gelu_derivative",
        "linear_backward",
        "attention_backward",
        "SoftmaxFunction",
        "LayerNormFunction",
        "GELUFunction",
        "CausalAttentionFunction",
    )
)
BLOCK_BACKWARDS = tuple(
    _TR + name
    for name in (
        "MultiHeadAttentionFunction",
        "MLPFunction",
        "MLPBlockFunction",
        "TransformerBlockFunction",
        "transformer_block_manual",
        "_attn_backward",
        "_mlp_backward",
        "_block_backward",
    )
)
NOT_A_DERIVATION = (
    "backprop_course.gradcheck",
    "backprop_course.nn",
    "backprop_course.exercises.lesson10",  # the checks' own references
)
FORBIDDEN = OP_BACKWARDS + BLOCK_BACKWARDS + NOT_A_DERIVATION
# 10.block_backward tells the learner to use the per-operation references, so only the
# package's whole-block (and whole-branch) backward passes are refused there.
FORBIDDEN_IN_BLOCK = BLOCK_BACKWARDS + NOT_A_DERIVATION


def _call_by_hand(answer, *args, forbid=FORBIDDEN):
    """The learner's backward, with autograd switched off and tripwired (rules.BY_HAND)."""
    return call_under_rules(answer, *args, autograd=True, forbid=forbid, rule=BY_HAND)


_LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def _refuse_low_precision(values: Mapping, expected: Mapping) -> None:
    """A float32 (or half) gradient that is right at its own precision: name the dtype."""
    for name, value in values.items():
        dtype = getattr(value, "dtype", None)
        if dtype not in _LOW_PRECISION:
            continue
        got, want = as_array(value, name), as_array(expected[name], name)
        if got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-5):
            raise Wrong(
                f"{name} is a {str(dtype).removeprefix('torch.')} tensor, right only to "
                f"{str(dtype).removeprefix('torch.')} precision: the inputs are float64; "
                "keep every computation in float64 (no .float(), no float32 tensors)"
            )


# ------------------------------------------------------------------ helpers


def _grad(f, inputs: Sequence[torch.Tensor], dy: torch.Tensor) -> list[torch.Tensor]:
    """Autograd's gradients of ``f(*inputs)`` against the upstream gradient ``dy``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    return [g.detach() for g in torch.autograd.grad(f(*leaves), leaves, dy)]


# ------------------------------------------------------------------ 10.softmax_backward


@exercise(
    "10.softmax_backward",
    title="Softmax backward: a Jacobian-vector product",
    points=2,
    answer="softmax_backward",
    hints=(
        "Every output of a softmax depends on every input of its row, so dx_j collects a "
        "term from every dy_i, not only from dy_j.",
        "The Jacobian is dy_i/dx_j = y_i ([i = j] - y_j). Multiply it by dy without building "
        "it: the off-diagonal part becomes one sum per row.",
        "dx = y * (dy - (y * dy).sum(dim=-1, keepdim=True)).",
    ),
)
@one_thread
def _softmax_backward(answer, rng):
    for shape in ((3, 5), (int(rng.integers(2, 4)), int(rng.integers(2, 5)), 7)):
        x = random_tensor(rng, *shape, scale=2.0)
        dy = random_tensor(rng, *shape)
        y = tr.softmax(x)
        raw = _call_by_hand(answer, y.clone(), dy.clone())
        _refuse_low_precision({"dx": raw}, {"dx": tr.softmax_backward(y, dy)})
        got = raw
        row_sum = (y * dy).sum(dim=-1, keepdim=True)
        assert_close(
            got,
            tr.softmax_backward(y, dy),
            name="dx",
            rtol=RTOL,
            atol=ATOL,
            context=f"for y and dy of shape {tuple(shape)}",
            mistakes={
                "forgot to subtract the row sum: y * dy keeps only the diagonal of the Jacobian": (
                    y * dy
                ),
                "y * (1 - y) * dy is the diagonal of the Jacobian only; each output depends on "
                "every input of its row": y * (1 - y) * dy,
                "subtracted the sum of dy; the sum must be weighted by y: sum(y * dy)": y
                * (dy - dy.sum(dim=-1, keepdim=True)),
                "summed over the wrong axis: the sum runs along the softmax axis (the last)": y
                * (dy - (y * dy).sum(dim=0, keepdim=True)),
                "summed over the whole tensor; the sum is per row (keepdim on the last axis)": y
                * (dy - (y * dy).sum()),
                "forgot to multiply by y outside the bracket": dy - row_sum,
            },
        )
        require_exact(
            {"dx": got},
            {"dx": tr.softmax_backward(y, dy)},
            f"for y and dy of shape {tuple(shape)}",
            exact=EXACT,
        )


# ------------------------------------------------------------------ 10.layer_norm_backward


def _layer_norm_grads(
    x, gamma, dy, eps, *, mean_term=True, var_term=True, ddof=0, gain=True, per_c=True
):
    """Layer-norm backward, with switches that reproduce common mistakes."""
    C = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    xc = x - mean
    var = (xc * xc).sum(dim=-1, keepdim=True) / (C - ddof)
    rstd = 1.0 / torch.sqrt(var + eps)
    xhat = xc * rstd
    g = dy * gamma if gain else dy
    dx = g
    average = (
        (lambda t: t.mean(dim=-1, keepdim=True))
        if per_c
        else (lambda t: t.sum(dim=-1, keepdim=True))
    )
    if mean_term:
        dx = dx - average(g)
    if var_term:
        dx = dx - xhat * average(g * xhat)
    lead = tuple(range(x.dim() - 1))
    return rstd * dx, (dy * xhat).sum(dim=lead), dy.sum(dim=lead)


def _layer_norm_variant(x, gamma, dy, eps, **switches):
    return dict(zip(("dx", "dgamma", "dbeta"), _layer_norm_grads(x, gamma, dy, eps, **switches)))


@exercise(
    "10.layer_norm_backward",
    title="Layer-norm backward: dx, dgamma, dbeta",
    points=3,
    answer="layer_norm_backward",
    hints=(
        "Recompute the forward quantities first: mean, rstd = 1/sqrt(var + eps) (biased "
        "variance, divide by C) and xhat = (x - mean) * rstd. dgamma and dbeta sum over every "
        "axis except the last.",
        "Let g = dy * gamma (the gradient with respect to xhat). The mean and the variance "
        "depend on every x of the row, so dx has three terms: g, minus its row mean, minus "
        "xhat times the row mean of g * xhat.",
        "dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)); "
        "dgamma = (dy * xhat).sum(dim=(0, 1)) and dbeta = dy.sum(dim=(0, 1)) for (B, T, C) input.",
    ),
)
@one_thread
def _layer_norm_backward(answer, rng):
    for shape in ((1, 1, 4), (int(rng.integers(2, 4)), int(rng.integers(2, 5)), 6)):
        C = shape[-1]
        x = random_tensor(rng, *shape, scale=1.5) + float(rng.normal())
        gamma = 1.0 + random_tensor(rng, C, scale=0.5)
        beta = random_tensor(rng, C, scale=0.5)
        dy = random_tensor(rng, *shape)
        eps = float(rng.choice([1e-5, 1e-3]))
        result = _call_by_hand(answer, x.clone(), gamma.clone(), dy.clone(), eps)
        got = unpack(result, ("dx", "dgamma", "dbeta"))
        dx, dgamma, dbeta = _grad(partial(tr.layer_norm, eps=eps), (x, gamma, beta), dy)
        want = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
        _refuse_low_precision(got, want)

        variant = partial(_layer_norm_variant, x, gamma, dy, eps)

        lead = tuple(range(x.dim() - 1))
        mean = x.mean(dim=-1, keepdim=True)
        rstd = 1.0 / torch.sqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
        check_gradients(
            got,
            {"dx": dx, "dgamma": dgamma, "dbeta": dbeta},
            context=f"for x of shape {tuple(shape)}, eps={eps:g}",
            shape_advice={
                "dgamma": "sum over every axis but the last (gamma has one entry per feature)",
                "dbeta": "sum over every axis but the last (beta has one entry per feature)",
            },
            mistakes={
                "treated the mean and rstd as constants: dx = dy * gamma * rstd misses the "
                "gradient through the mean and the variance": partial(
                    variant, mean_term=False, var_term=False
                ),
                "forgot the term through the mean (subtract the row mean of g = dy * gamma)": (
                    partial(variant, mean_term=False)
                ),
                "forgot the term through the variance (subtract xhat * mean(g * xhat))": partial(
                    variant, var_term=False
                ),
                "forgot gamma in dx: the gradient reaching xhat is dy * gamma": partial(
                    variant, gain=False
                ),
                "used the unbiased variance (divide by C - 1); layer norm divides by C": partial(
                    variant, ddof=1
                ),
                "forgot the 1/C: the two correction terms are row MEANS, mean(g) and "
                "xhat * mean(g * xhat), not sums": partial(variant, per_c=False),
                "dgamma is sum(dy): it needs the factor xhat, since y = gamma * xhat + beta": {
                    "dgamma": dy.sum(dim=lead)
                },
                "dgamma used x instead of the normalised xhat": {"dgamma": (dy * x).sum(dim=lead)},
                "dgamma and dbeta are swapped": {"dgamma": dbeta, "dbeta": dgamma},
                "forgot rstd in dx": {"dx": dx / rstd},
            },
        )
        require_exact(got, want, f"for x of shape {tuple(shape)}", exact=EXACT)


# ------------------------------------------------------------------ 10.gelu_backward

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


@exercise(
    "10.gelu_backward",
    title="GELU backward (tanh approximation)",
    points=2,
    answer="gelu_backward",
    hints=(
        "gelu(x) = 0.5 x (1 + t) with t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3): a "
        "product of x and a function of x, so use the product rule.",
        "d tanh(u)/dx = (1 - t^2) du/dx, and du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).",
        "dx = dy * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 0.134145 x^2)).",
    ),
)
@one_thread
def _gelu_backward(answer, rng):
    for shape in ((7,), (int(rng.integers(2, 4)), int(rng.integers(3, 6)), 5)):
        x = random_tensor(rng, *shape, scale=2.0)
        dy = random_tensor(rng, *shape)
        got = _call_by_hand(answer, x.clone(), dy.clone())
        (expected,) = _grad(tr.gelu, (x,), dy)
        _refuse_low_precision({"dx": got}, {"dx": expected})
        t = torch.tanh(_C * (x + _A * x**3))
        du = _C * (1 + 3 * _A * x**2)
        phi = torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
        assert_close(
            got,
            expected,
            name="dx",
            rtol=RTOL,
            atol=ATOL,
            context=f"for x of shape {tuple(shape)}",
            mistakes={
                "forgot the product rule: 0.5 * (1 + t) is only the derivative of the factor x": dy
                * 0.5
                * (1 + t),
                "forgot the inner derivative du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)": dy
                * (0.5 * (1 + t) + 0.5 * x * (1 - t**2)),
                "dropped the 3 from d(x^3)/dx = 3x^2": dy
                * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _C * (1 + _A * x**2)),
                "used 1 - tanh instead of 1 - tanh^2 for the derivative of tanh": dy
                * (0.5 * (1 + t) + 0.5 * x * (1 - t) * du),
                "the derivative of the exact (erf) GELU, but the forward pass is the tanh "
                "approximation": dy * (cdf + x * phi),
                "forgot to multiply by the upstream gradient dy": 0.5 * (1 + t)
                + 0.5 * x * (1 - t**2) * du,
            },
        )
        require_exact({"dx": got}, {"dx": expected}, f"for x of shape {shape}", exact=EXACT)


# ------------------------------------------------------------------ 10.attention_backward


def _attention_variant(q, k, v, dout, *, scale=True, mask=True, row_sum=True, dk_t=True, dv_t=True):
    """Causal attention backward with switches that reproduce common mistakes."""
    T, d = q.shape[-2], q.shape[-1]
    s = 1.0 / math.sqrt(d) if scale else 1.0
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask:
        scores = scores.masked_fill(~tr.causal_mask(T), float("-inf"))
    p = tr.softmax(scores)
    dv = (p.transpose(-2, -1) if dv_t else p) @ dout
    dp = dout @ v.transpose(-2, -1)
    ds = tr.softmax_backward(p, dp) if row_sum else p * dp
    dq = ds @ k * s
    dk = (ds.transpose(-2, -1) if dk_t else ds) @ q * s
    return {"dQ": dq, "dK": dk, "dV": dv}


@exercise(
    "10.attention_backward",
    title="Causal attention backward: dQ, dK, dV",
    points=4,
    answer="attention_backward",
    hints=(
        "Recompute the forward pass: S = q k^T / sqrt(d), masked with -inf above the "
        "diagonal, P = softmax(S), out = P v. Then walk back: out -> (P, v) -> S -> (q, k).",
        "dV = P^T dout and dP = dout v^T. The softmax backward gives dS = P * (dP - rowsum(P * "
        "dP)); masked entries have P = 0, so they get no gradient.",
        "dQ = dS k / sqrt(d) and dK = dS^T q / sqrt(d); all products act on the last two axes "
        "(use .transpose(-2, -1)).",
    ),
)
@one_thread
def _attention_backward(answer, rng):
    for B, H, T, d in ((1, 1, 3, 2), (2, int(rng.integers(2, 4)), int(rng.integers(4, 7)), 4)):
        q, k, v = (random_tensor(rng, B, H, T, d) for _ in range(3))
        dout = random_tensor(rng, B, H, T, d)
        result = _call_by_hand(answer, q.clone(), k.clone(), v.clone(), dout.clone())
        got = unpack(result, ("dQ", "dK", "dV"))
        dq, dk, dv = _grad(tr.causal_attention, (q, k, v), dout)
        want = {"dQ": dq, "dK": dk, "dV": dv}
        _refuse_low_precision(got, want)

        variant = partial(_attention_variant, q, k, v, dout)

        check_gradients(
            got,
            {"dQ": dq, "dK": dk, "dV": dv},
            context=f"for q, k, v of shape {(B, H, T, d)}",
            mistakes={
                "forgot the 1/sqrt(d) scale in dQ and dK": partial(variant, scale=False),
                "mask not applied: the gradient leaks to future positions": partial(
                    variant, mask=False
                ),
                "softmax backward without subtracting the row sum: dS = P * dP": partial(
                    variant, row_sum=False
                ),
                "dK transposed: dK = dS^T q, not dS q": partial(variant, dk_t=False),
                "dV = P dout; it is P^T dout": partial(variant, dv_t=False),
                "dQ and dK are swapped": {"dQ": dk, "dK": dq},
            },
        )
        require_exact(got, want, f"for q, k, v of shape {(B, H, T, d)}", exact=EXACT)


# ------------------------------------------------------------------ 10.block_backward

BLOCK_GRADIENTS = ("x", *tr.BLOCK_PARAMETER_NAMES)


def _block_grads(x, p, dout, n_head, *, skip_mlp=True, skip_attn=True, attn_gets_total=True):
    """The pre-norm block backward, with switches that reproduce common mistakes."""
    eps = 1e-5
    h1 = tr.layer_norm(x, p["ln_1.weight"], p["ln_1.bias"], eps)
    qkv = tr.linear(h1, p["attn.c_attn.weight"], p["attn.c_attn.bias"])
    q, k, v = (tr.split_heads(t, n_head) for t in qkv.split(x.shape[-1], dim=-1))
    att = tr.merge_heads(tr.causal_attention(q, k, v))
    x1 = x + tr.linear(att, p["attn.c_proj.weight"], p["attn.c_proj.bias"])
    h2 = tr.layer_norm(x1, p["ln_2.weight"], p["ln_2.bias"], eps)
    a = tr.linear(h2, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
    g = tr.gelu(a)
    grads = {}
    dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = tr.linear_backward(
        g, p["mlp.c_proj.weight"], dout
    )
    da = tr.gelu_backward(a, dg)
    dh2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = tr.linear_backward(
        h2, p["mlp.c_fc.weight"], da
    )
    dx1_branch, grads["ln_2.weight"], grads["ln_2.bias"] = tr.layer_norm_backward(
        x1, p["ln_2.weight"], dh2, eps
    )
    dx1 = dout + dx1_branch if skip_mlp else dx1_branch
    upstream = dx1 if attn_gets_total else dout
    datt, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = tr.linear_backward(
        att, p["attn.c_proj.weight"], upstream
    )
    dq, dk, dv = tr.attention_backward(q, k, v, tr.split_heads(datt, n_head))
    dqkv = torch.cat([tr.merge_heads(dq), tr.merge_heads(dk), tr.merge_heads(dv)], dim=-1)
    dh1, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = tr.linear_backward(
        h1, p["attn.c_attn.weight"], dqkv
    )
    dx_branch, grads["ln_1.weight"], grads["ln_1.bias"] = tr.layer_norm_backward(
        x, p["ln_1.weight"], dh1, eps
    )
    grads["x"] = dx1 + dx_branch if skip_attn else dx_branch
    return grads


def _block_from_list(x, *params, n_head):
    return tr.transformer_block(x, dict(zip(tr.BLOCK_PARAMETER_NAMES, params)), n_head)


@exercise(
    "10.block_backward",
    title="Backward through a whole pre-norm block",
    points=4,
    answer="block_backward",
    hints=(
        "Go through the forward pass in reverse: MLP half first (c_proj, GELU, c_fc, ln_2), "
        "then the attention half (c_proj, attention, c_attn, ln_1). Each step turns the "
        "gradient of its output into the gradient of its input.",
        "At a residual x1 = x + f(x), the gradient of x1 reaches x along two paths: straight "
        "through the skip, and back through f. Add them: dx = dx1 + (what came through f).",
        "The attention half must start from dx1 = dout + (gradient through the MLP branch), not "
        "from dout. dq, dk, dv go back through merge_heads and are concatenated along the last "
        "axis into d(qkv).",
    ),
)
@one_thread
def _block_backward(answer, rng):
    for B, T, C, n_head in ((1, 3, 4, 1), (2, int(rng.integers(3, 6)), 8, 2)):
        seed = int(rng.integers(2**31))
        params = tr.init_block_params(C, generator=seed, scale=0.3)
        x = random_tensor(rng, B, T, C)
        dout = random_tensor(rng, B, T, C)
        result = _call_by_hand(
            answer,
            x.clone(),
            {n: t.clone() for n, t in params.items()},
            dout.clone(),
            n_head,
            forbid=FORBIDDEN_IN_BLOCK,
        )
        if is_stub(result):
            raise NotAttempted
        if not isinstance(result, Mapping):
            raise Wrong(
                f"block_backward should return a dict of gradients with the keys "
                f"{list(BLOCK_GRADIENTS)}, got {type(result).__name__}"
            )
        got = unpack(result, BLOCK_GRADIENTS)
        inputs = (x, *(params[n] for n in tr.BLOCK_PARAMETER_NAMES))
        autograd = _grad(partial(_block_from_list, n_head=n_head), inputs, dout)
        expected = dict(zip(BLOCK_GRADIENTS, autograd))
        _refuse_low_precision(got, expected)
        variant = partial(_block_grads, x, params, dout, n_head)

        check_gradients(
            got,
            {n: expected[n] for n in BLOCK_GRADIENTS},
            context=f"for x of shape {(B, T, C)} with {n_head} head(s)",
            mistakes={
                "forgot both residual (skip) paths: add the gradient that skips each branch": (
                    partial(variant, skip_mlp=False, skip_attn=False)
                ),
                "forgot the skip path around the MLP: dx1 = dout + (gradient through the MLP)": (
                    partial(variant, skip_mlp=False)
                ),
                "forgot the skip path around attention: dx = dx1 + (gradient through "
                "attention)": partial(variant, skip_attn=False),
                "the attention half got only dout; it needs dx1 = dout + the MLP branch's "
                "gradient": partial(variant, attn_gets_total=False),
            },
        )
        require_exact(
            got, expected, f"for x of shape {(B, T, C)} with {n_head} head(s)", exact=EXACT
        )


# ------------------------------------------------------------------ 10.activation_bytes


@exercise(
    "10.activation_bytes",
    title="Where the memory goes: activations a block keeps",
    points=2,
    answer="activation_bytes",
    hints=(
        "Go through the block's forward pass and list what each backward needs: the input of "
        "every Linear, the input of GELU, xhat and rstd of each layer norm, and q, k, v and the "
        "attention matrix P.",
        "Sizes: every (B, T, C) tensor is B*T*C numbers; the MLP's hidden layer is 4C wide; "
        "rstd is one number per position (B*T); P has one (T, T) matrix per sequence and head.",
        "16*B*T*C + B*n_head*T*T + 2*B*T numbers, times itemsize bytes.",
    ),
)
@one_thread
def _activation_bytes(answer, rng):
    cases = [(1, 1024, 768, 12, 2)]
    for _ in range(4):
        n_head = int(rng.choice([1, 2, 4, 8]))
        C = n_head * int(rng.choice([8, 16, 32, 64]))
        cases.append(
            (
                int(rng.integers(1, 17)),
                int(rng.integers(2, 513)),
                C,
                n_head,
                int(rng.choice([2, 4])),
            )
        )
    for B, T, C, H, itemsize in cases:
        got = call_under_rules(
            answer, B, T, C, H, itemsize, forbid=(_TR + "block_activation_bytes",)
        )
        n = itemsize
        btc, att, rstd = B * T * C, B * H * T * T, 2 * B * T
        assert_close(
            got,
            tr.block_activation_bytes(B, T, C, H, itemsize),
            name="activation_bytes",
            rtol=1e-12,
            atol=0,
            context=f"for B={B}, T={T}, C={C}, n_head={H}, itemsize={itemsize}",
            mistakes={
                "forgot the attention matrix P (B, n_head, T, T), the biggest item for long "
                "sequences": n * (16 * btc + rstd),
                "counted one attention matrix for all heads; each head has its own (T, T) matrix": n
                * (16 * btc + B * T * T + rstd),
                "counted the MLP's hidden layer as C wide; it is 4C wide (before and after GELU)": n
                * (10 * btc + att + rstd),
                "forgot rstd of the two layer norms (one number per position each)": n
                * (16 * btc + att),
                "also counted the scores before the softmax; its backward needs only the "
                "output P": n * (16 * btc + 2 * att + rstd),
                "forgot q, k and v": n * (13 * btc + att + rstd),
                "counted numbers, not bytes: multiply by itemsize": 16 * btc + att + rstd,
            },
        )
