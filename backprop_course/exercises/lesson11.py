"""Lesson 11, training a GPT on a GPU: the arithmetic around the training step.

Every check calls the learner's function with plain data (numbers, lists and dicts of
numpy arrays, torch tensors) and compares the plain data that comes back, so the
grader can run it from outside the learner's process.
"""

from __future__ import annotations

import math

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    as_array,
    assert_close,
    expect_tuple,
    is_stub,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules

# Each exercise is a piece of arithmetic that the package (backprop_course.gpt) or torch
# already does: those, and this module's own references, are refused as answers.
FORBIDDEN = (
    "backprop_course.gpt.model",
    "backprop_course.gpt.train",
    "backprop_course.gpt.meter",
    "backprop_course.gpt.health",
    "backprop_course.gpt.sample",
    "backprop_course.exercises.lesson11",
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grads_with_norm_",
    "torch.nn.utils.get_total_norm",
    "torch.amp.GradScaler",
)


def _call(answer, *args):
    """The learner's function, with the package's and torch's ready-made versions refused."""
    # watched where loaded: the gpt modules and torch take seconds to import
    return call_under_rules(answer, *args, forbid=FORBIDDEN)


# ---------------------------------------------------------------- helpers


def _random_grads(rng, scale=1.0):
    """A few gradient tensors of different shapes, as a list of float64 arrays."""
    shapes = [(int(rng.integers(2, 6)), int(rng.integers(2, 6))), (int(rng.integers(2, 8)),)]
    shapes += [(int(rng.integers(2, 5)),) * 2 for _ in range(int(rng.integers(0, 3)))]
    order = rng.permutation(len(shapes))
    return [rng.normal(scale=scale, size=shapes[i]) for i in order]


def _global_norm(grads) -> float:
    return float(math.sqrt(sum(float((g**2).sum()) for g in grads)))


def _clip(grads, max_norm):
    norm = _global_norm(grads)
    factor = min(1.0, max_norm / (norm + 1e-6))
    return [g * factor for g in grads], norm


def _as_grad_list(got, count: int, name: str, where: str):
    if got is None:
        raise Wrong(f"{name} is None {where}: is a `return` missing?")
    if not isinstance(got, (list, tuple)) or len(got) != count:
        kind = type(got).__name__
        size = f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""
        raise Wrong(
            f"{name} should be a list of {count} arrays (one per gradient, same order), "
            f"got a {kind}{size} {where}"
        )
    return got


def _compare_grads(got, expected, *, name, where, mistakes=None, rtol=1e-5):
    """Compare two lists of arrays; a named mistake is a list of arrays too."""
    got = _as_grad_list(got, len(expected), name, where)
    got_flat = np.concatenate([np.ravel(as_array(g, f"{name}[{i}]")) for i, g in enumerate(got)])
    shapes = [np.shape(as_array(g, name)) for g in got]
    for i, (shape, e) in enumerate(zip(shapes, expected)):
        if shape != e.shape:
            raise Wrong(f"{name}[{i}] has shape {shape}, expected {e.shape} {where}")
    flat = np.concatenate([e.ravel() for e in expected])
    flat_mistakes = {
        k: np.concatenate([np.ravel(v) for v in value]) for k, value in (mistakes or {}).items()
    }
    assert_close(
        got_flat,
        flat,
        name=f"{name} (all arrays, flattened and joined)",
        rtol=rtol,
        atol=1e-12,
        context=where,
        mistakes=flat_mistakes,
    )


# ---------------------------------------------------------------- 11.decay_groups


def _gpt_shapes(rng):
    """named_parameters() of a random small backprop_course.gpt.GPT, as {name: shape}, shuffled."""
    n_layer = int(rng.integers(1, 4))
    C = int(rng.choice([8, 16, 32, 48]))
    V, T = int(rng.integers(20, 100)), int(rng.choice([16, 32, 64]))
    bias = bool(rng.integers(2))
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(n_layer):
        h = f"blocks.{i}"
        layer = {
            f"{h}.ln_1.weight": (C,),
            f"{h}.attn.c_attn.weight": (3 * C, C),
            f"{h}.attn.c_proj.weight": (C, C),
            f"{h}.ln_2.weight": (C,),
            f"{h}.mlp.c_fc.weight": (4 * C, C),
            f"{h}.mlp.c_proj.weight": (C, 4 * C),
        }
        if bias:
            layer.update(
                {
                    f"{h}.ln_1.bias": (C,),
                    f"{h}.attn.c_attn.bias": (3 * C,),
                    f"{h}.attn.c_proj.bias": (C,),
                    f"{h}.ln_2.bias": (C,),
                    f"{h}.mlp.c_fc.bias": (4 * C,),
                    f"{h}.mlp.c_proj.bias": (C,),
                }
            )
        shapes.update(layer)
    shapes["ln_f.weight"] = (C,)
    if bias:
        shapes["ln_f.bias"] = (C,)
    if rng.integers(2):  # an untied output head, and a learned scalar, now and then
        shapes["lm_head.weight"] = (V, C)
    if rng.integers(2):
        shapes["logit_scale"] = ()
    names = list(shapes)
    return {names[i]: shapes[names[i]] for i in rng.permutation(len(names))}


