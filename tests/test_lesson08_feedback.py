"""Lesson 08: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback import lesson_feedback_tests


def make_momentum(*, carry=True, lr_inside=False, sign=-1.0, old_v=False, damp=False):
    """sgd_momentum_step, correct by default; the keywords reproduce typical mistakes."""

    def sgd_momentum_step(p, g, v, lr, mu):
        if lr_inside:
            v_new = mu * v + lr * g
            return p - v_new, v_new
        v_new = (mu * v if carry else 0) + ((1 - mu) * g if damp else g)
        return p + sign * lr * (v if old_v else v_new), v_new

    return sgd_momentum_step


def momentum_in_place(p, g, v, lr, mu):
    v *= mu
    v += g
    p -= lr * v
    return p, v


def make_rmsprop(*, sqrt=True, eps_inside=False, square=True, swap=False, old_s=False):
    def rmsprop_step(p, g, s, lr, alpha, eps):
        a = 1 - alpha if swap else alpha
        s_new = a * s + (1 - a) * (g**2 if square else g)
        s_used = s if old_s else s_new
        if eps_inside:
            denominator = np.sqrt(s_used + eps)
        else:
            denominator = (np.sqrt(s_used) if sqrt else s_used) + eps
        return p - lr * g / denominator, s_new

    return rmsprop_step


def make_adam(*, correct=True, t_shift=0, swap=False, return_hat=False, eps_inside=False):
    def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
        b1, b2 = (beta2, beta1) if swap else (beta1, beta2)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        k = t + t_shift
        m_hat = m / (1 - b1**k) if correct else m
        v_hat = v / (1 - b2**k) if correct else v
        if eps_inside:
            p_new = p - lr * m_hat / np.sqrt(v_hat + eps)
        else:
            p_new = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        if return_hat:
            return p_new, m_hat, v_hat
        return p_new, m, v

    return adam_step


def adam_torch(p, g, m, v, t, lr, beta1, beta2, eps):
    """torch.optim.Adam's own arithmetic: the step size carries the corrections."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    step_size = lr / (1 - beta1**t)
    denominator = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
    return p - step_size * m / denominator, m, v


def make_schedule(*, ramp="next", after="cosine", floor=True, clamp=True):
    def warmup_cosine(step, total_steps, warmup_steps, max_lr, min_lr):
        low = min_lr if floor else 0.0
        if step < warmup_steps:
            if ramp == "flat":
                return max_lr
            return max_lr * (step + (1 if ramp == "next" else 0)) / warmup_steps
        if step >= total_steps and clamp:
            return low
        start = 0 if after == "whole" else warmup_steps
        progress = (step - start) / (total_steps - start)
        if after == "linear":
            return max_lr + (low - max_lr) * progress
        return low + 0.5 * (max_lr - low) * (1 + math.cos(math.pi * progress))

    return warmup_cosine


