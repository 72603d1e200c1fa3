"""The whole GPT, forward and backward, written by hand (lesson 13's reference).

The model is lesson 11's :class:`~backprop_course.gpt.model.GPT` (with biases), as
plain functions on a dict of tensors named as ``GPT.named_parameters()`` names
them (``"wte.weight"``, ``"wpe.weight"``, ``"blocks.0.ln_1.weight"``, ...,
``"ln_f.bias"``; the output layer is tied to ``"wte.weight"`` and has no entry of
its own)::

    x   = dropout(wte[idx] + wpe[:T])                      (B, T, C)
    x   = block_i(x)  for each of the n_layer blocks        lesson 10
    h   = layer_norm(x; ln_f)                               (B, T, C)
    z   = h @ wte.T                                         (B, T, V), tied head
    L   = mean over the B*T positions of -log softmax(z)[target]

:func:`gpt_forward` keeps what the backward needs; :func:`gpt_backward` walks
back through it and returns a gradient for every parameter, with no autograd.
The pieces lesson 10 did not cover are functions of their own:
:func:`cross_entropy_backward`, :func:`tied_head_backward`,
:func:`embedding_backward`, :func:`dropout_forward`/:func:`dropout_backward`.
The blocks reuse lesson 10's per-part passes from :mod:`backprop_course.transformer`.

:func:`autograd_loss` is the same model written for autograd (lesson 10's forward
references); the checks compare the two. :class:`AdamW` is lesson 08's Adam with
decoupled weight decay, on torch tensors, so a run stays on its device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from backprop_course import transformer as tr
from backprop_course.gpt.config import GPTConfig
from backprop_course.gpt.sample import next_token_probs

__all__ = [
    "AdamW",
    "adamw_step",
    "autograd_loss",
    "backward_order",
    "block_backward",
    "block_forward",
    "cache_bytes",
    "cross_entropy_backward",
    "dropout_backward",
    "dropout_forward",
    "dropout_mask",
    "embedding_backward",
    "generate",
    "gpt_backward",
    "gpt_forward",
    "init_params",
    "parameter_names",
    "tied_head_backward",
]


def parameter_names(n_layer: int) -> list[str]:
    """The parameter names of a GPT with biases, in ``GPT.named_parameters()`` order."""
    names = ["wte.weight", "wpe.weight"]
    for i in range(n_layer):
        names += [f"blocks.{i}.{n}" for n in tr.BLOCK_PARAMETER_NAMES]
    return [*names, "ln_f.weight", "ln_f.bias"]


def backward_order(n_layer: int) -> list[str]:
    """The parameter names in the order the backward pass reaches them (output first).

    Within a block the MLP half comes before the attention half. ``wte.weight``
    is last: its gradient is complete only once the embedding's part is added.
    """
    per_block = [
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "ln_2.weight",
        "ln_2.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "ln_1.weight",
        "ln_1.bias",
    ]
    names = ["ln_f.weight", "ln_f.bias"]
    for i in reversed(range(n_layer)):
        names += [f"blocks.{i}.{n}" for n in per_block]
    return [*names, "wpe.weight", "wte.weight"]


def init_params(
    config: GPTConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"
) -> dict[str, torch.Tensor]:
    """The initial weights of ``GPT(config)`` built under ``torch.manual_seed(seed)``.

    The global random state is left as it was. ``config.bias`` must be True.
    """
    from backprop_course.gpt.model import GPT

    if not config.bias:
        raise ValueError("the hand-written GPT has biases: use GPTConfig(bias=True)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(config)
    return {
        n: p.detach().to(device=device, dtype=dtype).clone() for n, p in model.named_parameters()
    }


def _n_layer(params: Mapping[str, torch.Tensor]) -> int:
    return sum(1 for n in params if n.endswith(".ln_1.weight"))


def _block(params: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    prefix = f"blocks.{i}."
    return {n: params[prefix + n] for n in tr.BLOCK_PARAMETER_NAMES}


# ---------------------------------------------------------------- the new pieces


def embedding_backward(
    idx: torch.Tensor, dx: torch.Tensor, vocab_size: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dwte, dwpe)`` for ``x = wte[idx] + wpe[:T]`` given ``dx`` ``(B, T, C)``.

    A lookup copies a row; its backward adds the gradient back to that row, and
    a token that occurs several times collects every one of its gradients
    (``index_add_``, not ``dwte[idx] = dx``). Every sequence uses the same
    position rows, so ``dwpe[:T]`` is ``dx`` summed over the batch.
    """
    B, T, C = dx.shape
    dwte = dx.new_zeros(vocab_size, C).index_add_(0, idx.reshape(-1), dx.reshape(B * T, C))
    dwpe = dx.new_zeros(block_size, C)
    dwpe[:T] = dx.sum(dim=0)
    return dwte, dwpe


