"""Lesson 09: correct answers pass, and typical wrong answers get a specific reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backprop_course.device import torch_threads
from backprop_course.torch_tools import grads_from_torch, params_from_torch, torch_mlp_from_params
from feedback import lesson_feedback_tests

F64 = torch.float64

# The first linear layer's input needs no gradient, so torch warns that its full backward
# hook fires for the output only: expected in 09.grad_norm_hooks.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks here are tiny: one torch thread is much faster than two on a busy CPU."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------- 09.grad_accumulation


def make_accumulated(*, divide=True, zero_inside=False, dtype=F64, reduce="mean"):
    def accumulated_gradient(w, X, y, n_micro):
        w = torch.tensor(w, dtype=dtype, requires_grad=True)
        for Xm, ym in zip(np.split(X, n_micro), np.split(y, n_micro), strict=True):
            if zero_inside:
                w.grad = None
            Xm, ym = torch.tensor(Xm, dtype=dtype), torch.tensor(ym, dtype=dtype)
            squared = (Xm @ w - ym) ** 2
            loss = squared.mean() if reduce == "mean" else squared.sum()
            (loss / n_micro if divide else loss).backward()
        return w.grad

    return accumulated_gradient


def accumulated_by_hand(w, X, y, n_micro):
    return 2 * X.T @ (X @ w - y) / len(X)


# ---------------------------------------------------------------- 09.straight_through


def make_straight_through(*, mode="ste", step_grid=True, dtype=F64):
    def quantized_loss_and_grad(x, t, step):
        x = torch.tensor(x, dtype=dtype, requires_grad=True)
        t = torch.tensor(t, dtype=dtype)
        q = step * torch.round(x / step) if step_grid else torch.round(x)
        if mode == "ste":
            q = x + (q - x).detach()
        elif mode == "flipped":
            q = x.detach() + (q - x)
        elif mode == "unrounded":
            q = x
        loss = ((q - t) ** 2).sum()
        loss.backward()
        return loss.item(), x.grad

    return quantized_loss_and_grad


# ---------------------------------------------------------------- 09.torch_mlp_gradients


def make_torch_mlp(
    *, dtype=F64, transpose=True, reduction="mean", last_activation=False, twice=False
):
    def torch_mlp_gradients(params, X, y, activation):
        model = torch_mlp_from_params(params, activation, dtype=dtype)
        if last_activation:
            model.append(type(model[1])())
        for _ in range(2 if twice else 1):
            logits = model(torch.as_tensor(X, dtype=dtype))
            loss = F.cross_entropy(logits, torch.as_tensor(y), reduction=reduction)
            loss.backward()
        if transpose:
            return grads_from_torch(model)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        grads = {}
        for i, lin in enumerate(linears, start=1):
            grads[f"W{i}"], grads[f"b{i}"] = lin.weight.grad, lin.bias.grad
        return grads

    return torch_mlp_gradients


def torch_mlp_by_tensors(params, X, y, activation):
    """Without nn.Module: leaf tensors in numpy layout."""
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.from_numpy(X)
    n = len(p) // 2
    for i in range(1, n + 1):
        h = h @ p[f"W{i}"] + p[f"b{i}"]
        if i < n:
            h = act(h)
    F.cross_entropy(h, torch.from_numpy(y)).backward()
    return {k: t.grad.numpy() for k, t in p.items()}


# ---------------------------------------------------------------- 09.custom_function


def make_swish(*, mode="right", save=True, returns=2):
    class Swish(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, beta):
            if save:
                ctx.save_for_backward(x)
            ctx.beta = beta
            if mode == "no_beta_forward":
                return x * torch.sigmoid(x)
            return x * torch.sigmoid(beta * x)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            beta = ctx.beta
            s = torch.sigmoid(beta * x)
            local = s + beta * x * s * (1 - s)
            if mode == "no_grad_output":
                grad = local
            elif mode == "no_product_rule":
                grad = grad_output * s
            elif mode == "no_beta":
                grad = grad_output * (s + x * s * (1 - s))
            elif mode == "stub":
                return ...
            else:
                grad = grad_output * local
            return (grad, None) if returns == 2 else grad

    return Swish


class SwishCtxAttribute(torch.autograd.Function):
    """Correct too: keeping x on ctx works (save_for_backward is the recommended way)."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.x, ctx.beta = x, beta
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx, grad_output):
        x, beta = ctx.x, ctx.beta
        s = torch.sigmoid(beta * x)
        return grad_output * (s + beta * x * s * (1 - s)), None


