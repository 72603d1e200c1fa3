"""Lesson 08, optimizers: momentum, RMSprop, Adam, the stable learning rate, warmup + cosine.

Each optimizer exercise is checked twice: single steps from random states (so that a
mistake can be named from the same inputs), then a whole run of steps from a zero
state on a random quadratic, feeding the learner's returned state back in, against
a numpy reference that follows ``torch.optim`` exactly.
"""

from __future__ import annotations

import math

import numpy as np

from backprop_course.compare import (
    NotAttempted,
    Wrong,
    assert_close,
    call_each,
    expect_tuple,
    is_stub,
)
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules, probe_under_rules, refuse_reference

# Each exercise asks for an update rule or a schedule written out: the package's optimizers
# and schedules (backprop_course.optim), torch's, and this module's own references are the
# answers, not a way to compute them.
FORBIDDEN = (
    "backprop_course.optim",
    "backprop_course.exercises.lesson08",
    "torch.optim.SGD",
    "torch.optim.RMSprop",
    "torch.optim.Adam",
    "torch.optim.AdamW",
    "torch.optim.lr_scheduler",
)


def _call(answer, *args):
    """The learner's function, with the package's and torch's optimizers refused."""
    refuse_reference(answer, ("backprop_course.optim.warmup_cosine",))
    # watched where loaded: these numpy checks need not import torch
    return call_under_rules(answer, *args, forbid=FORBIDDEN)


def _shape(rng):
    return [(int(rng.integers(2, 7)),), (int(rng.integers(2, 4)), int(rng.integers(2, 4)))][
        int(rng.integers(2))
    ]


class _Quadratic:
    """f(p) = 0.5 * sum(h * (p - c)**2): a bowl with different curvatures per coordinate."""

    def __init__(self, rng, shape):
        self.h = rng.uniform(0.2, 5.0, size=shape)
        self.c = rng.normal(size=shape)

    def grad(self, p):
        return self.h * (p - self.c)


def _run_sequence(answer, rng, what, steps, reference, unpack_args, names):
    """Feed the learner's returned state back for ``steps`` steps on a quadratic."""
    shape = _shape(rng)
    bowl = _Quadratic(rng, shape)
    p0 = rng.normal(scale=2.0, size=shape)
    state = reference.start(p0)
    mine = reference.start(p0)
    for step in range(1, steps + 1):
        g = bowl.grad(state[0]) + rng.normal(scale=0.05, size=shape)  # a noisy gradient
        expected = reference.step(state, g, step)
        args = unpack_args([np.array(x, dtype=float, copy=True) for x in mine], g.copy(), step)
        got = expect_tuple(
            _call(answer, *args),
            len(expected),
            names,
            what,
            f"at step {step} of a run",
        )
        where = f"at step {step} of a {steps}-step run from a zero state on a quadratic loss"
        for name, g_value, e_value in zip(names.split(", "), got, expected):
            assert_close(g_value, e_value, name=f"the returned {name}", rtol=1e-7, context=where)
        state = expected
        mine = [np.asarray(x, dtype=float) for x in got]


# ---------------------------------------------------------------- 08.sgd_momentum_step


class _MomentumReference:
    def __init__(self, lr, mu):
        self.lr, self.mu = lr, mu

    def start(self, p0):
        return [p0.copy(), np.zeros_like(p0)]

    def step(self, state, g, t):
        p, v = state
        v = self.mu * v + g
        return [p - self.lr * v, v]