def cross_entropy_backward(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, dlogits)`` for the mean cross-entropy over all ``B*T`` positions.

    ``dlogits = (softmax(logits) - onehot(targets)) / (B*T)``.
    """
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    y = targets.reshape(-1)
    N = flat.shape[0]
    shifted = flat - flat.amax(dim=-1, keepdim=True)
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    rows = torch.arange(N, device=flat.device)
    loss = -log_probs[rows, y].mean()
    dlogits = log_probs.exp()
    dlogits[rows, y] -= 1.0
    return loss, (dlogits / N).reshape(logits.shape)


def tied_head_backward(
    h: torch.Tensor, wte: torch.Tensor, dlogits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dh, dwte_head)`` for ``logits = h @ wte.T``: the head's share of ``wte``'s gradient.

    The embedding's share (:func:`embedding_backward`) must be added to it.
    """
    V, C = wte.shape
    dh = dlogits @ wte
    dwte_head = dlogits.reshape(-1, V).transpose(0, 1) @ h.reshape(-1, C)
    return dh, dwte_head


def dropout_mask(shape, p: float, generator: torch.Generator | None = None, device="cpu"):
    """A boolean keep-mask: each entry True with probability ``1 - p``."""
    return torch.rand(shape, generator=generator).to(device) >= p


