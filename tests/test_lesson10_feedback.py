"""Lesson 10: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

import pytest
import torch

from backprop_course import exercises
from backprop_course import transformer as tr
from backprop_course.checking import NOT_ATTEMPTED
from backprop_course.exercises import lesson10
from backprop_course.rules import BY_HAND, OWN_CODE
from feedback import assert_passes, assert_wrong_with_reason

C_GELU, A_GELU = math.sqrt(2 / math.pi), 0.044715


def softmax_backward(y, dy):
    return y * (dy - (y * dy).sum(dim=-1, keepdim=True))


def layer_norm_backward(x, gamma, dy, eps):
    mean = x.mean(dim=-1, keepdim=True)
    rstd = 1 / torch.sqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    lead = tuple(range(x.dim() - 1))
    return dx, (dy * xhat).sum(dim=lead), dy.sum(dim=lead)


def gelu_backward(x, dy):
    t = torch.tanh(C_GELU * (x + A_GELU * x**3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * C_GELU * (1 + 3 * A_GELU * x**2))


def attention_backward(q, k, v, dout):
    T, d = q.shape[-2:]
    s = q @ k.transpose(-2, -1) / math.sqrt(d)
    p = torch.softmax(s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf), -1)
    dp = dout @ v.transpose(-2, -1)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return (
        ds @ k / math.sqrt(d),
        ds.transpose(-2, -1) @ q / math.sqrt(d),
        p.transpose(-2, -1) @ dout,
    )


# The mistakes below are written out here: the checker's own module is refused as an answer.
def layer_norm_grads(
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


def block_grads(x, p, dout, n_head, *, skip_mlp=True, skip_attn=True, attn_gets_total=True):
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


def block_backward(x, params, dout, n_head):
    return block_grads(x, params, dout, n_head)


def activation_bytes(B, T, C, n_head, itemsize):
    return itemsize * (16 * B * T * C + B * n_head * T * T + 2 * B * T)


CORRECT_ANSWERS = {
    "10.softmax_backward": softmax_backward,
    "10.layer_norm_backward": layer_norm_backward,
    "10.gelu_backward": gelu_backward,
    "10.attention_backward": attention_backward,
    "10.block_backward": block_backward,
    "10.activation_bytes": activation_bytes,
}


def _ln_variant(**switches):
    return lambda x, gamma, dy, eps: layer_norm_grads(x, gamma, dy, eps, **switches)


def _attn_variant(scale=True, mask=True, row_sum=True, dk_t=True, dv_t=True):
    """attention_backward with one of the classic slips (written here, not with the package)."""

    def answer(q, k, v, dout):
        T, d = q.shape[-2:]
        s = 1 / math.sqrt(d) if scale else 1.0
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask:
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
        p = torch.softmax(scores, -1)
        dv = (p.transpose(-2, -1) if dv_t else p) @ dout
        dp = dout @ v.transpose(-2, -1)
        ds = p * (dp - (p * dp).sum(-1, keepdim=True)) if row_sum else p * dp
        dk = (ds.transpose(-2, -1) if dk_t else ds) @ q * s
        return ds @ k * s, dk, dv

    return answer


def _attn_edit(index, change):
    def answer(q, k, v, dout):
        grads = list(attention_backward(q, k, v, dout))
        grads[index] = change(grads[index])
        return tuple(grads)

    return answer


def _block_variant(**switches):
    return lambda x, p, dout, n_head: block_grads(x, p, dout, n_head, **switches)


def _block_edit(name, change):
    def answer(x, p, dout, n_head):
        grads = block_backward(x, p, dout, n_head)
        grads[name] = change(grads[name])
        return grads

    return answer


def _ln_edit(index, change):
    def answer(x, gamma, dy, eps):
        grads = list(layer_norm_backward(x, gamma, dy, eps))
        grads[index] = change(grads[index], x, dy)
        return tuple(grads)

    return answer


WRONG_ANSWERS = [
    ("10.softmax_backward", lambda y, dy: y * dy, "forgot to subtract the row sum"),
    ("10.softmax_backward", lambda y, dy: y * (1 - y) * dy, "diagonal of the Jacobian only"),
    (
        "10.softmax_backward",
        lambda y, dy: y * (dy - dy.sum(-1, keepdim=True)),
        "weighted by y",
    ),
    ("10.softmax_backward", lambda y, dy: y * (dy - (y * dy).sum()), "per row"),
    ("10.softmax_backward", lambda y, dy: -softmax_backward(y, dy), "sign error"),
    ("10.softmax_backward", lambda y, dy: (y * dy).sum(-1), "has shape"),
    (
        "10.layer_norm_backward",
        _ln_variant(mean_term=False, var_term=False),
        "treated the mean and rstd as constants",
    ),
    ("10.layer_norm_backward", _ln_variant(mean_term=False), "term through the mean"),
    ("10.layer_norm_backward", _ln_variant(var_term=False), "term through the variance"),
    ("10.layer_norm_backward", _ln_variant(gain=False), "forgot gamma in dx"),
    ("10.layer_norm_backward", _ln_variant(ddof=1), "unbiased variance"),
    ("10.layer_norm_backward", _ln_variant(per_c=False), "forgot the 1/C"),
    (
        "10.layer_norm_backward",
        _ln_edit(1, lambda g, x, dy: dy.sum(dim=(0, 1))),
        "dgamma is wrong: max abs error",
    ),
    (
        "10.layer_norm_backward",
        _ln_edit(1, lambda g, x, dy: dy.sum(dim=(0, 1))),
        "dx and dbeta are right. It matches a common mistake: dgamma is sum(dy)",
    ),
    ("10.layer_norm_backward", _ln_edit(1, lambda g, x, dy: (dy * x).sum(dim=(0, 1))), "used x"),
    ("10.layer_norm_backward", _ln_edit(2, lambda g, x, dy: dy), "sum over every axis"),
    ("10.layer_norm_backward", _ln_edit(2, lambda g, x, dy: 2 * g), "dbeta is wrong"),
    (
        "10.layer_norm_backward",
        lambda x, g, dy, eps: layer_norm_backward(x, g, dy, eps)[0],
        "should give the tuple (dx, dgamma, dbeta)",
    ),
    ("10.gelu_backward", lambda x, dy: dy * 0.5 * (1 + torch.tanh(x)), "expected"),
    (
        "10.gelu_backward",
        lambda x, dy: dy * 0.5 * (1 + torch.tanh(C_GELU * (x + A_GELU * x**3))),
        "product rule",
    ),
    (
        "10.gelu_backward",
        lambda x, dy: (
            dy * (0.5 * (1 + torch.erf(x / math.sqrt(2))))
            + dy * x * torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
        ),
        "exact (erf) GELU",
    ),
    ("10.gelu_backward", lambda x, dy: gelu_backward(x, torch.ones_like(dy)), "upstream gradient"),
    ("10.attention_backward", _attn_variant(scale=False), "forgot the 1/sqrt(d) scale"),
    ("10.attention_backward", _attn_variant(mask=False), "gradient leaks to future positions"),
    ("10.attention_backward", _attn_variant(row_sum=False), "without subtracting the row sum"),
    ("10.attention_backward", _attn_variant(dk_t=False), "dK transposed"),
    ("10.attention_backward", _attn_variant(dk_t=False), "dK is wrong: max abs error"),
    ("10.attention_backward", _attn_variant(dk_t=False), "dQ and dV are right"),
    ("10.attention_backward", _attn_variant(dv_t=False), "P^T dout"),
    (
        "10.attention_backward",
        _attn_edit(0, lambda g: 2 * g),
        "dQ is off by a constant factor of 2",
    ),
    ("10.attention_backward", _attn_edit(2, lambda g: g + 0.5), "dV is wrong"),
    ("10.attention_backward", lambda q, k, v, dout: (q, k), "3 items (dQ, dK, dV), got 2 items"),
    (
        "10.attention_backward",
        lambda q, k, v, dout: attention_backward(q, k, v, dout)[0][..., :-1],
        "should give the tuple (dQ, dK, dV)",
    ),
    (
        "10.block_backward",
        _block_variant(skip_mlp=False, skip_attn=False),
        "forgot both residual (skip) paths",
    ),
    ("10.block_backward", _block_variant(skip_mlp=False), "skip path around the MLP"),
    ("10.block_backward", _block_variant(skip_attn=False), "skip path around attention"),
    ("10.block_backward", _block_variant(attn_gets_total=False), "got only dout"),
    ("10.block_backward", _block_edit("ln_2.bias", lambda g: 0 * g), "ln_2.bias is wrong"),
    ("10.block_backward", _block_edit("ln_2.bias", lambda g: 0 * g), "the other"),
    (
        "10.block_backward",
        _block_edit("mlp.c_fc.weight", lambda g: g.T),
        "mlp.c_fc.weight has shape",
    ),
    ("10.block_backward", lambda x, p, dout, n_head: dout, "should return a dict"),
    ("10.block_backward", lambda x, p, dout, n_head: {"x": dout}, "without the key(s)"),
    (
        "10.activation_bytes",
        lambda B, T, C, H, n: n * (16 * B * T * C + 2 * B * T),
        "forgot the attention matrix",
    ),
    (
        "10.activation_bytes",
        lambda B, T, C, H, n: n * (16 * B * T * C + B * T * T + 2 * B * T),
        "each head has its own",
    ),
    (
        "10.activation_bytes",
        lambda B, T, C, H, n: n * (10 * B * T * C + B * H * T * T + 2 * B * T),
        "4C wide",
    ),
    (
        "10.activation_bytes",
        lambda B, T, C, H, n: 16 * B * T * C + B * H * T * T + 2 * B * T,
        "multiply by itemsize",
    ),
    (
        "10.activation_bytes",
        lambda B, T, C, H, n: n * (16 * B * T * C + B * H * T * T),
        "forgot rstd",
    ),
]


def test_the_ids_here_are_the_registered_ones():
    """This test file covers exactly lesson 10's exercises."""
    assert set(CORRECT_ANSWERS) == {e.id for e in exercises.for_lesson("10")}
    assert {item[0] for item in WRONG_ANSWERS} == set(CORRECT_ANSWERS)