def schedule_numpy(step, total_steps, warmup_steps, max_lr, min_lr):
    """Another correct form: np.clip for the progress, np.cos."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = np.clip((step - warmup_steps) / (total_steps - warmup_steps), 0, 1)
    return min_lr + (max_lr - min_lr) * (1 + np.cos(np.pi * progress)) / 2


CORRECT_ANSWERS = {
    "08.sgd_momentum_step": make_momentum(),
    "08.rmsprop_step": make_rmsprop(),
    "08.adam_step": make_adam(),
    "08.max_stable_lr": lambda H: 2 / np.linalg.eigvalsh(H).max(),
    "08.warmup_cosine": make_schedule(),
}

ALSO_CORRECT = [
    ("08.sgd_momentum_step", momentum_in_place),
    ("08.sgd_momentum_step", lambda p, g, v, lr, mu: [p - lr * (mu * v + g), mu * v + g]),
    ("08.adam_step", adam_torch),
    ("08.max_stable_lr", lambda H: float(2 / np.abs(np.linalg.eigvals(H)).max())),
    ("08.max_stable_lr", lambda H: 2 / np.linalg.norm(H, 2)),
    ("08.warmup_cosine", schedule_numpy),
]

WRONG_ANSWERS = [
    ("08.sgd_momentum_step", make_momentum(carry=False), "forgot to carry the velocity"),
    ("08.sgd_momentum_step", make_momentum(lr_inside=True), "lr inside the velocity"),
    ("08.sgd_momentum_step", make_momentum(sign=1.0), "sign error"),
    ("08.sgd_momentum_step", make_momentum(old_v=True), "old velocity"),
    ("08.sgd_momentum_step", make_momentum(damp=True), "averaged instead of summed"),
    ("08.sgd_momentum_step", lambda p, g, v, lr, mu: p - lr * (mu * v + g), "tuple"),
    ("08.rmsprop_step", make_rmsprop(sqrt=False), "forgot the square root"),
    ("08.rmsprop_step", make_rmsprop(eps_inside=True), "eps inside the square root"),
    ("08.rmsprop_step", make_rmsprop(square=False), "instead of its square"),
    ("08.rmsprop_step", make_rmsprop(swap=True), "alpha and 1 - alpha swapped"),
    ("08.rmsprop_step", make_rmsprop(old_s=True), "divided by the old s"),
    ("08.adam_step", make_adam(correct=False), "no bias correction"),
    ("08.adam_step", make_adam(t_shift=-1), "t counts from 1"),
    ("08.adam_step", make_adam(t_shift=1), "off by one"),
    ("08.adam_step", make_adam(swap=True), "beta1 and beta2 swapped"),
    ("08.adam_step", make_adam(return_hat=True), "bias-corrected m_hat"),
    ("08.adam_step", make_adam(eps_inside=True), "eps inside the square root"),
    ("08.max_stable_lr", lambda H: 1 / np.linalg.eigvalsh(H).max(), "divergence starts at 2"),
    ("08.max_stable_lr", lambda H: 2 / np.linalg.eigvalsh(H).min(), "smallest eigenvalue"),
    ("08.max_stable_lr", lambda H: 2 / np.diag(H).max(), "diagonal entry"),
    ("08.max_stable_lr", lambda H: 2 / np.trace(H), "trace"),
    ("08.warmup_cosine", make_schedule(ramp="flat"), "warmup starts at max_lr"),
    ("08.warmup_cosine", make_schedule(after="whole"), "cosine over the whole run"),
    ("08.warmup_cosine", make_schedule(floor=False), "ends at 0 instead of min_lr"),
    ("08.warmup_cosine", make_schedule(ramp="zero"), "one step late"),
    ("08.warmup_cosine", make_schedule(clamp=False), "stay at min_lr"),
    ("08.warmup_cosine", make_schedule(after="linear"), "straight line"),
    ("08.warmup_cosine", lambda *args: [0.1, 0.2], "one number"),
    ("08.warmup_cosine", lambda *args: None, "is a `return` missing?"),
    ("08.max_stable_lr", lambda H: None, "is a `return` missing?"),
    ("08.adam_step", lambda *args: None, "is a `return` missing?"),
]


# ---------------------------------------------------------------- shortcuts: the package's answers


def momentum_by_the_package(p, g, v, lr, mu):
    from backprop_course.optim import Momentum

    p = np.array(p, dtype=float)
    opt = Momentum([p], lr=lr, momentum=mu)
    opt.velocity[0][...] = v
    opt.step([g])
    return p, opt.velocity[0]


def momentum_by_torch(p, g, v, lr, mu):
    import torch

    w = torch.tensor(p, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr, momentum=mu)
    opt.state[w]["momentum_buffer"] = torch.tensor(v)
    w.grad = torch.tensor(g)
    opt.step()
    return w.detach().numpy(), opt.state[w]["momentum_buffer"].numpy()


def rmsprop_by_the_package(p, g, s, lr, alpha, eps):
    from backprop_course.optim import RMSprop

    p = np.array(p, dtype=float)
    opt = RMSprop([p], lr=lr, alpha=alpha, eps=eps)
    opt.square_avg[0][...] = s
    opt.step([g])
    return p, opt.square_avg[0]


def adam_by_the_checker(p, g, m, v, t, lr, beta1, beta2, eps):
    from backprop_course.exercises.lesson08 import _adam

    return _adam(p, g, m, v, t, lr, beta1, beta2, eps)


def schedule_wrapping_the_package(step, total_steps, warmup_steps, max_lr, min_lr):
    from backprop_course import optim

    return float(optim.warmup_cosine(step, total_steps, warmup_steps, max_lr, min_lr))


def schedule_by_torch(step, total_steps, warmup_steps, max_lr, min_lr):
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: make_schedule()(s, total_steps, warmup_steps, max_lr, min_lr) / max_lr
    )
    for _ in range(step):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


def _package_schedule():
    from backprop_course.optim import warmup_cosine

    return warmup_cosine


USED = "the answer used"
SHORTCUTS = [
    ("08.sgd_momentum_step", momentum_by_the_package, "backprop_course.optim"),
    ("08.sgd_momentum_step", momentum_by_torch, "torch.optim"),
    ("08.rmsprop_step", rmsprop_by_the_package, "backprop_course.optim"),
    ("08.adam_step", adam_by_the_checker, "backprop_course.exercises.lesson08"),
    ("08.warmup_cosine", _package_schedule(), "your own code"),
    ("08.warmup_cosine", schedule_wrapping_the_package, "backprop_course.optim"),
    ("08.warmup_cosine", schedule_by_torch, "torch.optim"),
]


def test_the_set_up_cell_imports_no_answer():
    """The exercise notebook's set-up cell imports neither backprop_course.optim nor a schedule."""
    import json
    from pathlib import Path

    notebook = Path(__file__).parents[1] / "solutions" / "08_optimizers.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert "warmup_cosine" not in setup
    assert "import check, hint, progress" in setup and "optim," not in setup


