"""Lesson 11: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from feedback import lesson_feedback_tests

# ---------------------------------------------------------------- 11.decay_groups


def decay_groups(shapes):
    decay = [n for n, s in shapes.items() if len(s) >= 2]
    return decay, [n for n in shapes if n not in decay]


def decay_groups_torch(shapes):
    """Another correct form: build the tensors, as configure_optimizer does, and use p.dim()."""
    params = {n: torch.empty(s) for n, s in shapes.items()}
    return (
        [n for n, p in params.items() if p.dim() >= 2],
        [n for n, p in params.items() if p.dim() < 2],
    )


def decay_by_name(shapes):
    decay = [n for n in shapes if n.endswith("weight")]
    return decay, [n for n in shapes if n not in decay]


def decay_not_bias(shapes):
    decay = [n for n in shapes if not n.endswith("bias")]
    return decay, [n for n in shapes if n not in decay]


def decay_no_embeddings(shapes):
    decay = [n for n, s in shapes.items() if len(s) >= 2 and "wte" not in n and "wpe" not in n]
    return decay, [n for n in shapes if n not in decay]


# ---------------------------------------------------------------- 11.grad_clip


def make_clip(*, per_tensor=False, norm_after=False, scale_up=False, no_sqrt=False):
    def clip_by_global_norm(grads, max_norm):
        squares = sum(float((g**2).sum()) for g in grads)
        total = squares if no_sqrt else math.sqrt(squares)
        if per_tensor:
            out = [g * min(1.0, max_norm / np.linalg.norm(g)) for g in grads]
        elif scale_up:
            out = [g * max_norm / total for g in grads]
        else:
            out = [g * min(1.0, max_norm / (total + 1e-6)) for g in grads]
        return out, (min(total, max_norm) if norm_after else total)

    return clip_by_global_norm


def clip_with_torch(grads, max_norm):
    """Another correct form: torch.nn.utils.clip_grad_norm_ on tensors with .grad set."""
    params = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g)
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad.numpy() for p in params], float(total)


# ---------------------------------------------------------------- 11.loss_scaling


def make_scaler(*, clip_first=False, skip=True, backoff=0.5, reset=True, shift=0, count=True):
    def loss_scale_step(scaled_grads, scale, good_steps, max_norm, growth_interval):
        if skip and not all(np.isfinite(g).all() for g in scaled_grads):
            return None, scale * backoff, (0 if reset else good_steps)
        if clip_first:
            clipped, _ = make_clip()(scaled_grads, max_norm)
            grads = [g / scale for g in clipped]
        else:
            grads, _ = make_clip()([g / scale for g in scaled_grads], max_norm)
        good = good_steps + (1 if count else 0)
        if good >= growth_interval + shift:
            return grads, scale * 2, 0
        return grads, scale, good

    return loss_scale_step


def scaler_no_unscale(scaled_grads, scale, good_steps, max_norm, growth_interval):
    if not all(np.isfinite(g).all() for g in scaled_grads):
        return None, scale / 2, 0
    grads, _ = make_clip()(scaled_grads, max_norm)
    good = good_steps + 1
    return (grads, 2 * scale, 0) if good == growth_interval else (grads, scale, good)


def scaler_no_reset_after_growth(scaled_grads, scale, good_steps, max_norm, growth_interval):
    grads, new_scale, good = make_scaler()(
        scaled_grads, scale, good_steps, max_norm, growth_interval
    )
    if grads is not None and new_scale > scale:
        good = good_steps + 1
    return grads, new_scale, good


# ---------------------------------------------------------------- 11.mfu


def make_mfu(*, attention=True, forward_only=False, percent=False, tera=False):
    def mfu(tokens_per_second, n_params, n_layer, n_head, head_dim, block_size, peak_flops):
        if peak_flops is None:
            return None
        per_param = 2 if forward_only else 6
        attn = 12 * n_layer * n_head * head_dim * block_size if attention else 0
        if forward_only:
            attn /= 3
        value = tokens_per_second * (per_param * n_params + attn) / peak_flops
        if tera:
            value /= 1e12
        return 100 * value if percent else value

    return mfu


def mfu_no_none(tokens_per_second, n_params, n_layer, n_head, head_dim, block_size, peak_flops):
    flops = 6 * n_params + 12 * n_layer * n_head * head_dim * block_size
    return tokens_per_second * flops / peak_flops


def mfu_zero_for_none(*args):
    return 0.0 if args[-1] is None else make_mfu()(*args)


# ---------------------------------------------------------------- 11.update_ratio


def make_update_ratios(*, log=np.log10, after_norm=False, norm=np.linalg.norm):
    def update_ratios(before, after):
        out = {}
        for n in before:
            denominator = norm(after[n] if after_norm else before[n])
            out[n] = float(log(norm(after[n] - before[n]) / denominator))
        return out

    return update_ratios


def update_ratios_torch(before, after):
    """Another correct form, in torch."""
    return {
        n: torch.log10(
            (torch.tensor(after[n]) - torch.tensor(before[n])).norm()
            / torch.tensor(before[n]).norm()
        ).item()
        for n in before
    }


# ---------------------------------------------------------------- 11.top_k_sampling


def make_top_k(*, multiply=False, softmax_first=False, shift=0, largest=True, clamp=True):
    def top_k_probs(logits, temperature, top_k):
        z = logits * temperature if multiply else logits / temperature
        if top_k is not None:
            k = min(top_k, z.size(-1)) if clamp else top_k
            k = k + shift
            if softmax_first:
                p = torch.softmax(z, dim=-1)
                kth = torch.topk(z, k).values[:, [-1]]
                return p.masked_fill(z < kth, 0.0)
            if largest:
                kth = torch.topk(z, k).values[:, [-1]]
                z = z.masked_fill(z < kth, float("-inf"))
            else:
                kth = torch.topk(z, k, largest=False).values[:, [-1]]
                z = z.masked_fill(z > kth, float("-inf"))
        return torch.softmax(z, dim=-1)

    return top_k_probs


def top_k_numpy(logits, temperature, top_k):
    """Another correct form, in numpy, returning an array."""
    z = np.asarray(logits) / temperature
    if top_k is not None:
        k = min(top_k, z.shape[-1])
        kth = np.sort(z, axis=-1)[:, -k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k_returns_logits(logits, temperature, top_k):
    z = logits / temperature
    k = min(top_k or z.size(-1), z.size(-1))
    kth = torch.topk(z, k).values[:, [-1]]
    return z.masked_fill(z < kth, float("-inf"))


def top_k_no_renormalise(logits, temperature, top_k):
    p = torch.softmax(logits, dim=-1) / temperature
    return p / p.sum(dim=-1, keepdim=True) * 0.9


CORRECT_ANSWERS = {
    "11.decay_groups": decay_groups,
    "11.grad_clip": make_clip(),
    "11.loss_scaling": make_scaler(),
    "11.mfu": make_mfu(),
    "11.update_ratio": make_update_ratios(),
    "11.top_k_sampling": make_top_k(),
}

ALSO_CORRECT = [
    ("11.decay_groups", decay_groups_torch),
    ("11.decay_groups", lambda s: [sorted(decay_groups(s)[0]), tuple(decay_groups(s)[1])]),
    ("11.update_ratio", update_ratios_torch),
    ("11.top_k_sampling", top_k_numpy),
]

WRONG_ANSWERS = [
    ("11.decay_groups", decay_by_name, "decided by name"),
    ("11.decay_groups", decay_not_bias, "LayerNorm weights"),
    ("11.decay_groups", decay_no_embeddings, "excluded the embeddings"),
    ("11.decay_groups", lambda s: decay_groups(s)[::-1], "swapped"),
    ("11.decay_groups", lambda s: (decay_groups(s)[0], []), "neither group"),
    ("11.decay_groups", lambda s: (list(s), decay_groups(s)[1]), "both groups"),
    ("11.decay_groups", lambda s: decay_groups(s)[0], "tuple"),
    ("11.grad_clip", make_clip(per_tensor=True), "each array by its own norm"),
    ("11.grad_clip", make_clip(norm_after=True), "norm after clipping"),
    ("11.grad_clip", make_clip(scale_up=True), "clipping only ever shrinks"),
    ("11.grad_clip", make_clip(no_sqrt=True), "square root"),
    ("11.grad_clip", lambda grads, m: grads, "tuple"),
    ("11.loss_scaling", make_scaler(clip_first=True), "clipped before unscaling"),
    ("11.loss_scaling", scaler_no_unscale, "forgot to unscale"),
    ("11.loss_scaling", make_scaler(skip=False), "must be skipped"),
    ("11.loss_scaling", make_scaler(backoff=1.0), "did not lower the scale"),
    ("11.loss_scaling", make_scaler(reset=False), "reset the counter"),
    ("11.loss_scaling", make_scaler(shift=1), "did not grow the scale"),
    ("11.loss_scaling", make_scaler(shift=-1), "grew the scale too early"),
    ("11.loss_scaling", make_scaler(count=False), "add 1 to good_steps"),
    ("11.loss_scaling", scaler_no_reset_after_growth, "restart the count"),
    ("11.mfu", make_mfu(attention=False), "forgot the attention term"),
    ("11.mfu", make_mfu(forward_only=True), "forward pass only"),
    ("11.mfu", make_mfu(percent=True), "percentage"),
    ("11.mfu", make_mfu(tera=True), "FLOP/s"),
    ("11.mfu", mfu_no_none, "peak_flops is None"),
    ("11.mfu", mfu_zero_for_none, "return None"),
    ("11.update_ratio", make_update_ratios(log=lambda x: x), "forgot the log10"),
    ("11.update_ratio", make_update_ratios(log=np.log), "natural log"),
    ("11.update_ratio", make_update_ratios(after_norm=True), "after the step"),
    ("11.update_ratio", make_update_ratios(norm=np.std), "standard deviation"),
    ("11.update_ratio", lambda b, a: list(make_update_ratios()(b, a).values()), "dict"),
    ("11.top_k_sampling", make_top_k(multiply=True), "multiplied the logits by the temperature"),
    ("11.top_k_sampling", make_top_k(softmax_first=True), "softmax before filtering"),
    ("11.top_k_sampling", make_top_k(largest=False), "k smallest"),
    ("11.top_k_sampling", make_top_k(clamp=False), "min(top_k, V)"),
    ("11.top_k_sampling", top_k_returns_logits, "not the filtered logits"),
    ("11.top_k_sampling", top_k_no_renormalise, "sum to 1"),
]


# ---------------------------------------------------------------- shortcuts: ready-made answers


def decay_groups_by_the_package(shapes):
    """GPT.configure_optimizer's own split, run on stand-in parameters of these shapes."""
    from types import SimpleNamespace

    from backprop_course.gpt.model import GPT

    params = {n: torch.zeros(s, requires_grad=True) for n, s in shapes.items()}
    fake = SimpleNamespace(parameters=lambda: iter(params.values()))
    groups = GPT.configure_optimizer(fake, 0.1, 1e-3).param_groups
    ids = [{id(p) for p in g["params"]} for g in groups]
    return [[n for n, p in params.items() if id(p) in group] for group in ids]