@pytest.mark.parametrize("exercise_id", sorted(CORRECT_ANSWERS))
def test_correct_answer_passes(exercise_id):
    """A right answer passes on 20 draws of the hidden inputs."""
    assert_passes(exercise_id, CORRECT_ANSWERS[exercise_id])


@pytest.mark.parametrize(
    ("exercise_id", "answer", "reason"),
    WRONG_ANSWERS,
    ids=[f"{item[0]}-{i}" for i, item in enumerate(WRONG_ANSWERS)],
)
def test_wrong_answer_gets_a_reason(exercise_id, answer, reason):
    """A typical wrong answer fails with its specific reason."""
    assert_wrong_with_reason(exercise_id, answer, reason)


@pytest.mark.parametrize("exercise_id", sorted(CORRECT_ANSWERS))
def test_the_stub_is_not_attempted(exercise_id):
    """The released stub, and a function returning it, count as not attempted."""
    from backprop_course import evaluate

    assert evaluate(exercise_id, ..., seed=0).status == NOT_ATTEMPTED
    assert evaluate(exercise_id, lambda *args: ..., seed=0).status == NOT_ATTEMPTED


def test_references_agree_with_the_package():
    """The hand-written answers above agree with backprop_course.transformer."""
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    for a, b in zip(attention_backward(q, k, v, dout), tr.attention_backward(q, k, v, dout)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ shortcuts


def _autograd(f):
    """The shortcut of the lesson-10 exercises: let autograd differentiate a forward function."""

    def answer(*tensors_and_more):
        tensors = [t for t in tensors_and_more if isinstance(t, torch.Tensor)]
        with torch.enable_grad():
            leaves = [t.detach().clone().requires_grad_(True) for t in tensors[:-1]]
            return torch.autograd.grad(f(*leaves), leaves, tensors[-1])

    return answer


def _autograd_backward_softmax(y, dy):
    with torch.enable_grad():
        x = torch.log(y).detach().requires_grad_(True)
        torch.softmax(x, -1).backward(dy)
        return x.grad


def _vjp_gelu(x, dy):
    return torch.func.vjp(tr.gelu, x)[1](dy)[0]


def _finite_difference_gelu(x, dy, h=1e-5):
    return dy * (tr.gelu(x + h) - tr.gelu(x - h)) / (2 * h)


def _finite_difference_softmax(y, dy, h=1e-6):
    x = torch.log(y)
    dx = torch.zeros_like(x)
    for j in range(x.shape[-1]):
        e = torch.zeros_like(x)
        e[..., j] = h
        dx[..., j] = ((torch.softmax(x + e, -1) - torch.softmax(x - e, -1)) * dy).sum(-1) / (2 * h)
    return dx


def _numerical_gradient_gelu(x, dy):
    from backprop_course.gradcheck import numerical_gradient

    return numerical_gradient(lambda t: float((tr.gelu(torch.as_tensor(t)) * dy).sum()), x)


def _block_autograd(x, params, dout, n_head):
    names = list(params)
    with torch.enable_grad():
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, *params.values())]
        out = tr.transformer_block(leaves[0], dict(zip(names, leaves[1:])), n_head)
        return dict(zip(["x", *names], torch.autograd.grad(out, leaves, dout)))


