"""Lesson 13: correct answers pass, classic mistakes are named, shortcuts earn nothing."""

from __future__ import annotations

import torch

from backprop_course import evaluate
from backprop_course import transformer as tr
from backprop_course.checking import CORRECT
from backprop_course.gpt import manual
from backprop_course.rules import BY_HAND
from feedback import lesson_feedback_tests

# ------------------------------------------------------------------ correct answers, written
# differently from the solutions notebook


def embedding_backward(idx, dx, vocab_size, block_size):
    T, C = dx.shape[1:]
    onehot = torch.nn.functional.one_hot(idx.reshape(-1), vocab_size).to(dx.dtype)  # (N, V)
    dwte = onehot.T @ dx.reshape(-1, C)
    dwpe = torch.zeros(block_size, C, dtype=dx.dtype)
    dwpe[:T] = dx.sum(dim=0)
    return dwte, dwpe


def tied_head_backward(h, wte, dlogits, dwte_embedding):
    dh = torch.einsum("btv,vc->btc", dlogits, wte)
    return dh, torch.einsum("btv,btc->vc", dlogits, h) + dwte_embedding


def cross_entropy_backward(logits, targets):
    B, T, V = logits.shape
    log_p = torch.log_softmax(logits, dim=-1)
    picked = log_p.gather(-1, targets[..., None])[..., 0]
    onehot = torch.nn.functional.one_hot(targets, V).to(logits.dtype)
    return -picked.mean(), (log_p.exp() - onehot) / (B * T)


def dropout(x, keep, p, dout):
    scale = torch.where(keep, 1.0 / (1.0 - p), 0.0).to(x.dtype)
    return x * scale, dout * scale


def _forward(params, idx, n_head):
    T = idx.shape[1]
    n_layer = sum(1 for n in params if n.endswith("ln_1.weight"))
    x = params["wte.weight"][idx] + params["wpe.weight"][:T]
    caches = []
    for i in range(n_layer):
        block = {
            n[len(f"blocks.{i}.") :]: t for n, t in params.items() if n.startswith(f"blocks.{i}.")
        }
        x, cache = manual.block_forward(x, block, n_head)
        caches.append(cache)
    h = tr.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])
    return h @ params["wte.weight"].T, x, h, caches


def gpt_backward(params, idx, targets, n_head, *, mistake=None):
    logits, x, h, caches = _forward(params, idx, n_head)
    _, dlogits = cross_entropy_backward(logits, targets)
    if mistake == "sum":
        dlogits = dlogits * idx.numel()
    V, block_size = params["wte.weight"].shape[0], params["wpe.weight"].shape[0]
    grads = {}
    dh, d_head = tied_head_backward(h, params["wte.weight"], dlogits, 0)
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = tr.layer_norm_backward(
        x, params["ln_f.weight"], dh
    )
    for i, cache in reversed(list(enumerate(caches))):
        dx, block = manual.block_backward(dx, cache)
        grads.update({f"blocks.{i}.{n}": g for n, g in block.items()})
    if mistake == "assign":
        d_embedding = torch.zeros_like(params["wte.weight"])
        d_embedding[idx.reshape(-1)] = dx.reshape(-1, dx.shape[-1])
        _, grads["wpe.weight"] = embedding_backward(idx, dx, V, block_size)
    else:
        d_embedding, grads["wpe.weight"] = embedding_backward(idx, dx, V, block_size)
    grads["wte.weight"] = {"head only": d_head, "embedding only": d_embedding}.get(
        mistake, d_head + d_embedding
    )
    if mistake == "zero":
        grads["blocks.0.attn.c_proj.weight"] = torch.zeros_like(
            grads["blocks.0.attn.c_proj.weight"]
        )
    if mistake == "proj":
        grads["blocks.0.attn.c_proj.weight"] = grads["blocks.0.attn.c_proj.weight"].T.contiguous()
    return grads


def train_step(params, m, v, t, idx, targets, n_head, hyper, *, mistake=None):
    logits, *_ = _forward(params, idx, n_head)
    loss, _ = cross_entropy_backward(logits, targets)
    grads = gpt_backward(params, idx, targets, n_head)
    b1, b2 = hyper["beta1"], hyper["beta2"]
    new = ({}, {}, {})
    for n, p in params.items():
        wd = hyper["weight_decay"] if (p.ndim > 1 or mistake == "decay all") else 0.0
        g = grads[n] + wd * p if mistake == "l2" else grads[n]
        m1 = m[n] * b1 + g * (1 - b1)
        v1 = v[n] * b2 + g.square() * (1 - b2)
        c1, c2 = (1, 1) if mistake == "no correction" else (1 - b1**t, 1 - b2**t)
        step = hyper["lr"] * (m1 / c1) / ((v1 / c2).sqrt() + hyper["eps"])
        kept = p if mistake == "l2" else p - hyper["lr"] * wd * p
        new[0][n], new[1][n], new[2][n] = kept - step, m1, v1
    return (loss, *new)


