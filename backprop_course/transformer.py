"""The pieces of a transformer block, with backward passes written by hand (lesson 10).

Two layers live here.

**Forward references** (plain torch, differentiated by autograd): :func:`softmax`,
:func:`layer_norm`, :func:`gelu`, :func:`causal_mask`, :func:`causal_attention`,
:func:`split_heads`, :func:`merge_heads`. Lesson 11's GPT builds on them, and every
hand-written backward below is tested against autograd run through them.

**Hand-written backward passes**: plain functions on tensors that turn the forward
values and the upstream gradient into input gradients (``softmax_backward``,
``layer_norm_backward``, ``gelu_backward``, ``attention_backward``...), and the
``torch.autograd.Function`` classes that wire them into autograd
(``SoftmaxFunction``, ``LayerNormFunction``, ``GELUFunction``,
``CausalAttentionFunction``, ``MultiHeadAttentionFunction``, ``MLPBlockFunction``,
``TransformerBlockFunction``). Each Function records what its backward keeps, so
the lesson can show where the memory goes (:func:`saved_activations`).

Shapes: a batch of sequences is ``(B, T, C)``; attention works per head on
``(B, H, T, d)`` with ``C = H * d``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "BLOCK_PARAMETER_NAMES",
    "CausalAttentionFunction",
    "GELUFunction",
    "LayerNormFunction",
    "MLPBlockFunction",
    "MLPFunction",
    "MultiHeadAttentionFunction",
    "SavedTensor",
    "SoftmaxFunction",
    "TransformerBlockFunction",
    "attention_backward",
    "attention_probs",
    "autograd_saved_tensors",
    "block_activation_bytes",
    "causal_attention",
    "causal_mask",
    "gelu",
    "gelu_backward",
    "gelu_derivative",
    "init_block_params",
    "layer_norm",
    "layer_norm_backward",
    "linear",
    "linear_backward",
    "merge_heads",
    "mlp",
    "record_saved",
    "saved_activations",
    "self_attention",
    "softmax",
    "softmax_backward",
    "split_heads",
    "transformer_block",
    "transformer_block_manual",
]

# sqrt(2 / pi), the constant of GPT-2's tanh approximation of GELU.
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


# ---------------------------------------------------------------------------
# Forward references (autograd differentiates these)
# ---------------------------------------------------------------------------


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Probabilities along ``dim``; subtracts the maximum first so ``exp`` cannot overflow.

    Entries equal to ``-inf`` (masked positions) get probability exactly 0.
    """
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Normalise each vector along the last axis to mean 0, variance 1, then scale and shift.

    Uses the biased variance (divide by ``C``), as ``torch.nn.LayerNorm`` does.
    """
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dim=-1, keepdim=True)
    return centered * torch.rsqrt(var + eps) * weight + bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (GPT-2): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return 0.5 * x * (1.0 + torch.tanh(_GELU_C * (x + _GELU_A * x * x * x)))


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A bool ``(T, T)`` matrix, True where query ``i`` may attend to key ``j`` (``j <= i``)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` on ``(B, H, T, d)`` tensors, written out explicitly.

    The mask puts ``-inf`` on the scores of future keys, so each position mixes
    only the values of itself and the positions before it.
    """
    T, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    scores = scores.masked_fill(~causal_mask(T, device=q.device), float("-inf"))
    return softmax(scores, dim=-1) @ v


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """``(B, T, C)`` -> ``(B, H, T, C/H)``: head ``h`` gets channels ``h*d .. (h+1)*d - 1``."""
    B, T, C = x.shape
    if C % n_head:
        raise ValueError(f"split_heads: {C} channels do not divide into {n_head} heads")
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, d)`` -> ``(B, T, H*d)``, the inverse of :func:`split_heads`."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, H * d)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with ``weight`` of shape ``(out, in)``, as ``torch.nn.Linear``."""
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


# The parameters of one pre-norm block, named as ``torch.nn`` names them in a
# nanoGPT-style ``Block`` (``dict(block.named_parameters())`` fits). Linear
# weights are ``(out, in)``.
BLOCK_PARAMETER_NAMES = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)