@exercise(
    "08.sgd_momentum_step",
    title="SGD with momentum (the torch convention)",
    points=2,
    answer="sgd_momentum_step",
    hints=(
        "The velocity is a running sum of gradients in which older ones fade by a factor mu "
        "per step: first update v, then move p along the new v.",
        "v_new = mu * v + g (the full gradient, no lr and no 1 - mu); the step is lr * v_new, "
        "taken downhill.",
        "v_new = mu * v + g; p_new = p - lr * v_new; return p_new, v_new.",
    ),
)
def _sgd_momentum_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "sgd_momentum_step"
    for _ in range(6):
        shape = _shape(rng)
        p, g = rng.normal(size=shape), rng.normal(size=shape)
        v = rng.normal(size=shape)
        lr, mu = float(rng.uniform(0.01, 0.3)), float(rng.uniform(0.5, 0.95))
        where = f"for lr={lr:.3g}, mu={mu:.3g} and a velocity v that is not zero"
        got = expect_tuple(
            _call(answer, p.copy(), g.copy(), v.copy(), lr, mu),
            2,
            "p_new, v_new",
            what,
            where,
        )
        v_new = mu * v + g
        assert_close(
            got[1],
            v_new,
            name="v_new",
            rtol=1e-7,
            context=where,
            mistakes={
                "forgot to carry the velocity: v_new = mu * v + g, not just g": g,
                "put lr inside the velocity (v = mu v + lr g, p -= v): that is the other "
                "convention; here v follows torch, v = mu v + g and p -= lr v": mu * v + lr * g,
                "averaged instead of summed: torch's momentum adds the full gradient, "
                "v = mu v + g, not mu v + (1 - mu) g": mu * v + (1 - mu) * g,
                "sign error in the velocity: v = mu v + g": mu * v - g,
                "returned the new parameters where the velocity should be: return (p_new, v_new)": p
                - lr * v_new,
            },
        )
        assert_close(
            got[0],
            p - lr * v_new,
            name="p_new",
            rtol=1e-7,
            context=where,
            mistakes={
                "sign error: step downhill, p - lr * v_new": p + lr * v_new,
                "moved p along the old velocity: update v first, then p -= lr * v_new": p - lr * v,
                "forgot to carry the velocity: the step is lr * (mu v + g), not lr * g": p - lr * g,
                "put lr inside the velocity (v = mu v + lr g, p -= v): that is the other "
                "convention; here v follows torch, v = mu v + g and p -= lr v": p
                - (mu * v + lr * g),
                "forgot the learning rate: p - lr * v_new": p - v_new,
            },
        )
    lr, mu = float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.5, 0.9))
    _run_sequence(
        answer,
        rng,
        what,
        25,
        _MomentumReference(lr, mu),
        lambda state, g, t: (state[0], g, state[1], lr, mu),
        "p_new, v_new",
    )


# ---------------------------------------------------------------- 08.rmsprop_step


class _RMSpropReference:
    def __init__(self, lr, alpha, eps):
        self.lr, self.alpha, self.eps = lr, alpha, eps

    def start(self, p0):
        return [p0.copy(), np.zeros_like(p0)]

    def step(self, state, g, t):
        p, s = state
        s = self.alpha * s + (1 - self.alpha) * g**2
        return [p - self.lr * g / (np.sqrt(s) + self.eps), s]


@exercise(
    "08.rmsprop_step",
    title="RMSprop: divide by a running root-mean-square",
    points=2,
    answer="rmsprop_step",
    hints=(
        "s is an exponential moving average of the squared gradient; each coordinate's step "
        "is divided by the square root of its own s.",
        "s_new = alpha * s + (1 - alpha) * g**2; the step is lr * g / (sqrt(s_new) + eps), "
        "with eps outside the square root (as torch does).",
        "s_new = alpha * s + (1 - alpha) * g**2; p_new = p - lr * g / (np.sqrt(s_new) + eps); "
        "return p_new, s_new.",
    ),
)
def _rmsprop_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "rmsprop_step"
    for _ in range(6):
        shape = _shape(rng)
        p = rng.normal(size=shape)
        g = rng.normal(size=shape) * 10 ** rng.uniform(-1.5, 0, size=shape)
        s = rng.uniform(0.001, 0.5, size=shape)
        lr, alpha = float(rng.uniform(0.001, 0.05)), float(rng.uniform(0.8, 0.99))
        eps = float(10 ** rng.uniform(-3, -2))  # large enough to tell where it goes
        where = f"for lr={lr:.3g}, alpha={alpha:.3g}, eps={eps:.2g}"
        got = expect_tuple(
            _call(answer, p.copy(), g.copy(), s.copy(), lr, alpha, eps),
            2,
            "p_new, s_new",
            what,
            where,
        )
        s_new = alpha * s + (1 - alpha) * g**2
        assert_close(
            got[1],
            s_new,
            name="s_new",
            rtol=1e-7,
            context=where,
            mistakes={
                "used the gradient instead of its square: s averages g**2": alpha * s
                + (1 - alpha) * g,
                "alpha and 1 - alpha swapped: the old average keeps the weight alpha, "
                "s = alpha s + (1 - alpha) g**2": (1 - alpha) * s + alpha * g**2,
                "forgot the factor (1 - alpha) on g**2": alpha * s + g**2,
                "forgot to carry the average: s_new = alpha s + (1 - alpha) g**2": (1 - alpha)
                * g**2,
            },
        )
        step = lr * g / (np.sqrt(s_new) + eps)
        assert_close(
            got[0],
            p - step,
            name="p_new",
            rtol=1e-7,
            context=where,
            mistakes={
                "forgot the square root: divide by sqrt(s_new) + eps, not s_new + eps": p
                - lr * g / (s_new + eps),
                "eps inside the square root: torch adds it after, sqrt(s_new) + eps": p
                - lr * g / np.sqrt(s_new + eps),
                "divided by the old s: update s first, then use s_new": p
                - lr * g / (np.sqrt(s) + eps),
                "sign error: step downhill, p - lr * g / (sqrt(s_new) + eps)": p + step,
                "forgot the learning rate": p - g / (np.sqrt(s_new) + eps),
            },
        )
    lr, alpha = float(rng.uniform(0.005, 0.05)), float(rng.uniform(0.9, 0.99))
    eps = float(10 ** rng.uniform(-8, -3))
    _run_sequence(
        answer,
        rng,
        what,
        25,
        _RMSpropReference(lr, alpha, eps),
        lambda state, g, t: (state[0], g, state[1], lr, alpha, eps),
        "p_new, s_new",
    )