CORRECT_ANSWERS = {
    "13.embedding_backward": embedding_backward,
    "13.tied_head": tied_head_backward,
    "13.cross_entropy_backward": cross_entropy_backward,
    "13.dropout": dropout,
    "13.gpt_backward": gpt_backward,
    "13.train_step": train_step,
}

# ------------------------------------------------------------------ classic mistakes


def _embedding_assign(idx, dx, V, block):
    dwte = torch.zeros(V, dx.shape[-1], dtype=dx.dtype)
    dwte[idx.reshape(-1)] += dx.reshape(-1, dx.shape[-1])  # one write per distinct row
    return dwte, embedding_backward(idx, dx, V, block)[1]


def _embedding_mean_positions(idx, dx, V, block):
    dwte, dwpe = embedding_backward(idx, dx, V, block)
    dwpe[: dx.shape[1]] = dx.mean(dim=0)
    return dwte, dwpe


def _ce(scale=1.0, onehot=True):
    def answer(logits, targets):
        loss, d = cross_entropy_backward(logits, targets)
        if not onehot:
            d = torch.softmax(logits, -1) / targets.numel()
        return loss * scale, d * scale

    return answer


def _ce_scaled(logits, targets, loss_scale, grad_scale):
    loss, d = cross_entropy_backward(logits, targets)
    return loss * loss_scale, d * grad_scale


def _dropout_unscaled(x, keep, p, dout):
    return x * keep, dout * keep


WRONG_ANSWERS = [
    ("13.embedding_backward", _embedding_assign, "assignment instead of accumulation"),
    ("13.embedding_backward", _embedding_mean_positions, "averaged dwpe over the batch"),
    (
        "13.embedding_backward",
        lambda idx, dx, V, b: (embedding_backward(idx, dx, V, b)[0], dx.sum(0)),
        "dwpe has shape",
    ),
    ("13.embedding_backward", lambda *a: None, "is a `return` missing?"),
    (
        "13.tied_head",
        lambda h, w, d, e: (d @ w, tied_head_backward(h, w, d, e)[1] - e),
        "only one of the two gradients",
    ),
    (
        "13.tied_head",
        lambda h, w, d, e: (d @ w, tied_head_backward(h, w, d, e)[1].T),
        "it looks transposed",
    ),
    ("13.tied_head", lambda *a: None, "is a `return` missing?"),
    ("13.cross_entropy_backward", _ce(scale=1.0, onehot=False), "forgot to subtract the one-hot"),
    (
        "13.cross_entropy_backward",
        lambda lg, y: (
            cross_entropy_backward(lg, y)[0],
            cross_entropy_backward(lg, y)[1] * y.numel(),
        ),
        "sum vs mean over B*T",
    ),
    (
        "13.cross_entropy_backward",
        lambda lg, y: (
            cross_entropy_backward(lg, y)[0] * y.numel(),
            cross_entropy_backward(lg, y)[1],
        ),
        "summed over the B*T positions",
    ),
    ("13.cross_entropy_backward", lambda lg, y: None, "is a `return` missing?"),
    ("13.dropout", _dropout_unscaled, "forgot the dropout scale"),
    ("13.dropout", lambda x, k, p, d: (dropout(x, k, p, d)[0], d * k), "forgot the dropout scale"),
    ("13.dropout", lambda x, k, p, d: (x * ~k / (1 - p), d * ~k / (1 - p)), "mask is inverted"),
    ("13.dropout", lambda *a: None, "is a `return` missing?"),
    ("13.gpt_backward", lambda *a: gpt_backward(*a, mistake="assign"), "assignment instead of"),
    ("13.gpt_backward", lambda *a: gpt_backward(*a, mistake="head only"), "only one of the two"),
    ("13.gpt_backward", lambda *a: gpt_backward(*a, mistake="embedding only"), "only one of"),
    ("13.gpt_backward", lambda *a: gpt_backward(*a, mistake="sum"), "sum vs mean over B*T"),
    ("13.gpt_backward", lambda *a: gpt_backward(*a, mistake="zero"), "is all zeros"),
    (
        "13.gpt_backward",
        lambda *a: gpt_backward(*a, mistake="proj"),
        "blocks.0.attn.c_proj.weight is wrong",
    ),
    ("13.gpt_backward", lambda *a: None, "is a `return` missing?"),
    ("13.train_step", lambda *a: train_step(*a, mistake="l2"), "L2 regularisation instead of"),
    ("13.train_step", lambda *a: train_step(*a, mistake="decay all"), "decayed every parameter"),
    ("13.train_step", lambda *a: train_step(*a, mistake="no correction"), "no bias correction"),
    ("13.train_step", lambda *a: None, "is a `return` missing?"),
]

# ------------------------------------------------------------------ shortcuts


