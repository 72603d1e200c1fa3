"""backprop_course.transformer: forward references, and every hand-written backward.

Each Function is compared with autograd run through the plain-torch forward
reference in float64 (1e-6 relative), and checked with gradcheck on small inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from backprop_course import transformer as tr
from backprop_course.device import torch_threads

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one torch thread avoids thread hand-offs that dominate on a busy CPU."""
    with torch_threads(1):
        yield


def randn(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DTYPE).requires_grad_(grad)


def assert_grads_match(manual, reference, inputs, seed=1):
    """Outputs and input gradients of ``manual`` equal those of ``reference`` (autograd)."""
    out_m, out_r = manual(*inputs), reference(*inputs)
    torch.testing.assert_close(out_m, out_r, rtol=1e-6, atol=1e-9)
    dy = randn(*out_r.shape, seed=seed, grad=False)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    got = torch.autograd.grad(out_m, wrt, dy)
    want = torch.autograd.grad(out_r, wrt, dy)
    for g_m, g_r in zip(got, want, strict=True):
        torch.testing.assert_close(g_m, g_r, rtol=1e-6, atol=1e-9)


# --- forward references agree with torch's own -----------------------------------------


def test_forward_references_match_torch():
    """softmax, layer_norm, gelu and causal_attention equal torch's own functions."""
    x, w, b = randn(2, 3, 8), randn(8, seed=1), randn(8, seed=2)
    torch.testing.assert_close(tr.softmax(x), x.softmax(-1))
    torch.testing.assert_close(tr.softmax(x, dim=1), x.softmax(1))
    torch.testing.assert_close(tr.layer_norm(x, w, b), F.layer_norm(x, (8,), w, b))
    torch.testing.assert_close(tr.gelu(x), F.gelu(x, approximate="tanh"))
    q, k, v = randn(2, 2, 5, 4, seed=3), randn(2, 2, 5, 4, seed=4), randn(2, 2, 5, 4, seed=5)
    torch.testing.assert_close(
        tr.causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )


def test_softmax_is_stable_and_masked_entries_get_zero():
    """Huge logits stay finite and a -inf logit gets probability exactly 0."""
    x = torch.tensor([[1000.0, 1001.0, float("-inf")]], dtype=DTYPE)
    y = tr.softmax(x)
    assert torch.isfinite(y).all() and y[0, 2] == 0
    torch.testing.assert_close(y.sum(-1), torch.ones(1, dtype=DTYPE))


def test_causal_mask_allows_the_past_only():
    """The mask is True on and below the diagonal only."""
    m = tr.causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert m[2, 0] and m[2, 2] and not m[2, 3] and not m[0, 1]


def test_split_and_merge_heads_are_inverse():
    """split_heads gives head h channels h*d..(h+1)*d; merge_heads undoes it."""
    x = randn(2, 5, 12, grad=False)
    h = tr.split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    torch.testing.assert_close(h[:, 1], x[..., 4:8])
    torch.testing.assert_close(tr.merge_heads(h), x)
    with pytest.raises(ValueError, match="5 heads"):
        tr.split_heads(x, 5)


def test_attention_does_not_look_ahead():
    """Changing future values leaves earlier outputs unchanged."""
    q, k, v = randn(1, 1, 6, 4), randn(1, 1, 6, 4, seed=1), randn(1, 1, 6, 4, seed=2)
    out = tr.causal_attention(q, k, v)
    v2 = v.detach().clone()
    v2[..., 4:, :] += 10.0
    out2 = tr.causal_attention(q, k, v2)
    torch.testing.assert_close(out[..., :4, :], out2[..., :4, :])