globals().update(
    lesson_feedback_tests(
        "08",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        also_correct=ALSO_CORRECT,
        shortcuts=SHORTCUTS,
        # "write it by hand": the optimizers and the schedule are what the package provides
        ruled=("08.sgd_momentum_step", "08.rmsprop_step", "08.adam_step", "08.warmup_cosine"),
    )
)


def test_references_follow_torch():
    """The checker's references agree with torch.optim step for step on the same problem."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=5)
    h = rng.uniform(0.5, 3.0, size=5)
    cases = [
        ("momentum", lambda w: torch.optim.SGD([w], lr=0.05, momentum=0.9)),
        ("rmsprop", lambda w: torch.optim.RMSprop([w], lr=0.01, alpha=0.95, eps=1e-3)),
        ("adam", lambda w: torch.optim.Adam([w], lr=0.05, betas=(0.85, 0.99), eps=1e-6)),
    ]
    for name, make in cases:
        w = torch.tensor(p0.copy(), requires_grad=True)
        opt = make(w)
        p, s1, s2 = p0.copy(), np.zeros(5), np.zeros(5)
        for t in range(1, 31):
            g = h * p
            w.grad = torch.tensor(g)
            opt.step()
            if name == "momentum":
                p, s1 = make_momentum()(p, g, s1, 0.05, 0.9)
            elif name == "rmsprop":
                p, s1 = make_rmsprop()(p, g, s1, 0.01, 0.95, 1e-3)
            else:
                p, s1, s2 = make_adam()(p, g, s1, s2, t, 0.05, 0.85, 0.99, 1e-6)
            np.testing.assert_allclose(p, w.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_schedule_matches_the_package():
    """The exercise's schedule is the packaged backprop_course.optim.warmup_cosine."""
    optim = pytest.importorskip("backprop_course.optim")
    for total, warmup in [(50, 10), (40, 0), (100, 7)]:
        for step in range(total + 5):
            expected = optim.warmup_cosine(step, total, warmup, 0.3, 0.01)
            assert make_schedule()(step, total, warmup, 0.3, 0.01) == pytest.approx(expected)