# ---------------------------------------------------------------- 08.adam_step


def _adam(p, g, m, v, t, lr, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


class _AdamReference:
    def __init__(self, lr, b1, b2, eps):
        self.args = (lr, b1, b2, eps)

    def start(self, p0):
        return [p0.copy(), np.zeros_like(p0), np.zeros_like(p0)]

    def step(self, state, g, t):
        p, m, v = state
        return list(_adam(p, g, m, v, t, *self.args))


@exercise(
    "08.adam_step",
    title="Adam, with bias correction",
    points=3,
    answer="adam_step",
    hints=(
        "Adam keeps two moving averages: m of the gradient (beta1) and v of the squared "
        "gradient (beta2). Both start at zero, so early on they are too small by a factor "
        "1 - beta**t: divide that out before using them.",
        "m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g**2; m_hat = m / (1 - beta1**t), "
        "v_hat = v / (1 - beta2**t) with t = 1 on the first step; return the uncorrected m and v "
        "as the new state.",
        "Then p_new = p - lr * m_hat / (np.sqrt(v_hat) + eps); return p_new, m, v.",
    ),
)
def _adam_step(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    what = "adam_step"
    for t in (1, 2, int(rng.integers(3, 8)), int(rng.integers(10, 60))):
        shape = _shape(rng)
        p = rng.normal(size=shape)
        g = rng.normal(size=shape) * 10 ** rng.uniform(-1, 0, size=shape)
        m = rng.normal(scale=0.3, size=shape) if t > 1 else np.zeros(shape)
        v = rng.uniform(0.01, 0.5, size=shape) if t > 1 else np.zeros(shape)
        lr = float(rng.uniform(0.001, 0.1))
        b1, b2 = float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.98, 0.999))
        eps = float(10 ** rng.uniform(-3, -2))
        where = f"at step t={t} with lr={lr:.3g}, beta1={b1:.3g}, beta2={b2:.4g}, eps={eps:.2g}"
        args = (p.copy(), g.copy(), m.copy(), v.copy(), t, lr, b1, b2, eps)
        got = expect_tuple(_call(answer, *args), 3, "p_new, m, v", what, where)
        if t == 1 and not np.isfinite(np.asarray(got[0], dtype=float)).all():
            raise Wrong(
                f"p_new contains nan or inf {where}: the bias correction divides by "
                "1 - beta**t with t = 1 on the first step; 1 - beta**(t - 1) = 0 there "
                "(t counts from 1, not 0)"
            )
        p_new, m_new, v_new = _adam(p, g, m, v, t, lr, b1, b2, eps)
        swapped = _adam(p, g, m, v, t, lr, b2, b1, eps)
        assert_close(
            got[1],
            m_new,
            name="the returned m",
            rtol=1e-7,
            context=where,
            mistakes={
                "beta1 and beta2 swapped: m uses beta1 (about 0.9), v uses beta2": swapped[1],
                "returned the bias-corrected m_hat as the state: keep m itself and correct a "
                "copy on every step": m_new / (1 - b1**t),
                "forgot the factor (1 - beta1) on g": b1 * m + g,
            },
        )
        assert_close(
            got[2],
            v_new,
            name="the returned v",
            rtol=1e-7,
            context=where,
            mistakes={
                "beta1 and beta2 swapped: m uses beta1 (about 0.9), v uses beta2": swapped[2],
                "returned the bias-corrected v_hat as the state: keep v itself and correct a "
                "copy on every step": v_new / (1 - b2**t),
                "used the gradient instead of its square in v": b2 * v + (1 - b2) * g,
            },
        )
        step = lr * m_new / (np.sqrt(v_new) + eps)
        mistakes = {
            "no bias correction: divide m by 1 - beta1**t and v by 1 - beta2**t": p - step,
            "bias correction off by one: t is already this step's number (1 on the first "
            "step), so use 1 - beta**t, not 1 - beta**(t + 1)": p
            - lr * (m_new / (1 - b1 ** (t + 1))) / (np.sqrt(v_new / (1 - b2 ** (t + 1))) + eps),
            "eps inside the square root: torch adds it after, sqrt(v_hat) + eps": p
            - lr * (m_new / (1 - b1**t)) / np.sqrt(v_new / (1 - b2**t) + eps),
            "forgot the square root of v_hat": p
            - lr * (m_new / (1 - b1**t)) / (v_new / (1 - b2**t) + eps),
            "sign error: step downhill, p - lr * m_hat / (sqrt(v_hat) + eps)": 2 * p - p_new,
            "corrected only m, not v": p - lr * (m_new / (1 - b1**t)) / (np.sqrt(v_new) + eps),
        }
        if t > 1:
            mistakes[
                "counted steps from 0: the bias correction uses 1 - beta**t with t = 1 on the "
                "first step, not 1 - beta**(t - 1)"
            ] = p - lr * (m_new / (1 - b1 ** (t - 1))) / (
                np.sqrt(v_new / (1 - b2 ** (t - 1))) + eps
            )
        assert_close(got[0], p_new, name="p_new", rtol=1e-7, context=where, mistakes=mistakes)
    lr = float(rng.uniform(0.01, 0.1))
    b1, b2 = float(rng.uniform(0.85, 0.95)), float(rng.uniform(0.99, 0.999))
    eps = float(10 ** rng.uniform(-8, -4))
    _run_sequence(
        answer,
        rng,
        what,
        30,
        _AdamReference(lr, b1, b2, eps),
        lambda state, g, t: (state[0], g, state[1], state[2], t, lr, b1, b2, eps),
        "p_new, m, v",
    )