class SwishNotSaved(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        ctx.beta = beta
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx, grad_output):
        x = ctx.x
        s = torch.sigmoid(ctx.beta * x)
        return grad_output * (s + ctx.beta * x * s * (1 - s)), None


class SwishStub(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        return ...

    @staticmethod
    def backward(ctx, grad_output):
        return ...


# ---------------------------------------------------------------- 09.grad_norm_hooks


def make_norm_hooks(*, order="layer", what="output", square=False, reduction="mean"):
    def layer_output_grad_norms(params, X, y):
        model = torch_mlp_from_params(params)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        fired, handles = {}, []
        for i, layer in enumerate(linears):

            def hook(module, grad_input, grad_output, i=i):
                g = grad_output[0]
                fired[i] = float((g**2).sum() if square else g.norm())

            handles.append(layer.register_full_backward_hook(hook))
        loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y), reduction=reduction)
        loss.backward()
        for h in handles:
            h.remove()
        if what == "weights":
            return [float(lin.weight.grad.norm()) for lin in linears]
        if order == "fired":
            return list(fired.values())
        return [fired[i] for i in range(len(linears))]

    return layer_output_grad_norms


# ---------------------------------------------------------------- 09.clip_hook


def make_clipped(*, mode="right"):
    def clipped_gradients(params, X, y, clip):
        model = torch_mlp_from_params(params)
        h = torch.from_numpy(X)
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                if mode == "right":
                    h.register_hook(lambda grad: grad.clamp(-clip, clip))
                elif mode == "no_return":

                    def hook(grad):
                        grad.clamp(-clip, clip)  # computed, but not returned

                    h.register_hook(hook)
        F.cross_entropy(h, torch.from_numpy(y)).backward()
        if mode == "params":
            torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        return grads_from_torch(model)

    return clipped_gradients


# ---------------------------------------------------------------- 09.train_step


def make_train(*, zero=True, momentum_on=True, zero_between=False, extra=0):
    def train_with_sgd(params, X, y, lr, momentum, steps):
        model = torch_mlp_from_params(params)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum if momentum_on else 0)
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        for _ in range(steps + extra):
            if zero:
                opt.zero_grad()
            loss = F.cross_entropy(model(X), y)
            loss.backward()
            if zero_between:
                opt.zero_grad()
            opt.step()
        return params_from_torch(model)

    return train_with_sgd


CORRECT_ANSWERS = {
    "09.grad_accumulation": [make_accumulated()],
    "09.straight_through": [make_straight_through()],
    "09.torch_mlp_gradients": [make_torch_mlp(), torch_mlp_by_tensors],
    "09.custom_function": [make_swish(), SwishCtxAttribute],
    "09.grad_norm_hooks": [make_norm_hooks()],
    "09.clip_hook": [make_clipped()],
    "09.train_step": [make_train()],
}