def _autograd_embedding(idx, dx, V, block):
    with torch.enable_grad():
        wte = torch.zeros(V, dx.shape[-1], dtype=dx.dtype, requires_grad=True)
        wpe = torch.zeros(block, dx.shape[-1], dtype=dx.dtype, requires_grad=True)
        (wte[idx] + wpe[: idx.shape[1]]).backward(dx)
        return wte.grad, wpe.grad


def _autograd_ce(logits, targets):
    with torch.enable_grad():
        z = logits.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), targets.reshape(-1))
        return loss.detach(), torch.autograd.grad(loss, z)[0]


def _autograd_gpt(params, idx, targets, n_head):
    with torch.enable_grad():
        leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
        loss = manual.autograd_loss(leaves, idx, targets, n_head)
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def _package_gpt(params, idx, targets, n_head):
    return manual.gpt_backward(manual.gpt_forward(params, idx, targets, n_head)[1])


def _torch_adamw_step(params, m, v, t, idx, targets, n_head, hyper):
    grads = gpt_backward(params, idx, targets, n_head)
    leaves = [p.clone().requires_grad_(True) for p in params.values()]
    opt = torch.optim.AdamW(leaves, lr=hyper["lr"], weight_decay=hyper["weight_decay"])
    for p, g in zip(leaves, grads.values()):
        p.grad = g
    opt.step()
    return 0.0, dict(zip(params, leaves)), m, v


def _warm_torch_optim():
    """torch.optim imports a lot lazily on its first step; under the rules' call tracing that
    import takes seconds, so take it once here, untraced."""
    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.ones(1)
    torch.optim.AdamW([p]).step()


_warm_torch_optim()


def _functional_torch_adamw_step(params, m, v, t, idx, targets, n_head, hyper):
    from torch.optim.adamw import adamw

    grads = gpt_backward(params, idx, targets, n_head)
    new = {n: p.clone() for n, p in params.items()}
    m, v = {n: x.clone() for n, x in m.items()}, {n: x.clone() for n, x in v.items()}
    for n, p in new.items():
        adamw(
            [p], [grads[n]], [m[n]], [v[n]], [], [torch.tensor(float(t - 1))],
            foreach=False, capturable=False, differentiable=False, fused=None,
            grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
            beta1=hyper["beta1"], beta2=hyper["beta2"], lr=hyper["lr"], eps=hyper["eps"],
            weight_decay=hyper["weight_decay"] if p.dim() >= 2 else 0.0, maximize=False,
        )  # fmt: skip
    return cross_entropy_backward(_forward(params, idx, n_head)[0], targets)[0], new, m, v


def _package_adamw_step(params, m, v, t, idx, targets, n_head, hyper):
    grads = gpt_backward(params, idx, targets, n_head)
    params = {n: p.clone() for n, p in params.items()}
    opt = manual.AdamW(params, hyper["lr"], weight_decay=hyper["weight_decay"])
    opt.step(grads)
    return 0.0, params, opt.m, opt.v


SHORTCUTS = [
    ("13.embedding_backward", _autograd_embedding, BY_HAND),
    ("13.embedding_backward", manual.embedding_backward, "manual.embedding_backward"),
    (
        "13.tied_head",
        lambda h, w, d, e: (
            *manual.tied_head_backward(h, w, d)[:1],
            manual.tied_head_backward(h, w, d)[1] + e,
        ),
        "manual.tied_head_backward",
    ),
    ("13.cross_entropy_backward", _autograd_ce, BY_HAND),
    ("13.cross_entropy_backward", manual.cross_entropy_backward, "manual.cross_entropy_backward"),
    (
        "13.dropout",
        lambda x, k, p, d: (manual.dropout_forward(x, k, p), manual.dropout_backward(d, k, p)),
        "manual.dropout_forward",
    ),
    ("13.gpt_backward", _autograd_gpt, BY_HAND),
    ("13.gpt_backward", _package_gpt, "backprop_course.gpt.manual.gpt_forward"),
    ("13.train_step", _torch_adamw_step, "torch.optim"),
    ("13.train_step", _functional_torch_adamw_step, "torch.optim.adamw"),
    ("13.train_step", _package_adamw_step, "backprop_course.gpt.manual.AdamW"),
]

globals().update(
    lesson_feedback_tests(
        "13",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        shortcuts=SHORTCUTS,
        ruled=tuple(CORRECT_ANSWERS),
        correct_seeds={"13.gpt_backward": 3, "13.train_step": 3},
    )
)


def test_lesson10_block_backward_refuses_the_lesson13_block():
    """manual.block_backward solves 10.block_backward, so lesson 10 refuses it by behaviour."""

    def block_backward(x, params, dout, n_head):
        _, cache = manual.block_forward(x, params, n_head)
        dx, grads = manual.block_backward(dout, cache)
        return {"x": dx, **grads}

    result = evaluate("10.block_backward", block_backward, seed=0)
    assert result.status != CORRECT and "_attn_backward" in result.message, result.message