# ---------------------------------------------------------------- 08.max_stable_lr


def _random_spd(rng, n):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigenvalues = 10 ** rng.uniform(-1, 2, size=n)
    return (q * eigenvalues) @ q.T, eigenvalues


@exercise(
    "08.max_stable_lr",
    title="The largest learning rate that does not diverge",
    points=2,
    answer="max_stable_lr",
    hints=(
        "Write the quadratic in the eigenvector basis of H: each direction with curvature "
        "lambda evolves on its own, multiplied by (1 - lr * lambda) every step.",
        "A direction shrinks only if |1 - lr * lambda| < 1, that is 0 < lr < 2 / lambda; every "
        "direction must shrink, so the stiffest one (largest lambda) decides.",
        "Return 2 / np.linalg.eigvalsh(H).max().",
    ),
)
def _max_stable_lr(answer, rng):
    for _ in range(6):
        n = int(rng.integers(2, 6))
        H, eigenvalues = _random_spd(rng, n)
        got = _call(answer, H.copy())
        big, small = eigenvalues.max(), eigenvalues.min()
        assert_close(
            got,
            2 / big,
            name="max_stable_lr(H)",
            rtol=1e-6,
            context=f"for a {n}x{n} H with eigenvalues {np.sort(eigenvalues).round(3).tolist()}",
            mistakes={
                "1 / lambda_max is the rate that empties the stiffest direction in one step; "
                "divergence starts at 2 / lambda_max": 1 / big,
                "used the smallest eigenvalue: the stiffest direction (largest curvature) "
                "diverges first": 2 / small,
                "1 / lambda_min: the largest eigenvalue decides, and the limit is 2 / lambda": 1
                / small,
                "used the largest diagonal entry of H instead of its largest eigenvalue": 2
                / np.diag(H).max(),
                "used the trace (the sum of all eigenvalues) instead of the largest one": 2
                / np.trace(H),
                "returned the largest eigenvalue itself, not the learning rate 2 / lambda_max": big,
            },
        )


# ---------------------------------------------------------------- 08.warmup_cosine