SHORTCUTS = [
    ("10.softmax_backward", _autograd(lambda x: torch.softmax(x, -1)), BY_HAND),
    ("10.softmax_backward", _autograd_backward_softmax, BY_HAND),
    ("10.softmax_backward", tr.softmax_backward, "backprop_course.transformer.softmax_backward"),
    ("10.softmax_backward", _finite_difference_softmax, "a finite difference"),
    (
        "10.layer_norm_backward",
        lambda x, g, dy, eps: _autograd(
            lambda x, g, b: torch.nn.functional.layer_norm(x, x.shape[-1:], g, b, eps)
        )(x, g, torch.zeros_like(g), dy),
        BY_HAND,
    ),
    ("10.layer_norm_backward", tr.layer_norm_backward, "layer_norm_backward"),
    (
        "10.layer_norm_backward",
        lambda x, g, dy, eps: tr._layer_norm_backward_cached(dy, *tr._layer_norm_stats(x, eps), g),
        "_layer_norm_backward_cached",
    ),
    (
        "10.layer_norm_backward",
        lambda x, g, dy, eps: tr._ln_backward(dy, tr._ln_forward(x, g, 0 * g, eps)[1], g),
        "backprop_course.transformer._ln_backward",
    ),
    ("10.gelu_backward", _autograd(tr.gelu), BY_HAND),
    ("10.gelu_backward", _vjp_gelu, BY_HAND),
    ("10.gelu_backward", tr.gelu_backward, "backprop_course.transformer.gelu_backward"),
    ("10.gelu_backward", lambda x, dy: dy * tr.gelu_derivative(x), "gelu_derivative"),
    ("10.gelu_backward", _finite_difference_gelu, "a finite difference"),
    ("10.gelu_backward", _numerical_gradient_gelu, "backprop_course.gradcheck"),
    ("10.attention_backward", _autograd(tr.causal_attention), BY_HAND),
    (
        "10.attention_backward",
        _autograd(
            lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True
            )
        ),
        BY_HAND,
    ),
    ("10.attention_backward", tr.attention_backward, "attention_backward"),
    ("10.block_backward", _block_autograd, BY_HAND),
    (
        "10.block_backward",
        lambda x, p, d, n: lesson10._block_grads(x, p, d, n),
        "backprop_course.exercises.lesson10",
    ),
    (
        "10.block_backward",
        lambda x, p, d, n: (tr.transformer_block_manual(x, p, n), block_grads(x, p, d, n))[1],
        "backprop_course.transformer.TransformerBlockFunction",
    ),
    ("10.activation_bytes", tr.block_activation_bytes, OWN_CODE),
]