WRONG_ANSWERS = [
    ("09.grad_accumulation", make_accumulated(divide=False), "forgot to divide each micro-batch"),
    ("09.grad_accumulation", make_accumulated(zero_inside=True), "only the last micro-batch"),
    (
        "09.grad_accumulation",
        make_accumulated(zero_inside=True, divide=False),
        "only the last micro-batch",
    ),
    ("09.grad_accumulation", make_accumulated(dtype=torch.float32), "float32"),
    ("09.grad_accumulation", make_accumulated(reduce="sum", divide=False), "summed the squared"),
    ("09.grad_accumulation", lambda *a: None, "is a `return` missing?"),
    ("09.straight_through", make_straight_through(mode="plain"), "all zeros"),
    ("09.straight_through", make_straight_through(mode="flipped"), "sign error"),
    ("09.straight_through", make_straight_through(mode="unrounded"), "unrounded x"),
    ("09.straight_through", make_straight_through(step_grid=False), "rounded to whole numbers"),
    ("09.straight_through", make_straight_through(dtype=torch.float32), "float32"),
    ("09.straight_through", lambda x, t, s: 1.0, "should return a pair"),
    ("09.torch_mlp_gradients", make_torch_mlp(transpose=False), "transposed"),
    ("09.torch_mlp_gradients", make_torch_mlp(reduction="sum"), "summed the loss"),
    ("09.torch_mlp_gradients", make_torch_mlp(last_activation=True), "after the last layer"),
    ("09.torch_mlp_gradients", make_torch_mlp(dtype=torch.float32), "float32"),
    ("09.torch_mlp_gradients", lambda *a: {"W1": 0}, "missing the key(s)"),
    ("09.custom_function", make_swish(mode="no_grad_output"), "without multiplying by grad_output"),
    ("09.custom_function", make_swish(mode="no_product_rule"), "forgot the product rule"),
    ("09.custom_function", make_swish(mode="no_beta"), "forgot the inner derivative beta"),
    ("09.custom_function", make_swish(mode="no_beta_forward"), "forgot beta"),
    ("09.custom_function", make_swish(returns=1), "one gradient per input"),
    ("09.custom_function", make_swish(mode="stub"), "backward still returns"),
    ("09.custom_function", SwishNotSaved, "ctx.save_for_backward"),
    ("09.grad_norm_hooks", make_norm_hooks(order="fired"), "last layer first"),
    ("09.grad_norm_hooks", make_norm_hooks(what="weights"), "weight gradients"),
    ("09.grad_norm_hooks", make_norm_hooks(square=True), "squared norms"),
    ("09.grad_norm_hooks", make_norm_hooks(reduction="sum"), "summed the loss"),
    ("09.clip_hook", make_clipped(mode="no_return"), "must RETURN the modified gradient"),
    ("09.clip_hook", make_clipped(mode="params"), "clipped the parameter gradients"),
    ("09.train_step", make_train(zero=False), "forgot optimizer.zero_grad()"),
    ("09.train_step", make_train(zero_between=True), "did not change"),
    ("09.train_step", make_train(momentum_on=False), "ignored the momentum"),
    ("09.train_step", make_train(extra=1), "one step too many"),
]


# ---------------------------------------------------------------- shortcuts: the tool is the skill


def accumulated_in_one_backward(w, X, y, n_micro):
    w = torch.tensor(w, requires_grad=True)
    ((torch.from_numpy(X) @ w - torch.from_numpy(y)) ** 2).mean().backward()
    return w.grad


def accumulated_with_autograd_grad(w, X, y, n_micro):
    w = torch.tensor(w, requires_grad=True)
    total = torch.zeros_like(w)
    for Xm, ym in zip(np.split(X, n_micro), np.split(y, n_micro), strict=True):
        loss = ((torch.from_numpy(Xm) @ w - torch.from_numpy(ym)) ** 2).mean() / n_micro
        total += torch.autograd.grad(loss, w)[0]
    return total


def accumulated_by_hand_after_backward(w, X, y, n_micro):
    leaf = torch.tensor(w, requires_grad=True)
    for _ in range(n_micro):  # backward calls for show; the answer is a formula
        (0 * leaf).sum().backward()
    return accumulated_by_hand(w, X, y, n_micro)


def straight_through_by_hand(x, t, step):
    q = step * np.round(x / step)
    return float(((q - t) ** 2).sum()), 2 * (q - t)


def mlp_gradients_from_the_package(params, X, y, activation):
    from backprop_course.torch_tools import numpy_mlp_gradients

    return numpy_mlp_gradients(params, X, y, activation)[1]


def mlp_gradients_with_numpy_layers(params, X, y, activation):
    from backprop_course import nn as npnn
    from backprop_course.torch_tools import mlp_from_params

    mlp = mlp_from_params(params, activation)
    loss = npnn.SoftmaxCrossEntropy()
    loss(mlp(X), y)
    mlp.backward(loss.backward())
    return dict(zip(params, mlp.gradients()))