def _schedule(step, total, warmup, max_lr, min_lr, *, ramp="next", after="cosine", floor=True):
    """The schedule, correct by default; the keywords reproduce typical mistakes."""
    low = min_lr if floor else 0.0
    if step < warmup:
        if ramp == "flat":
            return max_lr
        return max_lr * ((step + 1) if ramp == "next" else step) / warmup
    if step >= total and after != "no_clamp":
        return low
    start = 0 if after == "whole" else warmup
    progress = (step - start) / max(1, total - start)
    if after == "linear":
        return max_lr + (low - max_lr) * progress
    return low + 0.5 * (max_lr - low) * (1 + math.cos(math.pi * progress))


@exercise(
    "08.warmup_cosine",
    title="A learning-rate schedule: linear warmup, then cosine decay",
    points=2,
    answer="warmup_cosine",
    hints=(
        "Two phases: for step < warmup_steps the rate climbs in a straight line to max_lr; "
        "after that, half a cosine period takes it from max_lr down to min_lr at total_steps, "
        "where it stays.",
        "Warmup: max_lr * (step + 1) / warmup_steps. Decay: progress = (step - warmup_steps) / "
        "(total_steps - warmup_steps) runs from 0 to 1, and "
        "min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * progress)) goes from max_lr to min_lr.",
        "if step < warmup_steps: return max_lr * (step + 1) / warmup_steps; if step >= "
        "total_steps: return min_lr; otherwise return the cosine formula of hint 2.",
    ),
)
def _warmup_cosine(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    refuse_reference(answer, ("backprop_course.optim.warmup_cosine",))
    configs = []
    for warmup_kind in ("some", "some", "none"):
        total = int(rng.integers(30, 120))
        warmup = int(rng.integers(3, total // 3)) if warmup_kind == "some" else 0
        max_lr = float(10 ** rng.uniform(-4, -1))
        min_lr = float(max_lr * rng.uniform(0.02, 0.3))
        configs.append((total, warmup, max_lr, min_lr))
    for total, warmup, max_lr, min_lr in configs:
        steps = range(total + 6)
        calls = [(step, total, warmup, max_lr, min_lr) for step in steps]
        # every step in one go (one round trip when graded), under the same rules as _call
        got = probe_under_rules(call_each, answer, calls, forbid=FORBIDDEN)
        if any(is_stub(value) for value in got):
            raise NotAttempted
        if len(got) < len(calls):  # that call raised: repeat it alone to report the error
            _call(answer, *calls[len(got)])
            raise Wrong(
                f"warmup_cosine raised an error at step {len(got)} when called for every step "
                f"of a run, but not when called again alone: does it keep state between calls?"
            )
        if any(value is None for value in got):
            step = next(s for s, value in zip(steps, got) if value is None)
            raise Wrong(f"warmup_cosine returned None for step {step}: is a `return` missing?")
        try:
            got_array = np.array([float(value) for value in got])
        except (TypeError, ValueError) as error:
            raise Wrong(
                "warmup_cosine should return one number (the learning rate) per step, got "
                f"{type(got[0]).__name__} for step 0"
            ) from error

        def schedule(
            total=total, warmup=warmup, max_lr=max_lr, min_lr=min_lr, steps=steps, **options
        ):
            return [_schedule(s, total, warmup, max_lr, min_lr, **options) for s in steps]

        mistakes = {
            "warmup starts at max_lr: during the first warmup_steps the rate climbs linearly, "
            "max_lr * (step + 1) / warmup_steps": schedule(ramp="flat"),
            "cosine over the whole run instead of after warmup: the decay's progress is "
            "(step - warmup_steps) / (total_steps - warmup_steps)": schedule(after="whole"),
            "ends at 0 instead of min_lr: the cosine runs from max_lr down to min_lr, "
            "min_lr + 0.5 (max_lr - min_lr)(1 + cos(pi progress))": schedule(floor=False),
            "the warmup is one step late: step 0 should already use max_lr / warmup_steps, "
            "max_lr * (step + 1) / warmup_steps (a step with lr = 0 is wasted)": schedule(
                ramp="zero"
            ),
            "after total_steps the rate must stay at min_lr; the cosine rises again past the "
            "end": schedule(after="no_clamp"),
            "decays in a straight line; the decay follows half a cosine": schedule(after="linear"),
        }
        assert_close(
            got_array,
            schedule(),
            name="the schedule (warmup_cosine at steps 0, 1, ...)",
            rtol=1e-7,
            atol=1e-12,
            context=f"for total_steps={total}, warmup_steps={warmup}, max_lr={max_lr:.3g}, "
            f"min_lr={min_lr:.3g} (steps 0 to {total + 5})",
            mistakes=mistakes,
        )