def test_transformer_block_matches_nn_modules():
    """The functional block equals one built from torch.nn layers with the same weights."""
    C, H = 8, 2
    p = tr.init_block_params(C, generator=3)
    x = randn(2, 5, C, grad=False)
    ln1, ln2 = torch.nn.LayerNorm(C, dtype=DTYPE), torch.nn.LayerNorm(C, dtype=DTYPE)
    attn = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=DTYPE)
    with torch.no_grad():
        ln1.weight.copy_(p["ln_1.weight"])
        ln1.bias.copy_(p["ln_1.bias"])
        ln2.weight.copy_(p["ln_2.weight"])
        ln2.bias.copy_(p["ln_2.bias"])
        attn.in_proj_weight.copy_(p["attn.c_attn.weight"])
        attn.in_proj_bias.copy_(p["attn.c_attn.bias"])
        attn.out_proj.weight.copy_(p["attn.c_proj.weight"])
        attn.out_proj.bias.copy_(p["attn.c_proj.bias"])
        h = ln1(x)
        mask = ~tr.causal_mask(5)  # nn.MultiheadAttention: True means "may not attend"
        x1 = x + attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        h2 = ln2(x1)
        m = F.linear(
            F.gelu(F.linear(h2, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"]), approximate="tanh"),
            p["mlp.c_proj.weight"],
            p["mlp.c_proj.bias"],
        )
        torch.testing.assert_close(tr.transformer_block(x, p, H), x1 + m)


# --- plain backward helpers vs autograd --------------------------------------------------


def test_softmax_backward_matches_autograd():
    """softmax_backward equals autograd, along the last axis and another."""
    x, dy = randn(3, 4, 7), randn(3, 4, 7, seed=1, grad=False)
    y = tr.softmax(x)
    (want,) = torch.autograd.grad(y, x, dy)
    torch.testing.assert_close(tr.softmax_backward(y.detach(), dy), want)
    y1 = tr.softmax(x, dim=1)
    (want1,) = torch.autograd.grad(y1, x, dy)
    torch.testing.assert_close(tr.softmax_backward(y1.detach(), dy, dim=1), want1)


def test_layer_norm_backward_matches_autograd():
    """layer_norm_backward's dx, dweight, dbias equal autograd's."""
    x, w, b = randn(2, 3, 6), randn(6, seed=1), randn(6, seed=2)
    dy = randn(2, 3, 6, seed=3, grad=False)
    want = torch.autograd.grad(tr.layer_norm(x, w, b), (x, w, b), dy)
    got = tr.layer_norm_backward(x.detach(), w.detach(), dy)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)


def test_gelu_backward_matches_autograd():
    """gelu_backward equals autograd over [-6, 6]."""
    x = torch.linspace(-6, 6, 101, dtype=DTYPE, requires_grad=True)
    dy = randn(101, seed=1, grad=False)
    (want,) = torch.autograd.grad(tr.gelu(x), x, dy)
    torch.testing.assert_close(tr.gelu_backward(x.detach(), dy), want)


def test_linear_backward_matches_autograd():
    """linear_backward equals autograd with two batch axes."""
    x, w, b = randn(2, 3, 5), randn(4, 5, seed=1), randn(4, seed=2)
    dy = randn(2, 3, 4, seed=3, grad=False)
    want = torch.autograd.grad(tr.linear(x, w, b), (x, w, b), dy)
    for g, e in zip(tr.linear_backward(x.detach(), w.detach(), dy), want, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_backward_matches_autograd(heads):
    """attention_backward equals autograd; the last key gets no gradient from earlier outputs."""
    q, k, v = (randn(2, heads, 6, 4, seed=s) for s in range(3))
    dout = randn(2, heads, 6, 4, seed=5, grad=False)
    want = torch.autograd.grad(tr.causal_attention(q, k, v), (q, k, v), dout)
    got = tr.attention_backward(q.detach(), k.detach(), v.detach(), dout)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)
    # the last key and value are seen by the last query only: the future gets no gradient
    dout_first = dout.clone()
    dout_first[..., -1, :] = 0
    _, dk, dv = tr.attention_backward(q.detach(), k.detach(), v.detach(), dout_first)
    assert dk[..., -1, :].abs().max() == 0 and dv[..., -1, :].abs().max() == 0


# --- torch.autograd.Function classes: vs autograd and gradcheck --------------------------

C, H = 6, 2


def _mha_inputs():
    p = tr.init_block_params(C, generator=7, requires_grad=True)
    x = randn(2, 4, C, seed=8)
    names = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias")
    return (x, *(p[n] for n in names))


def _mlp_inputs():
    p = tr.init_block_params(C, generator=9, requires_grad=True)
    x = randn(2, 3, C, seed=10)
    return x, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"]


def _mlp_block_inputs():
    p = tr.init_block_params(C, generator=11, requires_grad=True)
    return (randn(2, 3, C, seed=12), p["ln_2.weight"], p["ln_2.bias"], *_mlp_inputs()[1:])


CASES = {
    "softmax": (tr.SoftmaxFunction.apply, tr.softmax, lambda: (randn(2, 3, 5),)),
    "layer_norm": (
        tr.LayerNormFunction.apply,
        tr.layer_norm,
        lambda: (randn(2, 3, 5), randn(5, seed=1), randn(5, seed=2)),
    ),
    "gelu": (tr.GELUFunction.apply, tr.gelu, lambda: (randn(3, 7),)),
    "causal_attention": (
        tr.CausalAttentionFunction.apply,
        tr.causal_attention,
        lambda: tuple(randn(2, 2, 4, 3, seed=s) for s in range(3)),
    ),
    "single_head_attention": (
        tr.CausalAttentionFunction.apply,
        tr.causal_attention,
        lambda: tuple(randn(1, 1, 5, 4, seed=s) for s in range(3)),
    ),
    "multi_head_attention": (
        lambda *a: tr.MultiHeadAttentionFunction.apply(*a, H),
        lambda *a: tr.self_attention(*a, H),
        _mha_inputs,
    ),
    "mlp": (tr.MLPFunction.apply, tr.mlp, _mlp_inputs),
    "mlp_block": (
        tr.MLPBlockFunction.apply,
        lambda x, w, b, *m: x + tr.mlp(tr.layer_norm(x, w, b), *m),
        _mlp_block_inputs,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_function_matches_autograd(case):
    """Each Function's output and input gradients equal autograd through its forward reference."""
    manual, reference, inputs = CASES[case]
    assert_grads_match(manual, reference, inputs())


@pytest.mark.parametrize("case", CASES)
def test_function_passes_gradcheck(case):
    """Each Function's backward agrees with central differences (gradcheck, float64)."""
    manual, _, inputs = CASES[case]
    assert gradcheck(manual, inputs(), eps=1e-6, atol=1e-6, rtol=1e-5)


def _as_dict(params):
    return dict(zip(tr.BLOCK_PARAMETER_NAMES, params))


def test_block_matches_autograd_on_random_inputs():
    """The whole block's 13 gradients equal autograd's on random blocks."""
    for seed in range(3):
        params = tr.init_block_params(8, generator=seed, requires_grad=True)
        x = randn(2, 5, 8, seed=100 + seed)
        assert_grads_match(
            lambda x, *ps: tr.transformer_block_manual(x, _as_dict(ps), 2),
            lambda x, *ps: tr.transformer_block(x, _as_dict(ps), 2),
            (x, *params.values()),
            seed=seed,
        )


def test_block_passes_gradcheck():
    """The whole block's backward agrees with central differences."""
    params = tr.init_block_params(4, generator=1, requires_grad=True)
    x = randn(1, 3, 4, seed=2)
    assert gradcheck(
        lambda x, *ps: tr.TransformerBlockFunction.apply(x, 2, 1e-5, *ps),
        (x, *params.values()),
        eps=1e-6,
        atol=1e-6,
        rtol=1e-5,
    )


def test_block_works_in_float32():
    """The block Function runs forward and backward in float32 too."""
    params = {k: v.float() for k, v in tr.init_block_params(8).items()}
    x = torch.randn(2, 5, 8, requires_grad=True)
    y = tr.transformer_block_manual(x, params, 2)
    y.sum().backward()
    assert y.dtype == torch.float32 and x.grad.dtype == torch.float32


# --- where the memory goes ---------------------------------------------------------------


def test_block_saves_what_the_formula_counts():
    """The block saves exactly the bytes block_activation_bytes counts."""
    B, T, n_embd, heads = 2, 5, 8, 2
    params = tr.init_block_params(n_embd, requires_grad=True)
    x = randn(B, T, n_embd)
    saved = tr.saved_activations(tr.transformer_block_manual, x, params, heads)
    activations = [s for s in saved if s.kind == "activation"]
    assert {s.owner for s in saved} == {"TransformerBlockFunction"}
    assert sum(s.nbytes for s in activations) == tr.block_activation_bytes(B, T, n_embd, heads, 8)
    probs = next(s for s in activations if s.name == "attn.probs")
    assert probs.shape == (B, heads, T, T) and probs.label == "attn.probs (2, 2, 5, 5)"
    assert {s.name for s in saved if s.kind == "parameter"} <= set(tr.BLOCK_PARAMETER_NAMES)


def test_record_saved_sees_each_function_and_stops_afterwards():
    """record_saved logs each Function's saved tensors, only inside the with block."""
    x = randn(2, 3, 4)
    with tr.record_saved() as saved:
        tr.SoftmaxFunction.apply(tr.GELUFunction.apply(x))
    assert [(s.owner, s.name) for s in saved] == [("GELUFunction", "x"), ("SoftmaxFunction", "y")]
    tr.GELUFunction.apply(x)
    assert len(saved) == 2 and not tr._RECORDERS


def test_autograd_saved_tensors_counts_activations_and_inputs():
    """autograd_saved_tensors sees inputs and activations; autograd keeps more than the block."""
    x = randn(4, 8)
    w = randn(3, 8, seed=1)
    saved = tr.autograd_saved_tensors(lambda x, w: tr.gelu(tr.linear(x, w)), x, w)
    kinds = {s.kind for s in saved}
    assert kinds == {"input", "activation"}
    assert all(s.nbytes > 0 for s in saved)
    # autograd keeps more than the hand-written block for the same computation
    params = tr.init_block_params(8, requires_grad=True)
    xb = randn(2, 5, 8)
    auto = sum(
        s.nbytes
        for s in tr.autograd_saved_tensors(tr.transformer_block, xb, params, 2)
        if s.kind == "activation"
    )
    assert auto > tr.block_activation_bytes(2, 5, 8, 2, 8)


def test_block_activation_bytes_formula():
    """16 B T C + B H T^2 + 2 B T numbers, times the item size."""
    assert tr.block_activation_bytes(1, 1, 1, 1, 1) == 16 + 1 + 2
    assert tr.block_activation_bytes(2, 10, 4, 2, 4) == 4 * (16 * 80 + 2 * 2 * 100 + 40)
    assert math.isclose(tr.block_activation_bytes(1, 1024, 768, 12, 2) / 2**20, 48.00390625)


def test_block_function_matches_the_gpt_block():
    """Lesson 11's Block, handed to the hand-written Function, gives the same output and grads."""
    gpt_config = pytest.importorskip("backprop_course.gpt.config")
    gpt_model = pytest.importorskip("backprop_course.gpt.model")
    config = gpt_config.GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8)
    torch.manual_seed(0)
    block = gpt_model.Block(config).double()
    params = dict(block.named_parameters())
    assert tuple(params) == tr.BLOCK_PARAMETER_NAMES
    x = randn(2, 5, 8)
    assert_grads_match(
        lambda x, *ps: tr.transformer_block_manual(x, _as_dict(ps), 2),
        lambda x, *ps: block(x),
        (x, *params.values()),
    )
