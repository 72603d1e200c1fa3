"""Lesson 10: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

import pytest
import torch

from backprop_course import exercises
from backprop_course import transformer as tr
from backprop_course.checking import NOT_ATTEMPTED
from backprop_course.exercises import lesson10
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


def block_backward(x, params, dout, n_head):
    return lesson10._block_grads(x, params, dout, n_head)


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
    return lambda x, gamma, dy, eps: lesson10._layer_norm_grads(x, gamma, dy, eps, **switches)


def _attn_variant(**switches):
    def answer(q, k, v, dout):
        g = lesson10._attention_variant(q, k, v, dout, **switches)
        return g["dQ"], g["dK"], g["dV"]

    return answer


def _attn_edit(index, change):
    def answer(q, k, v, dout):
        grads = list(attention_backward(q, k, v, dout))
        grads[index] = change(grads[index])
        return tuple(grads)

    return answer


def _block_variant(**switches):
    return lambda x, p, dout, n_head: lesson10._block_grads(x, p, dout, n_head, **switches)


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
        "should return a tuple (dx, dgamma, dbeta)",
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
    ("10.attention_backward", lambda q, k, v, dout: (q, k), "3 tensors, got 2"),
    (
        "10.attention_backward",
        lambda q, k, v, dout: attention_backward(q, k, v, dout)[0][..., :-1],
        "should return a tuple (dQ, dK, dV)",
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