def init_block_params(
    n_embd: int,
    *,
    generator: torch.Generator | int | None = 0,
    dtype: torch.dtype = torch.float64,
    scale: float = 0.2,
    requires_grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Random parameters for one block, keyed by :data:`BLOCK_PARAMETER_NAMES`.

    Layer-norm gains start near 1, everything else is normal with standard
    deviation ``scale`` (biases included, so that tests exercise them).
    """
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(0 if generator is None else generator)
    C = n_embd
    shapes = {
        "ln_1.weight": (C,),
        "ln_1.bias": (C,),
        "attn.c_attn.weight": (3 * C, C),
        "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C),
        "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,),
        "ln_2.bias": (C,),
        "mlp.c_fc.weight": (4 * C, C),
        "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (C, 4 * C),
        "mlp.c_proj.bias": (C,),
    }
    params = {}
    for name, shape in shapes.items():
        value = scale * torch.randn(shape, generator=generator, dtype=dtype)
        if name.endswith(".weight") and name.startswith("ln_"):
            value = value + 1.0
        params[name] = value.requires_grad_(requires_grad)
    return params


def self_attention(
    x: torch.Tensor,
    w_attn: torch.Tensor,
    b_attn: torch.Tensor,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor,
    n_head: int,
) -> torch.Tensor:
    """Causal multi-head self-attention on ``(B, T, C)``: project to q, k, v, attend, project."""
    q, k, v = linear(x, w_attn, b_attn).split(x.shape[-1], dim=-1)
    heads = causal_attention(split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head))
    return linear(merge_heads(heads), w_proj, b_proj)


def mlp(
    x: torch.Tensor,
    w_fc: torch.Tensor,
    b_fc: torch.Tensor,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor,
) -> torch.Tensor:
    """Linear -> GELU -> Linear (the hidden layer is usually 4 times wider)."""
    return linear(gelu(linear(x, w_fc, b_fc)), w_proj, b_proj)


def transformer_block(
    x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int, eps: float = 1e-5
) -> torch.Tensor:
    """One pre-norm block: ``x = x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""
    p = params
    h = layer_norm(x, p["ln_1.weight"], p["ln_1.bias"], eps)
    x = x + self_attention(
        h,
        p["attn.c_attn.weight"],
        p["attn.c_attn.bias"],
        p["attn.c_proj.weight"],
        p["attn.c_proj.bias"],
        n_head,
    )
    h = layer_norm(x, p["ln_2.weight"], p["ln_2.bias"], eps)
    return x + mlp(
        h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"]
    )


# ---------------------------------------------------------------------------
# Backward passes by hand: plain functions on tensors
# ---------------------------------------------------------------------------


def softmax_backward(y: torch.Tensor, dy: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Gradient through ``y = softmax(x)``: ``y * (dy - sum(y * dy))`` along ``dim``.

    This is the Jacobian ``diag(y) - y y^T`` applied to ``dy`` without building it.
    """
    return y * (dy - (y * dy).sum(dim=dim, keepdim=True))


def _layer_norm_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    rstd = torch.rsqrt((centered * centered).mean(dim=-1, keepdim=True) + eps)
    return centered * rstd, rstd


def _layer_norm_backward_cached(
    dy: torch.Tensor, xhat: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lead = tuple(range(dy.dim() - 1))
    dweight = (dy * xhat).sum(dim=lead)
    dbias = dy.sum(dim=lead)
    g = dy * weight  # gradient with respect to xhat
    dx = rstd * (g - g.mean(dim=-1, keepdim=True) - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    return dx, dweight, dbias


def layer_norm_backward(
    x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias)`` for ``y = layer_norm(x, weight, bias, eps)`` given ``dy``.

    With ``xhat = (x - mean) * rstd`` and ``g = dy * weight``:
    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` (means over the last
    axis), ``dweight = sum(dy * xhat)`` and ``dbias = sum(dy)`` over every
    axis but the last.
    """
    xhat, rstd = _layer_norm_stats(x, eps)
    return _layer_norm_backward_cached(dy, xhat, rstd, weight)


def gelu_derivative(x: torch.Tensor) -> torch.Tensor:
    """d gelu(x) / dx for the tanh approximation."""
    t = torch.tanh(_GELU_C * (x + _GELU_A * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)


def gelu_backward(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Gradient through ``y = gelu(x)``: ``dy * gelu'(x)``."""
    return dy * gelu_derivative(x)


def linear_backward(
    x: torch.Tensor, weight: torch.Tensor, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias)`` for ``y = x @ weight.T + bias``; x's leading axes are batch."""
    dx = dy @ weight
    dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    return dx, dy2.transpose(0, 1) @ x2, dy2.sum(dim=0)


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The causal attention matrix ``softmax(q k^T / sqrt(d) + mask)``, ``(B, H, T, T)``."""
    T, d = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    scores = scores.masked_fill(~causal_mask(T, device=q.device), float("-inf"))
    return softmax(scores, dim=-1)


def attention_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` for ``out = causal_attention(q, k, v)`` given ``dout``.

    With ``P`` the attention matrix (recomputed unless ``probs`` is given):
    ``dv = P^T dout``, ``dP = dout v^T``, ``dS = P * (dP - rowsum(P * dP))``
    (zero on masked entries, where ``P`` is 0), ``dq = dS k / sqrt(d)`` and
    ``dk = dS^T q / sqrt(d)``.
    """
    if probs is None:
        probs = attention_probs(q, k)
    scale = 1.0 / math.sqrt(q.shape[-1])
    dv = probs.transpose(-2, -1) @ dout
    dscores = softmax_backward(probs, dout @ v.transpose(-2, -1))
    dq = dscores @ k * scale
    dk = dscores.transpose(-2, -1) @ q * scale
    return dq, dk, dv


# ---------------------------------------------------------------------------
# Forward and backward of the block's parts, passing a cache of saved tensors
# ---------------------------------------------------------------------------


def _ln_forward(x, weight, bias, eps):
    xhat, rstd = _layer_norm_stats(x, eps)
    return xhat * weight + bias, {"xhat": xhat, "rstd": rstd}


def _ln_backward(dy, cache, weight):
    return _layer_norm_backward_cached(dy, cache["xhat"], cache["rstd"], weight)


def _attn_forward(x, w_attn, b_attn, w_proj, b_proj, n_head):
    C = x.shape[-1]
    q, k, v = (split_heads(t, n_head) for t in linear(x, w_attn, b_attn).split(C, dim=-1))
    probs = attention_probs(q, k)
    y = merge_heads(probs @ v)
    cache = {"x": x, "q": q, "k": k, "v": v, "probs": probs, "y": y}
    return linear(y, w_proj, b_proj), cache


def _attn_backward(dout, cache, w_attn, w_proj):
    dy, dw_proj, db_proj = linear_backward(cache["y"], w_proj, dout)
    n_head = cache["q"].shape[1]
    dq, dk, dv = attention_backward(
        cache["q"], cache["k"], cache["v"], split_heads(dy, n_head), cache["probs"]
    )
    dqkv = torch.cat([merge_heads(dq), merge_heads(dk), merge_heads(dv)], dim=-1)
    dx, dw_attn, db_attn = linear_backward(cache["x"], w_attn, dqkv)
    return dx, dw_attn, db_attn, dw_proj, db_proj


def _mlp_forward(x, w_fc, b_fc, w_proj, b_proj):
    a = linear(x, w_fc, b_fc)
    g = gelu(a)
    return linear(g, w_proj, b_proj), {"x": x, "a": a, "g": g}


def _mlp_backward(dout, cache, w_fc, w_proj):
    dg, dw_proj, db_proj = linear_backward(cache["g"], w_proj, dout)
    da = gelu_backward(cache["a"], dg)
    dx, dw_fc, db_fc = linear_backward(cache["x"], w_fc, da)
    return dx, dw_fc, db_fc, dw_proj, db_proj


# ---------------------------------------------------------------------------
# What each backward keeps: bookkeeping of ctx.save_for_backward
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedTensor:
    """One tensor kept for the backward pass, as a Function or autograd saved it."""

    owner: str  # which Function (or "autograd") saved it
    name: str  # what it is, e.g. "attn.probs"
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    kind: str  # "activation", "parameter" or "input"

    @property
    def label(self) -> str:
        """``name (shape)``, for plots and tables."""
        return f"{self.name} {tuple(self.shape)}"


_RECORDERS: list[list[SavedTensor]] = []


@contextmanager
def record_saved() -> Iterator[list[SavedTensor]]:
    """Collect what the hand-written Functions save while the block runs.

    ``with record_saved() as saved: y = LayerNormFunction.apply(x, w, b)``
    leaves one :class:`SavedTensor` per saved tensor in ``saved``.
    """
    log: list[SavedTensor] = []
    _RECORDERS.append(log)
    try:
        yield log
    finally:
        _RECORDERS.remove(log)


def _save(ctx, owner: str, activations: dict, parameters: dict | None = None) -> None:
    """``ctx.save_for_backward`` that remembers names and reports to :func:`record_saved`."""
    parameters = parameters or {}
    ctx.saved_names = (*activations, *parameters)
    ctx.save_for_backward(*activations.values(), *parameters.values())
    for log in _RECORDERS:
        for kind, group in (("activation", activations), ("parameter", parameters)):
            for name, t in group.items():
                log.append(
                    SavedTensor(
                        owner, name, tuple(t.shape), t.dtype, t.numel() * t.element_size(), kind
                    )
                )


def _saved(ctx) -> dict[str, torch.Tensor]:
    return dict(zip(ctx.saved_names, ctx.saved_tensors))


def saved_activations(fn, *args, **kwargs) -> list[SavedTensor]:
    """Run ``fn(*args, **kwargs)`` and return what the hand-written Functions in it saved."""
    with record_saved() as saved:
        fn(*args, **kwargs)
    return list(saved)


def autograd_saved_tensors(fn, *args, **kwargs) -> list[SavedTensor]:
    """What autograd keeps for the backward of ``fn(*args, **kwargs)``, one entry per storage.

    Uses ``torch.autograd.graph.saved_tensors_hooks``: each tensor an operation
    saves is seen once; tensors sharing memory (views, the same tensor saved by
    two operations) count once. Tensors that share memory with an argument are
    marked ``kind="input"`` (they exist anyway), the rest ``"activation"``.
    Autograd saves nothing unless some argument requires grad.
    """
    arguments = [*args, *kwargs.values()]
    arguments += [t for a in arguments if isinstance(a, dict) for t in a.values()]
    inputs = {a.untyped_storage().data_ptr() for a in arguments if isinstance(a, torch.Tensor)}
    seen: dict[int, SavedTensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in seen:
            kind = "input" if ptr in inputs else "activation"
            seen[ptr] = SavedTensor(
                "autograd", f"saved #{len(seen)}", tuple(t.shape), t.dtype, storage.nbytes(), kind
            )
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args, **kwargs)
    return list(seen.values())


def block_activation_bytes(B: int, T: int, C: int, n_head: int, itemsize: int = 4) -> int:
    """Bytes of activations that :class:`TransformerBlockFunction` keeps for its backward.

    Per block: ``16 B T C`` (layer-norm outputs and normalised inputs, q, k, v,
    the attention output, the MLP's hidden layer before and after GELU, which
    is 4 C wide), ``B H T^2`` (the attention matrix) and ``2 B T`` (the two
    layer norms' ``rstd``), times the bytes per element.
    """
    return itemsize * (16 * B * T * C + B * n_head * T * T + 2 * B * T)


# ---------------------------------------------------------------------------
# torch.autograd.Function classes with hand-written backward
# ---------------------------------------------------------------------------


class SoftmaxFunction(torch.autograd.Function):
    """Softmax along the last axis; backward keeps only the output ``y``."""

    @staticmethod
    def forward(ctx, x):
        y = softmax(x, dim=-1)
        _save(ctx, "SoftmaxFunction", {"y": y})
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return softmax_backward(_saved(ctx)["y"], dy)


class LayerNormFunction(torch.autograd.Function):
    """Layer norm over the last axis; keeps ``xhat``, ``rstd`` and the gain."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        y, cache = _ln_forward(x, weight, bias, eps)
        _save(ctx, "LayerNormFunction", cache, {"weight": weight})
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        s = _saved(ctx)
        dx, dweight, dbias = _layer_norm_backward_cached(dy, s["xhat"], s["rstd"], s["weight"])
        return dx, dweight, dbias, None


class GELUFunction(torch.autograd.Function):
    """GELU (tanh approximation); keeps its input."""

    @staticmethod
    def forward(ctx, x):
        _save(ctx, "GELUFunction", {"x": x})
        return gelu(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return gelu_backward(_saved(ctx)["x"], dy)


class CausalAttentionFunction(torch.autograd.Function):
    """``softmax(q k^T / sqrt(d) + mask) v`` on ``(B, H, T, d)``; keeps q, k, v and P."""

    @staticmethod
    def forward(ctx, q, k, v):
        probs = attention_probs(q, k)
        _save(ctx, "CausalAttentionFunction", {"q": q, "k": k, "v": v, "probs": probs})
        return probs @ v

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        s = _saved(ctx)
        return attention_backward(s["q"], s["k"], s["v"], dout, s["probs"])


class MultiHeadAttentionFunction(torch.autograd.Function):
    """Causal multi-head self-attention on ``(B, T, C)`` (see :func:`self_attention`).

    ``apply(x, w_attn, b_attn, w_proj, b_proj, n_head)``.
    """

    @staticmethod
    def forward(ctx, x, w_attn, b_attn, w_proj, b_proj, n_head):
        out, cache = _attn_forward(x, w_attn, b_attn, w_proj, b_proj, n_head)
        _save(ctx, "MultiHeadAttentionFunction", cache, {"w_attn": w_attn, "w_proj": w_proj})
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        s = _saved(ctx)
        return (*_attn_backward(dout, s, s["w_attn"], s["w_proj"]), None)


class MLPFunction(torch.autograd.Function):
    """Linear -> GELU -> Linear; ``apply(x, w_fc, b_fc, w_proj, b_proj)``."""

    @staticmethod
    def forward(ctx, x, w_fc, b_fc, w_proj, b_proj):
        out, cache = _mlp_forward(x, w_fc, b_fc, w_proj, b_proj)
        _save(ctx, "MLPFunction", cache, {"w_fc": w_fc, "w_proj": w_proj})
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        s = _saved(ctx)
        return _mlp_backward(dout, s, s["w_fc"], s["w_proj"])


class MLPBlockFunction(torch.autograd.Function):
    """The residual MLP half of a block, ``x + mlp(layer_norm(x))``.

    ``apply(x, ln_weight, ln_bias, w_fc, b_fc, w_proj, b_proj, eps=1e-5)``. The
    residual path sends ``dout`` straight back to ``x``, where it adds to the
    gradient that came through the branch.
    """

    @staticmethod
    def forward(ctx, x, ln_weight, ln_bias, w_fc, b_fc, w_proj, b_proj, eps=1e-5):
        h, ln_cache = _ln_forward(x, ln_weight, ln_bias, eps)
        out, mlp_cache = _mlp_forward(h, w_fc, b_fc, w_proj, b_proj)
        activations = {f"ln.{k}": t for k, t in ln_cache.items()}
        activations |= {f"mlp.{k}": t for k, t in mlp_cache.items()}
        params = {"ln_weight": ln_weight, "w_fc": w_fc, "w_proj": w_proj}
        _save(ctx, "MLPBlockFunction", activations, params)
        return x + out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        s = _saved(ctx)
        mlp_cache = {k: s[f"mlp.{k}"] for k in ("x", "a", "g")}
        dh, dw_fc, db_fc, dw_proj, db_proj = _mlp_backward(dout, mlp_cache, s["w_fc"], s["w_proj"])
        ln_cache = {k: s[f"ln.{k}"] for k in ("xhat", "rstd")}
        dx_branch, dln_w, dln_b = _ln_backward(dh, ln_cache, s["ln_weight"])
        return dout + dx_branch, dln_w, dln_b, dw_fc, db_fc, dw_proj, db_proj, None


class TransformerBlockFunction(torch.autograd.Function):
    """A whole pre-norm block with one hand-written backward.

    ``apply(x, n_head, eps, *params)`` with ``params`` in the order of
    :data:`BLOCK_PARAMETER_NAMES`; :func:`transformer_block_manual` takes the
    dict instead. Forward: ``x1 = x + attn(ln_1(x))``, ``out = x1 + mlp(ln_2(x1))``.
    Backward walks the same steps in reverse; at each residual the gradient
    that skips the branch adds to the gradient that went through it.
    """

    @staticmethod
    def forward(ctx, x, n_head, eps, *params):
        p = dict(zip(BLOCK_PARAMETER_NAMES, params))
        out, caches = _block_forward(x, p, n_head, eps)
        activations = {}
        for prefix, cache in caches.items():
            activations |= {f"{prefix}.{k}": t for k, t in cache.items()}
        weights = ("ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight")
        weights += ("mlp.c_fc.weight", "mlp.c_proj.weight")
        _save(ctx, "TransformerBlockFunction", activations, {w: p[w] for w in weights})
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        s = _saved(ctx)
        caches = {
            prefix: {k: s[f"{prefix}.{k}"] for k in keys}
            for prefix, keys in _BLOCK_CACHE_KEYS.items()
        }
        dx, g = _block_backward(dout, caches, s)
        return (dx, None, None, *(g[name] for name in BLOCK_PARAMETER_NAMES))


# What each part of a block keeps for its backward (see _block_forward's caches).
_BLOCK_CACHE_KEYS = {
    "ln_1": ("xhat", "rstd"),
    "attn": ("x", "q", "k", "v", "probs", "y"),
    "ln_2": ("xhat", "rstd"),
    "mlp": ("x", "a", "g"),
}


def _block_forward(
    x: torch.Tensor, p: dict[str, torch.Tensor], n_head: int, eps: float
) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """One pre-norm block on plain tensors: ``(out, caches)``, a cache per part
    (``ln_1``, ``attn``, ``ln_2``, ``mlp``). ``p`` maps :data:`BLOCK_PARAMETER_NAMES`."""
    h1, ln1 = _ln_forward(x, p["ln_1.weight"], p["ln_1.bias"], eps)
    a, attn = _attn_forward(
        h1,
        p["attn.c_attn.weight"],
        p["attn.c_attn.bias"],
        p["attn.c_proj.weight"],
        p["attn.c_proj.bias"],
        n_head,
    )
    x1 = x + a
    h2, ln2 = _ln_forward(x1, p["ln_2.weight"], p["ln_2.bias"], eps)
    m, mlp_cache = _mlp_forward(
        h2,
        p["mlp.c_fc.weight"],
        p["mlp.c_fc.bias"],
        p["mlp.c_proj.weight"],
        p["mlp.c_proj.bias"],
    )
    return x1 + m, {"ln_1": ln1, "attn": attn, "ln_2": ln2, "mlp": mlp_cache}


def _block_backward(
    dout: torch.Tensor, caches: dict[str, dict[str, torch.Tensor]], p: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(dx, grads)`` through one block, from :func:`_block_forward`'s caches and the
    block's weights in ``p``; ``grads`` maps every name of :data:`BLOCK_PARAMETER_NAMES`."""
    g = {}
    # second half: out = x1 + mlp(ln_2(x1))
    dh2, *mlp_grads = _mlp_backward(
        dout, caches["mlp"], p["mlp.c_fc.weight"], p["mlp.c_proj.weight"]
    )
    names = ("mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")
    g.update(zip(names, mlp_grads))
    dx1_branch, g["ln_2.weight"], g["ln_2.bias"] = _ln_backward(
        dh2, caches["ln_2"], p["ln_2.weight"]
    )
    dx1 = dout + dx1_branch  # the residual: skip path + branch
    # first half: x1 = x + attn(ln_1(x))
    dh1, *attn_grads = _attn_backward(
        dx1, caches["attn"], p["attn.c_attn.weight"], p["attn.c_proj.weight"]
    )
    names = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias")
    g.update(zip(names, attn_grads))
    dx_branch, g["ln_1.weight"], g["ln_1.bias"] = _ln_backward(
        dh1, caches["ln_1"], p["ln_1.weight"]
    )
    return dx1 + dx_branch, g


def transformer_block_manual(
    x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int, eps: float = 1e-5
) -> torch.Tensor:
    """:func:`transformer_block`, run through :class:`TransformerBlockFunction`."""
    return TransformerBlockFunction.apply(
        x, n_head, eps, *(params[name] for name in BLOCK_PARAMETER_NAMES)
    )