class SwishBackwardByAutograd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return x * torch.sigmoid(beta * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            y = leaf * torch.sigmoid(ctx.beta * leaf)
            return torch.autograd.grad(y, leaf, grad_output)[0], None


def norms_with_retain_grad(params, X, y):
    model = torch_mlp_from_params(params)
    outputs, h = [], torch.from_numpy(X)
    for layer in model:
        h = layer(h)
        if isinstance(layer, torch.nn.Linear):
            h.retain_grad()
            outputs.append(h)
    F.cross_entropy(h, torch.from_numpy(y)).backward()
    return [float(o.grad.norm()) for o in outputs]


def clipped_in_place(params, X, y, clip):
    model = torch_mlp_from_params(params)
    h = torch.from_numpy(X)
    for layer in model:
        h = layer(h)
        if isinstance(layer, torch.nn.ReLU):

            def hook(grad):
                grad.clamp_(-clip, clip)  # changes grad in place, returns None

            h.register_hook(hook)
    F.cross_entropy(h, torch.from_numpy(y)).backward()
    return grads_from_torch(model)


def trained_by_hand_in_torch(params, X, y, lr, momentum, steps):
    model = torch_mlp_from_params(params)
    velocity = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(steps):
        model.zero_grad()
        F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        with torch.no_grad():
            for p, v in zip(model.parameters(), velocity, strict=True):
                v.mul_(momentum).add_(p.grad)
                p -= lr * v
    return params_from_torch(model)


def trained_with_the_package_optimizer(params, X, y, lr, momentum, steps):
    from backprop_course.optim import Momentum
    from backprop_course.torch_tools import numpy_mlp_gradients

    params = {k: v.copy() for k, v in params.items()}
    opt = Momentum(list(params.values()), lr=lr, momentum=momentum)
    for _ in range(steps):
        grads = numpy_mlp_gradients(params, X, y)[1]
        opt.step([grads[k] for k in params])
    return params


USED_THE_PACKAGE = "the answer used backprop_course"

SHORTCUTS = [
    ("09.grad_accumulation", accumulated_by_hand, "made no backward() call"),
    ("09.grad_accumulation", accumulated_with_autograd_grad, "does not add them into .grad"),
    ("09.grad_accumulation", accumulated_in_one_backward, "reached w 1 time(s)"),
    ("09.grad_accumulation", accumulated_by_hand_after_backward, "not the .grad that"),
    ("09.straight_through", straight_through_by_hand, "never called backward()"),
    ("09.torch_mlp_gradients", mlp_gradients_from_the_package, USED_THE_PACKAGE),
    ("09.torch_mlp_gradients", mlp_gradients_with_numpy_layers, USED_THE_PACKAGE),
    ("09.custom_function", SwishBackwardByAutograd, "without autograd"),
    ("09.grad_norm_hooks", norms_with_retain_grad, "registered none"),
    ("09.clip_hook", clipped_in_place, "changed its grad argument in place"),
    ("09.train_step", trained_by_hand_in_torch, "never called an optimizer's step()"),
    ("09.train_step", trained_with_the_package_optimizer, USED_THE_PACKAGE),
]


globals().update(
    lesson_feedback_tests(
        "09",
        CORRECT_ANSWERS,
        WRONG_ANSWERS,
        several=True,
        stubs={"09.custom_function": SwishStub},
        shortcuts=SHORTCUTS,
        ruled=sorted(CORRECT_ANSWERS),  # the tool (autograd, hooks, torch.optim) is the skill
        correct_seeds={"09.train_step": 8, "09.custom_function": 8},
    )
)


def test_probe_returns_plain_data():
    """The custom-function probe hands back only data the grader can carry across."""
    from backprop_course.exercises.lesson09 import probe_swish

    x = np.linspace(-1, 1, 5)
    result = probe_swish(make_swish(), x, 1.5, np.ones(5))
    plain = (type(None), bool, int, float, str, torch.Tensor)
    assert all(isinstance(v, plain) for v in result.values()), result
    assert result["gradcheck"] is True and result["n_returned"] == 2
    assert probe_swish(SwishStub, x, 1.5, np.ones(5)) is Ellipsis
    assert probe_swish(..., x, 1.5, np.ones(5)) is Ellipsis