def dropout_forward(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout: zero the dropped entries, scale the kept ones by ``1 / (1 - p)``."""
    return x * keep / (1.0 - p)


def dropout_backward(dout: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """The same mask and scale applied to the gradient."""
    return dout * keep / (1.0 - p)


# ---------------------------------------------------------------- lesson 10's block


def block_forward(x: torch.Tensor, p: Mapping[str, torch.Tensor], n_head: int, eps: float = 1e-5):
    """One pre-norm block (lesson 10) keeping a cache: ``(out, cache)``."""
    out, caches = tr._block_forward(x, dict(p), n_head, eps)
    return out, {**caches, "params": p}


def block_backward(dout: torch.Tensor, cache) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(dx, grads)`` through one block from :func:`block_forward`'s cache (lesson 10)."""
    return tr._block_backward(dout, cache, dict(cache["params"]))


# ---------------------------------------------------------------- the whole model


def gpt_forward(
    params: Mapping[str, torch.Tensor],
    idx: torch.Tensor,
    targets: torch.Tensor | None,
    n_head: int,
    *,
    dropout: float = 0.0,
    keep: torch.Tensor | None = None,
    eps: float = 1e-5,
):
    """``(loss, cache)`` (``(logits, cache)`` without targets) of the hand-written GPT.

    ``keep`` is the embedding dropout's mask ``(B, T, C)`` (None: no dropout);
    the blocks have none, as in lesson 10.
    """
    T = idx.shape[1]
    x = params["wte.weight"][idx] + params["wpe.weight"][:T]  # (B, T, C)
    if keep is not None:
        x = dropout_forward(x, keep, dropout)
    blocks = []
    for i in range(_n_layer(params)):
        x, block_cache = block_forward(x, _block(params, i), n_head, eps)
        blocks.append(block_cache)
    h, ln_f = tr._ln_forward(x, params["ln_f.weight"], params["ln_f.bias"], eps)
    logits = h @ params["wte.weight"].transpose(0, 1)  # (B, T, V)
    cache = {"idx": idx, "h": h, "ln_f": ln_f, "blocks": blocks, "params": params}
    cache |= {"keep": keep, "dropout": dropout}
    if targets is None:
        return logits, cache
    loss, dlogits = cross_entropy_backward(logits, targets)
    cache["dlogits"] = dlogits  # computed with the loss: it needs the same softmax
    return loss, cache


def gpt_backward(cache) -> dict[str, torch.Tensor]:
    """A gradient for every parameter from :func:`gpt_forward`'s cache (no autograd)."""
    p = cache["params"]
    grads: dict[str, torch.Tensor] = {}
    dh, dwte_head = tied_head_backward(cache["h"], p["wte.weight"], cache["dlogits"])
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = tr._ln_backward(
        dh, cache["ln_f"], p["ln_f.weight"]
    )
    for i in reversed(range(len(cache["blocks"]))):
        dx, block_grads = block_backward(dx, cache["blocks"][i])
        grads |= {f"blocks.{i}.{n}": g for n, g in block_grads.items()}
    if cache["keep"] is not None:
        dx = dropout_backward(dx, cache["keep"], cache["dropout"])
    V, block_size = p["wte.weight"].shape[0], p["wpe.weight"].shape[0]
    dwte_embedding, grads["wpe.weight"] = embedding_backward(cache["idx"], dx, V, block_size)
    grads["wte.weight"] = dwte_head + dwte_embedding  # one matrix, used twice
    return {n: grads[n] for n in p}


def cache_bytes(cache) -> int:
    """Bytes of the distinct activation tensors a :func:`gpt_forward` cache holds.

    Parameters and the integer inputs are not counted (they exist anyway); views
    of one storage count once.
    """
    params = {t.untyped_storage().data_ptr() for t in cache["params"].values()}
    seen: dict[int, int] = {}

    def walk(value) -> Iterator[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if key != "params":
                    yield from walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from walk(item)

    for t in walk(cache):
        if not t.is_floating_point() and t.dtype != torch.bool:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def autograd_loss(
    params: Mapping[str, torch.Tensor],
    idx: torch.Tensor,
    targets: torch.Tensor,
    n_head: int,
    *,
    dropout: float = 0.0,
    keep: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The same loss written with lesson 10's forward references, for autograd to differentiate."""
    T = idx.shape[1]
    x = params["wte.weight"][idx] + params["wpe.weight"][:T]
    if keep is not None:
        x = x * keep / (1.0 - dropout)
    for i in range(_n_layer(params)):
        x = tr.transformer_block(x, _block(params, i), n_head, eps)
    h = tr.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], eps)
    logits = h @ params["wte.weight"].transpose(0, 1)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    )


@torch.no_grad()
def generate(
    params: Mapping[str, torch.Tensor],
    idx: torch.Tensor,
    max_new_tokens: int,
    n_head: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` tokens sampled from the hand-written GPT."""
    block_size = params["wpe.weight"].shape[0]
    for _ in range(max_new_tokens):
        logits, _ = gpt_forward(params, idx[:, -block_size:], None, n_head)
        probs = next_token_probs(logits[:, -1, :].float(), temperature, top_k)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)
        idx = torch.cat((idx, nxt), dim=1)
    return idx


# ---------------------------------------------------------------- AdamW (lesson 08 + decay)


def adamw_step(p, g, m, v, t, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0):
    """One AdamW update, in place on tensors ``p``, ``m``, ``v`` (``t`` counts from 1).

    Lesson 08's Adam, with the decay applied to the weight itself, beside the
    Adam step (``p *= 1 - lr * weight_decay``), as ``torch.optim.AdamW`` does.
    """
    p.mul_(1.0 - lr * weight_decay)
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    m_hat = m / (1.0 - beta1**t)
    v_hat = v / (1.0 - beta2**t)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


class AdamW:
    """AdamW on a dict of tensors; weight decay on matrices (``dim >= 2``) only, as lesson 11."""

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        lr: float,
        *,
        betas=(0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.t = 0

    def step(self, grads: Mapping[str, torch.Tensor], lr: float | None = None) -> None:
        """Update every parameter in place from ``grads`` (same names)."""
        self.t += 1
        lr = self.lr if lr is None else lr
        for n, p in self.params.items():
            decay = self.weight_decay if p.dim() >= 2 else 0.0
            adamw_step(
                p,
                grads[n],
                self.m[n],
                self.v[n],
                self.t,
                lr,
                *self.betas,
                eps=self.eps,
                weight_decay=decay,
            )