LOW_PRECISION = [
    ("10.gelu_backward", lambda x, dy: gelu_backward(x.float(), dy.float()), "float32"),
    (
        "10.layer_norm_backward",
        lambda x, g, dy, eps: layer_norm_backward(x.float(), g.float(), dy.float(), eps),
        "float32",
    ),
    (
        "10.attention_backward",
        lambda q, k, v, d: attention_backward(q.float(), k.float(), v.float(), d.float()),
        "float32",
    ),
]


@pytest.mark.parametrize(
    ("exercise_id", "answer", "reason"),
    SHORTCUTS + LOW_PRECISION,
    ids=[f"{item[0]}-{i}" for i, item in enumerate(SHORTCUTS + LOW_PRECISION)],
)
def test_shortcuts_are_refused_naming_the_rule(exercise_id, answer, reason):
    """Autograd, the package's backward passes, finite differences and float32 never pass."""
    assert_wrong_with_reason(exercise_id, answer, reason, seeds=3)


def test_every_exercise_has_a_shortcut_case():
    """Each lesson-10 exercise appears in the table of refused shortcuts."""
    assert {item[0] for item in SHORTCUTS} == set(CORRECT_ANSWERS)


def _softmax_by_jacobian(y, dy):
    J = torch.diag_embed(y) - y.unsqueeze(-1) * y.unsqueeze(-2)
    return (dy.unsqueeze(-2) @ J).squeeze(-2)