def mfu_by_the_meter(tokens_per_second, n_params, n_layer, n_head, head_dim, block_size, peak):
    from backprop_course.gpt.meter import flops_per_token

    if peak is None:
        return None
    return (
        tokens_per_second * flops_per_token(n_params, n_layer, n_head, head_dim, block_size) / peak
    )


def scaler_by_the_checker(scaled_grads, scale, good_steps, max_norm, growth_interval):
    from backprop_course.exercises.lesson11 import _scaler

    return _scaler(scaled_grads, scale, good_steps, max_norm, growth_interval)


def update_ratios_by_the_checker(before, after):
    from backprop_course.exercises.lesson11 import _log_ratio

    return {n: _log_ratio(before[n], after[n]) for n in before}


def top_k_by_the_checker(logits, temperature, top_k):
    from backprop_course.exercises.lesson11 import _top_k_probs

    return torch.from_numpy(_top_k_probs(logits.numpy(), temperature, top_k))


SHORTCUTS = [
    ("11.decay_groups", decay_groups_by_the_package, "backprop_course.gpt.model"),
    ("11.grad_clip", clip_with_torch, "torch.nn.utils.clip_grad_norm_"),
    ("11.loss_scaling", scaler_by_the_checker, "backprop_course.exercises.lesson11"),
    ("11.mfu", mfu_by_the_meter, "backprop_course.gpt.meter"),
    ("11.update_ratio", update_ratios_by_the_checker, "backprop_course.exercises.lesson11"),
    ("11.top_k_sampling", top_k_by_the_checker, "backprop_course.exercises.lesson11"),
]


def mfu_c_squared(tokens_per_second, n_params, n_layer, n_head, head_dim, block_size, peak):
    C = n_head * head_dim
    return tokens_per_second * (6 * n_params + 12 * n_layer * C * C) / peak


NONE_RETURNS = [
    ("11.mfu", mfu_c_squared, "linear in the context"),
    ("11.decay_groups", lambda s: None, "is a `return` missing?"),
    ("11.grad_clip", lambda g, m: None, "is a `return` missing?"),
    ("11.update_ratio", lambda b, a: None, "is a `return` missing?"),
    ("11.top_k_sampling", lambda *a: None, "is a `return` missing?"),
]

globals().update(
    lesson_feedback_tests(
        "11",
        CORRECT_ANSWERS,
        WRONG_ANSWERS + NONE_RETURNS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        # each asks you to write what the package (backprop_course.gpt) or torch provides
        ruled=sorted(CORRECT_ANSWERS),
    )
)


def test_clip_reference_matches_torch():
    """The clipping the checks expect is torch.nn.utils.clip_grad_norm_'s, to float64 rounding."""
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    ours, total = make_clip()(grads, 0.5)
    theirs, torch_total = clip_with_torch(grads, 0.5)
    assert total == pytest.approx(torch_total)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12)