def _name_list(value, what: str, names) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise Wrong(f"{what} should be a list of parameter names, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise Wrong(f"{what} should hold parameter names (str), found {item!r}")
        if item not in names:
            raise Wrong(f"{what} holds {item!r}, which is not one of the parameter names given")
        out.append(item)
    return out


@exercise(
    "11.decay_groups",
    title="Which parameters get weight decay",
    points=2,
    answer="decay_groups",
    hints=(
        "Weight decay pulls weights towards zero. It belongs on the matrices that multiply "
        "activations (linear layers, embeddings), not on the biases and LayerNorm gains, which "
        "only shift or scale. The rule used by nanoGPT decides by shape alone.",
        "A parameter is decayed when its tensor has 2 or more dimensions: len(shape) >= 2. "
        "Everything else (1-D biases, LayerNorm weights, 0-D scalars) is not.",
        "decay = [n for n, s in shapes.items() if len(s) >= 2]; no_decay = [n for n, s in "
        "shapes.items() if len(s) < 2]; return decay, no_decay",
    ),
)
def _decay_groups(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "decay_groups"
    for _ in range(5):
        shapes = _gpt_shapes(rng)
        where = f"for a GPT with {len(shapes)} parameter tensors"
        got = expect_tuple(
            _call(answer, dict(shapes)), 2, "decay, no_decay", what=what, where=where
        )
        decay = _name_list(got[0], "decay (the first list)", shapes)
        no_decay = _name_list(got[1], "no_decay (the second list)", shapes)
        both = sorted(set(decay) & set(no_decay))
        if both:
            raise Wrong(
                f"{both[0]!r} is in both groups {where}: each parameter goes in exactly one"
            )
        missing = [n for n in shapes if n not in decay and n not in no_decay]
        if missing:
            raise Wrong(f"{missing[0]!r} is in neither group {where}: every parameter needs one")
        if len(decay) != len(set(decay)) or len(no_decay) != len(set(no_decay)):
            raise Wrong(f"a name appears twice in one group {where}")
        expected = {n for n, s in shapes.items() if len(s) >= 2}
        got_set = set(decay)
        if got_set == expected:
            continue
        if got_set == set(shapes) - expected:
            raise Wrong(f"the two groups are swapped {where}: return (decay, no_decay)")
        variants = {
            "decided by name ('weight' in the name): LayerNorm weights are 1-D gains and are "
            "not decayed; decide by the number of dimensions": {
                n for n in shapes if n.endswith("weight")
            },
            "excluded the embeddings (wte, wpe): that is minGPT's choice; here, as in nanoGPT, "
            "every tensor with 2 or more dimensions is decayed, embeddings included": {
                n for n in expected if not n.startswith(("wte.", "wpe."))
            },
            "decayed everything that is not a bias: LayerNorm weights (and scalars) are not "
            "decayed either; decide by the number of dimensions": {
                n for n in shapes if not n.endswith("bias")
            },
            "decayed only the 2-D weights of linear layers inside the blocks: embeddings and "
            "the output head are matrices too": {n for n in expected if n.startswith("blocks.")},
        }
        for mistake, variant in variants.items():
            if got_set == variant and variant != expected:
                raise Wrong(f"the decay group is wrong {where}: {mistake}")
        extra = sorted(got_set - expected)
        if extra:
            name = extra[0]
            raise Wrong(
                f"{name!r} (shape {shapes[name]}) should not be decayed {where}: it has fewer "
                "than 2 dimensions"
            )
        name = sorted(expected - got_set)[0]
        raise Wrong(
            f"{name!r} (shape {shapes[name]}) should be decayed {where}: it has 2 dimensions"
        )


# ---------------------------------------------------------------- 11.grad_clip


@exercise(
    "11.grad_clip",
    title="Clipping by the global gradient norm",
    points=2,
    answer="clip_by_global_norm",
    hints=(
        "The global norm treats all gradients as one long vector: the square root of the sum "
        "of squares of every entry of every array. All arrays are then scaled by the same "
        "factor, so the direction of the whole update is kept.",
        "total = sqrt(sum((g**2).sum() for g in grads)); factor = min(1, max_norm / (total + "
        "1e-6)); gradients below the limit are left as they are (factor 1, never > 1).",
        "return [g * factor for g in grads], total  (the norm measured BEFORE clipping, as "
        "torch.nn.utils.clip_grad_norm_ returns it)",
    ),
)
def _grad_clip(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "clip_by_global_norm"
    for case in ("clip", "clip", "keep", "clip"):
        grads = _random_grads(rng, scale=float(rng.uniform(0.3, 2.0)))
        norm = _global_norm(grads)
        if case == "clip":
            max_norm = float(norm * rng.uniform(0.1, 0.7))
        else:
            max_norm = float(norm * rng.uniform(1.3, 3.0))
        where = (
            f"for {len(grads)} gradient arrays of global norm {norm:.4g} and "
            f"max_norm={max_norm:.4g}"
        )
        got = expect_tuple(
            _call(answer, [g.copy() for g in grads], max_norm),
            2,
            "clipped_grads, total_norm",
            what,
            where,
        )
        if np.ndim(as_array(got[1], "total_norm")) != 0:
            raise Wrong(
                f"the second item should be total_norm, one number {where}: return the tuple "
                "(clipped_grads, total_norm)"
            )
        expected, _ = _clip(grads, max_norm)
        per_tensor = []
        for g in grads:
            n = float(np.sqrt((g**2).sum()))
            per_tensor.append(g * min(1.0, max_norm / (n + 1e-6)))
        mistakes = {
            "clipped each array by its own norm: the limit is on the global norm, one factor "
            "for all arrays": per_tensor,
            "took the norm as the sum of the arrays' norms; the global norm is the square "
            "root of the sum of ALL squares": [
                g * min(1.0, max_norm / sum(float(np.sqrt((h**2).sum())) for h in grads))
                for g in grads
            ],
            "forgot the square root: the global norm is sqrt(sum of squares)": [
                g * min(1.0, max_norm / norm**2) for g in grads
            ],
        }
        if case == "keep":
            mistakes[
                "scaled gradients that were already below max_norm up to it: the factor is "
                "min(1, max_norm / norm), clipping only ever shrinks"
            ] = [g * max_norm / norm for g in grads]
        _compare_grads(got[0], expected, name="clipped_grads", where=where, mistakes=mistakes)
        assert_close(
            got[1],
            norm,
            name="total_norm",
            rtol=1e-6,
            context=where,
            mistakes={
                "returned the norm after clipping: return the norm measured before, as "
                "torch.nn.utils.clip_grad_norm_ does (it tells how far over the limit the "
                "step was)": min(norm, max_norm),
                "returned the sum of squares: take its square root": norm**2,
            },
        )


# ---------------------------------------------------------------- 11.loss_scaling


def _scaler(scaled, scale, good, max_norm, interval, *, unscale_first=True, grow_at=None):
    """The reference, correct by default; the keywords reproduce typical mistakes."""
    if not all(np.isfinite(g).all() for g in scaled):
        return None, scale * 0.5, 0
    if unscale_first:
        grads, _ = _clip([g / scale for g in scaled], max_norm)
    else:
        clipped, _ = _clip(scaled, max_norm)
        grads = [g / scale for g in clipped]
    good += 1
    if good >= (interval if grow_at is None else grow_at):
        return grads, scale * 2.0, 0
    return grads, scale, good


@exercise(
    "11.loss_scaling",
    title="fp16 loss scaling: unscale, clip, skip on overflow, adapt the scale",
    points=3,
    answer="loss_scale_step",
    hints=(
        "The gradients arrive multiplied by `scale` (because the loss was). First look for "
        "inf or nan in any of them: then this step must be skipped (return None) and the "
        "scale halved, with the counter of good steps back to 0.",
        "Otherwise divide every gradient by `scale` BEFORE clipping (max_norm is meant for the "
        "true gradients), clip by the global norm, and count one more good step; after "
        "growth_interval good steps in a row, double the scale and restart the count.",
        "if not all(np.isfinite(g).all() for g in scaled_grads): return None, scale / 2, 0; "
        "grads = clip([g / scale for g in scaled_grads], max_norm); good_steps += 1; if "
        "good_steps == growth_interval: return grads, 2 * scale, 0; return grads, scale, "
        "good_steps",
    ),
)
def _loss_scaling(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "loss_scale_step"
    names = "grads, new_scale, new_good_steps"
    interval = int(rng.integers(3, 9))
    cases = ["clip", "keep", "overflow_inf", "grow", "clip", "overflow_nan", "keep"]
    for case in cases:
        scale = float(2.0 ** rng.integers(8, 17))
        true = _random_grads(rng, scale=float(10 ** rng.uniform(-4, -2)))
        norm = _global_norm(true)
        factor = rng.uniform(0.2, 0.6) if case in ("clip", "grow") else rng.uniform(1.5, 4)
        max_norm = float(norm * factor)
        scaled = [g * scale for g in true]
        good = interval - 1 if case == "grow" else int(rng.integers(0, interval - 1))
        if case.startswith("overflow"):
            bad = scaled[int(rng.integers(len(scaled)))]
            bad.flat[int(rng.integers(bad.size))] = np.inf if case == "overflow_inf" else np.nan
        where = (
            f"for scale=2**{int(math.log2(scale))}, good_steps={good}, "
            f"growth_interval={interval}, max_norm={max_norm:.3g}"
        )
        if case.startswith("overflow"):
            where += f" and an {'inf' if case == 'overflow_inf' else 'nan'} in one gradient"
        args = ([g.copy() for g in scaled], scale, good, max_norm, interval)
        got = expect_tuple(_call(answer, *args), 3, names, what=what, where=where)
        grads, new_scale, new_good = _scaler(scaled, scale, good, max_norm, interval)

        if grads is None:
            if got[0] is not None:
                raise Wrong(
                    f"a gradient is not finite {where}, so the step must be skipped: return "
                    "None for grads (an optimizer step with inf or nan would ruin the weights)"
                )
        elif got[0] is None:
            raise Wrong(f"returned None (skip the step) {where}, but every gradient is finite")
        else:
            mistakes = {
                "clipped before unscaling: max_norm is meant for the true gradients, so divide "
                "by scale first, then clip (GradScaler's unscale_ before clip_grad_norm_)": (
                    _scaler(scaled, scale, good, max_norm, interval, unscale_first=False)[0]
                ),
                "forgot to unscale: divide the gradients by scale": _clip(scaled, max_norm)[0],
                "multiplied by scale instead of dividing": _clip(
                    [g * scale for g in scaled], max_norm
                )[0],
                "forgot to clip": [g / scale for g in scaled],
            }
            _compare_grads(got[0], grads, name="grads", where=where, mistakes=mistakes)

        backoff = {
            "did not lower the scale after an overflow: halve it, so the next step has room": (
                scale
            ),
            "lowered the scale too much: GradScaler halves it (backoff factor 0.5)": scale / 4,
            "set the scale to 1 after an overflow: halve it": 1.0,
        }
        growth = {
            "did not grow the scale: once good_steps, counting this step, reaches "
            "growth_interval, double it (growing one step late?)": scale,
            "grew the scale by a factor other than 2": scale * 4,
        }
        early = {
            "grew the scale too early: double it only once good_steps, counting this step, "
            "reaches growth_interval": scale * 2
        }
        assert_close(
            got[1],
            new_scale,
            name="new_scale",
            rtol=1e-9,
            context=where,
            mistakes=backoff if grads is None else (growth if case == "grow" else early),
        )
        mistakes = {}
        if grads is None:
            mistakes["kept counting good steps after an overflow: reset the counter to 0"] = good
            mistakes["counted the overflow as a good step: reset the counter to 0"] = good + 1
        elif case == "grow":
            mistakes["did not restart the count after growing the scale: set it to 0"] = good + 1
        else:
            mistakes["did not count this good step: add 1 to good_steps"] = good
        assert_close(
            got[2], new_good, name="new_good_steps", rtol=0, atol=1e-9, context=where,
            mistakes=mistakes,
        )  # fmt: skip
    # A run of several steps, feeding the returned state back, catches an off-by-one growth.
    scale, good = 2.0**12, 0
    mine_scale, mine_good = scale, good
    for step in range(2 * interval + 2):
        true = _random_grads(rng, scale=1e-3)
        max_norm = 10.0
        scaled = [g * mine_scale for g in true]
        where = f"at step {step} of a run with growth_interval={interval} and no overflow"
        got = expect_tuple(
            _call(answer, scaled, mine_scale, mine_good, max_norm, interval),
            3,
            names,
            what=what,
            where=where,
        )
        _, scale, good = _scaler(scaled, mine_scale, mine_good, max_norm, interval)
        late = _scaler(scaled, mine_scale, mine_good, max_norm, interval, grow_at=interval + 1)
        early = _scaler(scaled, mine_scale, mine_good, max_norm, interval, grow_at=interval - 1)
        assert_close(
            got[1],
            scale,
            name="new_scale",
            rtol=1e-9,
            context=where,
            mistakes={
                "the scale grows one step late: double it as soon as good_steps (after counting "
                "this step) reaches growth_interval": late[1],
                "grew the scale too early: double it only once good_steps, counting this step, "
                "reaches growth_interval": early[1],
            },
        )
        mine_scale, mine_good = float(got[1]), int(got[2])


# ---------------------------------------------------------------- 11.mfu


def _mfu(tokens_per_s, n_params, n_layer, n_head, head_dim, block_size, peak):
    flops = 6 * n_params + 12 * n_layer * n_head * head_dim * block_size
    return tokens_per_s * flops / peak


@exercise(
    "11.mfu",
    title="Model FLOPs utilization",
    points=2,
    answer="mfu",
    hints=(
        "MFU = (FLOPs the model needs per second) / (the device's peak FLOP/s). The model needs "
        "FLOPs per token times tokens per second.",
        "Per token, training costs 6 N FLOPs for the weights (2 forward, 4 backward, per "
        "parameter) plus 12 * L * H * Q * T for attention (L layers, H heads, head size Q, "
        "context T). The peak is given in FLOP/s, not TFLOP/s. Without a peak (None) there is "
        "no MFU: return None.",
        "if peak_flops is None: return None; flops_per_token = 6 * n_params + 12 * n_layer * "
        "n_head * head_dim * block_size; return tokens_per_second * flops_per_token / "
        "peak_flops",
    ),
)
def _mfu_check(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(5):
        n_layer, n_head = int(rng.integers(2, 25)), int(rng.choice([4, 6, 8, 12, 16]))
        head_dim = int(rng.choice([32, 64, 128]))
        C = n_head * head_dim
        # a context T equal to C, 2C or C/2 would make the C-squared mistake (and its
        # factor-2 slips) give the right number: such a case could not name it
        T = int(rng.choice([T for T in (256, 384, 512, 1024, 2048) if T not in (C, 2 * C, C // 2)]))
        n_params = int(12 * n_layer * C**2 * rng.uniform(0.9, 1.3))
        peak = float(rng.choice([989e12, 312e12, 1979e12, 125e12]))
        want = float(rng.uniform(0.15, 0.6))
        attention = 12 * n_layer * n_head * head_dim * T
        tokens_per_s = float(want * peak / (6 * n_params + attention))
        args = (tokens_per_s, n_params, n_layer, n_head, head_dim, T, peak)
        where = (
            f"for {tokens_per_s:.4g} tokens/s, N={n_params}, L={n_layer}, H={n_head}, "
            f"Q={head_dim}, T={T}, peak {peak / 1e12:g} TFLOP/s"
        )
        got = _call(answer, *args)
        if got is None:
            raise Wrong(f"returned None {where}: with a known peak there is an MFU to compute")
        expected = _mfu(*args)
        assert_close(
            got,
            expected,
            name="mfu",
            rtol=1e-6,
            context=where,
            mistakes={
                "forgot the attention term 12 * L * H * Q * T: attention scores cost FLOPs that "
                "no parameter accounts for": tokens_per_s * 6 * n_params / peak,
                "counted the forward pass only (2 N + 4 L H Q T): training also runs the "
                "backward pass, twice the forward's cost, so 6 N + 12 L H Q T": tokens_per_s
                * (2 * n_params + attention / 3)
                / peak,
                "used 2 N instead of 6 N: the backward pass costs twice the forward": (
                    tokens_per_s * (2 * n_params + attention) / peak
                ),
                "returned a percentage: return the fraction (0.4, not 40)": 100 * expected,
                "mixed up TFLOP/s and FLOP/s: peak_flops is already in FLOP/s": expected * 1e12,
                "mixed up FLOP/s and TFLOP/s: peak_flops is already in FLOP/s": expected / 1e12,
                "used C = H * Q squared for the attention term; it is linear in the context: "
                "12 * L * H * Q * T": tokens_per_s * (6 * n_params + 12 * n_layer * C * C) / peak,
            },
        )
    args = (1000.0, 10_000, 2, 4, 16, 64, None)
    try:
        got = _call(answer, *args)
    except Wrong as error:
        raise Wrong(
            "when peak_flops is None (a CPU, or a GPU whose peak is unknown) mfu should return "
            f"None, but {error}"
        ) from error
    if got is not None:
        raise Wrong(
            f"mfu returned {got!r} for peak_flops=None: without a known peak there is no MFU, "
            "return None"
        )


# ---------------------------------------------------------------- 11.update_ratio


def _log_ratio(before, after):
    return float(np.log10(np.linalg.norm(after - before) / np.linalg.norm(before)))


@exercise(
    "11.update_ratio",
    title="The update-to-data ratio",
    points=2,
    answer="update_ratios",
    hints=(
        "For each parameter compare the size of this step's change with the size of the "
        "parameter itself: how much of it did one step rewrite?",
        "ratio = ||after - before|| / ||before|| with the Frobenius (root of the sum of "
        "squares) norm over the whole tensor, then log10 of it; one float per name.",
        "return {name: float(np.log10(np.linalg.norm(after[name] - before[name]) / "
        "np.linalg.norm(before[name]))) for name in before}",
    ),
)
def _update_ratio(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(4):
        names = [f"h.{i}.{part}" for i in range(int(rng.integers(1, 3))) for part in ("w", "b")]
        before = {n: rng.normal(scale=rng.uniform(0.02, 1), size=_shape(rng, n)) for n in names}
        after = {
            n: p + rng.normal(scale=10 ** rng.uniform(-4.5, -1.5), size=p.shape)
            for n, p in before.items()
        }
        where = f"for parameters {names}"
        got = _call(
            answer,
            {n: p.copy() for n, p in before.items()},
            {n: p.copy() for n, p in after.items()},
        )
        if is_stub(got):
            raise NotAttempted
        if got is None:
            raise Wrong("update_ratios returned None: is a `return` missing?")
        if not isinstance(got, dict):
            raise Wrong(f"update_ratios should return a dict {{name: log10 ratio}}, got "
                        f"{type(got).__name__}")  # fmt: skip
        if set(got) != set(names):
            raise Wrong(
                f"update_ratios should have exactly the keys {names}, got {sorted(got)} {where}"
            )
        for n in names:
            b, a = before[n], after[n]
            assert_close(
                got[n],
                _log_ratio(b, a),
                name=f"the ratio of {n!r}",
                rtol=1e-6,
                context=where,
                mistakes={
                    "forgot the log10: report log10 of the ratio": 10 ** _log_ratio(b, a),
                    "used the natural log: report log10": math.log(10) * _log_ratio(b, a),
                    "divided by the parameter after the step; divide by the one before": float(
                        np.log10(np.linalg.norm(a - b) / np.linalg.norm(a))
                    ),
                    "took the difference of the norms, not the norm of the difference": float(
                        np.log10(abs(np.linalg.norm(a) - np.linalg.norm(b)) / np.linalg.norm(b))
                    ),
                    "used the mean absolute value instead of the norm": float(
                        np.log10(np.abs(a - b).mean() / np.abs(b).mean())
                    ),
                    "used the standard deviation instead of the norm": float(
                        np.log10((a - b).std() / b.std())
                    ),
                    "inverted the ratio: update over data, not data over update": -_log_ratio(b, a),
                },
            )


def _shape(rng, name):
    if name.endswith(".b"):
        return (int(rng.integers(3, 10)),)
    return (int(rng.integers(3, 10)), int(rng.integers(3, 10)))


# ---------------------------------------------------------------- 11.top_k_sampling


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _top_k_probs(
    logits, temperature, top_k, *, multiply=False, softmax_first=False, shift=0, smallest=False
):
    """The reference, correct by default; the keywords reproduce typical mistakes."""
    z = logits * temperature if multiply else logits / temperature
    if top_k is None:
        return _softmax(z)
    k = max(1, min(top_k + shift, z.shape[-1]))
    if smallest:
        keep = z <= np.sort(z, axis=-1)[:, k - 1][:, None]
    else:
        keep = z >= np.sort(z, axis=-1)[:, -k][:, None]
    if softmax_first:
        return np.where(keep, _softmax(z), 0.0)
    return _softmax(np.where(keep, z, -np.inf))


@exercise(
    "11.top_k_sampling",
    title="Temperature and top-k: the distribution to sample from",
    points=3,
    answer="top_k_probs",
    hints=(
        "Three steps, in this order: divide the logits by the temperature; keep only the k "
        "largest per row (set the others to -inf); softmax. A temperature below 1 sharpens the "
        "distribution, above 1 flattens it.",
        "torch.topk(logits, k).values[:, [-1]] is each row's k-th largest value: everything "
        "strictly below it becomes -inf (masked_fill). softmax(-inf) = 0, and the kept entries "
        "are renormalised automatically. Use k = min(top_k, V); with top_k None keep all.",
        "z = logits / temperature; if top_k is not None: kth = torch.topk(z, min(top_k, "
        "z.size(-1))).values[:, [-1]]; z = z.masked_fill(z < kth, float('-inf')); return "
        "torch.softmax(z, dim=-1)",
    ),
)
def _top_k_sampling(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    import torch

    cases = [(0.5, 3), (1.0, 5), (1.7, 1), (0.8, None), (1.3, 10), (2.0, 200)]
    for temperature, top_k in cases:
        B, V = int(rng.integers(2, 5)), int(rng.integers(12, 40))
        logits = rng.normal(scale=2.0, size=(B, V))
        temperature = float(temperature * rng.uniform(0.9, 1.1))
        where = f"for logits of shape ({B}, {V}), temperature={temperature:.3g}, top_k={top_k}"
        try:
            got = _call(answer, torch.tensor(logits, dtype=torch.float64), temperature, top_k)
        except Wrong as wrong:
            # The message would repeat the whole logits tensor: say which case it was instead.
            text = str(wrong).split(" when called as ")[0]
            wrong = Wrong(f"{text} {where}")
            if top_k is not None and top_k > V:
                raise Wrong(f"{wrong}. When top_k exceeds the vocabulary, keep every token: "
                            "k = min(top_k, V)") from None  # fmt: skip
            raise wrong from None
        got_array = as_array(got, "top_k_probs(...)")
        if got_array.shape == (B, V) and np.isneginf(got_array).any():
            raise Wrong(
                f"your answer holds -inf {where}: return probabilities (the softmax of the "
                "filtered logits), not the filtered logits"
            )
        expected = _top_k_probs(logits, temperature, top_k)
        mistakes = {
            "multiplied the logits by the temperature; divide them (T < 1 must sharpen)": (
                _top_k_probs(logits, temperature, top_k, multiply=True)
            ),
        }
        if top_k is not None and top_k < V:
            mistakes.update(
                {
                    "took the softmax before filtering: the kept probabilities no longer sum "
                    "to 1; set the other logits to -inf, then softmax": _top_k_probs(
                        logits, temperature, top_k, softmax_first=True
                    ),
                    "kept one token too many: exactly top_k survive per row": _top_k_probs(
                        logits, temperature, top_k, shift=1
                    ),
                    "kept the k smallest logits: keep the k largest": _top_k_probs(
                        logits, temperature, top_k, smallest=True
                    ),
                }
            )
            if top_k > 1:
                mistakes["kept one token too few (compared with > instead of >=?): exactly "
                         "top_k survive per row"] = _top_k_probs(
                    logits, temperature, top_k, shift=-1
                )  # fmt: skip
            mistakes["ignored top_k: only the top_k largest logits may have probability > 0"] = (
                _softmax(logits / temperature)
            )
        try:
            assert_close(
                got_array,
                expected,
                name="top_k_probs(...)",
                rtol=1e-5,
                atol=1e-7,
                context=where,
                mistakes=mistakes,
            )
        except Wrong as wrong:
            sums = got_array.sum(axis=-1) if got_array.shape == (B, V) else None
            if (
                "common mistake" not in str(wrong)
                and sums is not None
                and not np.allclose(sums, 1, atol=1e-5)
            ):
                raise Wrong(
                    f"{wrong}. Each row should sum to 1; yours sum to {sums.round(4)}"
                ) from None
            raise