def _layer_norm_other(x, gamma, dy, eps):
    C = x.shape[-1]
    rstd = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
    xhat = (x - x.mean(-1, keepdim=True)) * rstd
    g = dy * gamma
    dx = rstd / C * (C * g - g.sum(-1, keepdim=True) - xhat * (g * xhat).sum(-1, keepdim=True))
    flat = dy.reshape(-1, C)
    return dx, (flat * xhat.reshape(-1, C)).sum(0), flat.sum(0)


def _gelu_sech(x, dy):
    u = C_GELU * (x + A_GELU * x**3)
    sech2 = 1 / torch.cosh(u) ** 2
    return dy * (0.5 + 0.5 * torch.tanh(u) + 0.5 * x * sech2 * C_GELU * (1 + 3 * A_GELU * x**2))


def _attention_other(q, k, v, dout):
    d = q.shape[-1]
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(d)
    T = scores.shape[-1]
    p = torch.softmax(scores + torch.triu(torch.full((T, T), -1e30, dtype=q.dtype), 1), -1)
    dp = torch.einsum("...id,...jd->...ij", dout, v)
    ds = p * dp - p * (p * dp).sum(-1, keepdim=True)
    return (
        ds @ k / math.sqrt(d),
        ds.transpose(-1, -2) @ q / math.sqrt(d),
        p.transpose(-1, -2) @ dout,
    )


def _block_with_own_pieces(x, params, dout, n_head):
    """The block's backward from this file's own per-operation answers (no package backward)."""
    p, C = params, x.shape[-1]
    h1 = tr.layer_norm(x, p["ln_1.weight"], p["ln_1.bias"])
    qkv = tr.linear(h1, p["attn.c_attn.weight"], p["attn.c_attn.bias"])
    q, k, v = (tr.split_heads(t, n_head) for t in qkv.split(C, dim=-1))
    att = tr.merge_heads(tr.causal_attention(q, k, v))
    x1 = x + tr.linear(att, p["attn.c_proj.weight"], p["attn.c_proj.bias"])
    h2 = tr.layer_norm(x1, p["ln_2.weight"], p["ln_2.bias"])
    a = tr.linear(h2, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])

    def linear_back(inp, w, dy):
        return dy @ w, dy.flatten(0, -2).T @ inp.flatten(0, -2), dy.flatten(0, -2).sum(0)

    grads = {}
    dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = linear_back(
        tr.gelu(a), p["mlp.c_proj.weight"], dout
    )
    dh2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = linear_back(
        h2, p["mlp.c_fc.weight"], _gelu_sech(a, dg)
    )
    dx1, grads["ln_2.weight"], grads["ln_2.bias"] = layer_norm_backward(
        x1, p["ln_2.weight"], dh2, 1e-5
    )
    dx1 = dx1 + dout
    datt, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = linear_back(
        att, p["attn.c_proj.weight"], dx1
    )
    dq, dk, dv = _attention_other(q, k, v, tr.split_heads(datt, n_head))
    dqkv = torch.cat([tr.merge_heads(t) for t in (dq, dk, dv)], dim=-1)
    dh1, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = linear_back(
        h1, p["attn.c_attn.weight"], dqkv
    )
    dx, grads["ln_1.weight"], grads["ln_1.bias"] = layer_norm_backward(
        x, p["ln_1.weight"], dh1, 1e-5
    )
    grads["x"] = dx1 + dx
    return grads


ALSO_CORRECT = [
    ("10.softmax_backward", _softmax_by_jacobian),
    ("10.layer_norm_backward", _layer_norm_other),
    ("10.gelu_backward", _gelu_sech),
    ("10.attention_backward", _attention_other),
    ("10.block_backward", _block_with_own_pieces),
    ("10.activation_bytes", lambda B, T, C, H, n: n * B * T * (2 + 16 * C + H * T)),
]


@pytest.mark.parametrize(
    ("exercise_id", "answer"), ALSO_CORRECT, ids=[f"{a[0]}-{i}" for i, a in enumerate(ALSO_CORRECT)]
)
def test_other_correct_forms_pass(exercise_id, answer):
    """Correct answers written differently from the solution pass too (exact to rounding)."""
    assert_passes(exercise_id, answer, seeds=5)
