"""Lesson 09, PyTorch autograd: the machinery of lessons 03-08, packaged.

Every check compares the learner's torch code with a reference computed
independently, mostly by the hand-written numpy backward of
:mod:`backprop_course.nn`, on fresh random float64 inputs. Gradients must match
to float64 precision (relative 1e-9): an answer that agrees only to about 1e-6
was computed in float32, and the feedback says so.

The learner's answers are only called through :func:`~backprop_course.compare.call`
with plain data (numbers, numpy arrays, dicts of them) and only plain data is
used from what they return. When autograd has to run on a learner's object (the
custom ``torch.autograd.Function``), a module-level probe, :func:`probe_swish`,
runs it and returns plain data; the check calls it through :func:`run_probe`,
so that the grader can run the probe next to the learner's code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from backprop_course import nn as npnn
from backprop_course.compare import (
    NotAttempted,
    Wrong,
    answer_name,
    assert_close,
    distinct_sizes,
    expect_mapping,
    is_stub,
    run_probe,
)
from backprop_course.exercises import exercise
from backprop_course.rules import BY_HAND, RuleBroken, enforce
from backprop_course.torch_tools import mlp_from_params, numpy_mlp_gradients

# ---------------------------------------------------------------- helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _array(got: Any, name: str) -> np.ndarray:
    if is_stub(got):
        raise NotAttempted
    if got is None:
        raise Wrong(
            f"{name} is None: a .grad stays None until backward() reaches that tensor; it "
            "must be a leaf created with requires_grad=True, and used in the loss"
        )
    if hasattr(got, "detach") and hasattr(got, "numpy"):
        got = got.detach().cpu().numpy()
    if isinstance(got, _Opaque):
        raise Wrong(f"{name} should be a number, a numpy array or a tensor, got {got}")
    try:
        return np.asarray(got, dtype=float)
    except (TypeError, ValueError) as error:
        raise Wrong(
            f"{name} should be a number, a numpy array or a tensor, got {type(got).__name__}"
        ) from error


FLOAT32_ADVICE = (
    "did you compute in float32? torch.tensor(list) and nn.Linear default to float32; "
    "use dtype=torch.float64 (torch.from_numpy keeps the float64 of a numpy array)"
)


def _close64(
    got: Any,
    expected: Any,
    *,
    name: str,
    context: str,
    mistakes: Mapping[str, Any] | None = None,
) -> None:
    """assert_close at float64 precision; an answer right only to float32 precision is named."""
    got_array = _array(got, name)
    expected = np.asarray(expected, dtype=float)
    try:
        assert_close(
            got_array,
            expected,
            name=name,
            rtol=1e-9,
            atol=1e-12,
            mistakes=mistakes,
            context=context,
        )
    except Wrong:
        if (
            got_array.shape == expected.shape
            and np.isfinite(got_array).all()
            and np.allclose(got_array, expected, rtol=1e-4, atol=1e-7)
        ):
            error = np.abs(got_array - expected).max() / max(np.abs(expected).max(), 1e-12)
            raise Wrong(
                f"{name} {context} agrees with the float64 reference only to about "
                f"{error:.0e} (relative): {FLOAT32_ADVICE}"
            ) from None
        raise


def _dict_of(got: Any, keys: list[str], what: str) -> Mapping:
    expect_mapping(got, keys, name=what)
    if any(is_stub(got[k]) for k in keys):
        raise NotAttempted
    return got


def _param_keys(count: int) -> list[str]:
    return [f"{kind}{i}" for i in range(1, count + 1) for kind in ("W", "b")]


def _random_params(rng: np.random.Generator, sizes: list[int]) -> dict[str, np.ndarray]:
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        params[f"W{i}"] = rng.normal(scale=np.sqrt(2.0 / n_in), size=(n_in, n_out))
        params[f"b{i}"] = rng.normal(scale=0.3, size=n_out)
    return params


def _classification_case(rng: np.random.Generator, depth: int):
    """Random parameters of an MLP with ``depth`` linear layers, a batch and labels."""
    sizes = distinct_sizes(rng, depth + 2, 2, 10)
    batch, sizes = sizes[0], sizes[1:]
    params = _random_params(rng, sizes)
    X = rng.normal(size=(batch, sizes[0]))
    y = rng.integers(0, sizes[-1], size=batch)
    where = "for layer sizes " + "-".join(map(str, sizes)) + f" and a batch of {batch}"
    return params, X, y, where


def _copy(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in params.items()}


def _mlp_backward(
    params: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    activation: str = "relu",
    clip: float | None = None,
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Hand-written backward of the numpy MLP, optionally clipping gradients on the way.

    Returns the parameter gradients (numpy layout) and the gradient of the loss
    with respect to each linear layer's output, input layer first. ``clip``
    clamps the gradient arriving at each hidden activation's output to
    ``[-clip, clip]``.
    """
    mlp = mlp_from_params(params, activation)
    loss_fn = npnn.SoftmaxCrossEntropy()
    loss_fn(mlp(np.asarray(X, dtype=np.float64)), y)
    dy = loss_fn.backward()
    layers = list(mlp)
    grads: dict[str, np.ndarray] = {}
    output_grads: list[np.ndarray] = []
    number = sum(isinstance(la, npnn.Linear) for la in layers)
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if isinstance(layer, npnn.Linear):
            output_grads.insert(0, dy.copy())
            dy = layer.backward(dy)
            grads[f"W{number}"], grads[f"b{number}"] = layer.dW.copy(), layer.db.copy()
            number -= 1
        else:
            if clip is not None:
                dy = np.clip(dy, -clip, clip)
            dy = layer.backward(dy)
    return grads, output_grads


# ---------------------------------------------------------------- tracing what the answer does

# The tools are the skill in this lesson: the checks look at HOW the answer got its numbers
# (backward calls, hooks, optimizer steps), not only at the numbers, which a closed form or
# the package's numpy backward would also produce.
OWN_TORCH = (
    "backprop_course.nn",
    "backprop_course.optim",
    "backprop_course.torch_tools.numpy_mlp_gradients",
    "backprop_course.torch_tools.mlp_from_params",
    # this module's own references (not the whole module: the probe lives here)
    "backprop_course.exercises.lesson09._linreg_grad",
    "backprop_course.exercises.lesson09._mlp_backward",
    "backprop_course.exercises.lesson09._torch_variant",
    "backprop_course.exercises.lesson09._momentum_run",
)


def _plain(value: Any, depth: int = 0) -> Any:
    """The learner's result as plain data: tensors become numpy arrays (dtype kept)."""
    if is_stub(value) or value is None or isinstance(value, (bool, int, float, str, np.ndarray)):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.generic):
        return value.item()
    if depth < 3 and isinstance(value, Mapping):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if depth < 3 and isinstance(value, (tuple, list)):
        return type(value)(_plain(v, depth + 1) for v in value)
    return _Opaque(type(value).__name__)


class _Opaque(str):
    """Stands for a returned object that is not plain data (its type name)."""


class _Trace:
    """Counts, while active, what the answer asked autograd to do.

    ``backward``: calls of ``torch.autograd.backward`` (``Tensor.backward`` goes through it),
    with the leaves each call reached; ``grad``: calls of ``torch.autograd.grad``; ``hooks``:
    tensor and module backward hooks registered (each wrapped to see whether it changes its
    argument in place while returning None); ``steps``: ``torch.optim`` optimizer steps.
    """

    def __init__(self):
        self.backward_calls = 0
        self.grad_calls = 0
        self.leaf_calls: dict[int, list] = {}  # id -> [leaf, calls reaching it]
        self.grad_outputs: list = []
        self.hooks = 0
        self.in_place = False
        self.steps = 0

    def _leaves(self, tensors):
        import torch

        stack = [t.grad_fn for t in tensors if isinstance(t, torch.Tensor) and t.grad_fn]
        stack += [None] * 0
        seen, leaves = set(), {}
        while stack:
            fn = stack.pop()
            if fn is None or id(fn) in seen:
                continue
            seen.add(id(fn))
            variable = getattr(fn, "variable", None)
            if variable is not None:
                leaves[id(variable)] = variable
            stack.extend(child for child, _ in fn.next_functions)
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.requires_grad and t.grad_fn is None:
                leaves[id(t)] = t
        return leaves.values()

    def _watch(self, hook, module_hook=False):
        import torch

        trace = self

        def watched(*args):
            grads = args[1:] if module_hook else args
            flat = [g for a in grads for g in (a if isinstance(a, tuple) else (a,))]
            before = [g.clone() if isinstance(g, torch.Tensor) else None for g in flat]
            result = hook(*args)
            if result is None and any(
                b is not None and not torch.equal(b, g) for b, g in zip(before, flat)
            ):
                trace.in_place = True
            return result

        return watched

    def __enter__(self):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        trace = self
        self._saved = (
            torch.autograd.backward,
            torch.autograd.grad,
            torch.Tensor.register_hook,
            torch.nn.Module.register_full_backward_hook,
            torch.nn.Module.register_full_backward_pre_hook,
        )
        backward, grad, tensor_hook, module_hook, module_pre_hook = self._saved

        def traced_backward(tensors, *args, **kwargs):
            trace.backward_calls += 1
            listed = tensors if isinstance(tensors, (tuple, list)) else (tensors,)
            for leaf in trace._leaves(listed):
                trace.leaf_calls.setdefault(id(leaf), [leaf, 0])[1] += 1
            return backward(tensors, *args, **kwargs)

        def traced_grad(*args, **kwargs):
            trace.grad_calls += 1
            result = grad(*args, **kwargs)
            trace.grad_outputs.extend(r for r in result if r is not None)
            return result

        def traced_tensor_hook(tensor, hook):
            trace.hooks += 1
            return tensor_hook(tensor, trace._watch(hook))

        def traced_module_hook(module, hook, *args, **kwargs):
            trace.hooks += 1
            return module_hook(module, trace._watch(hook, module_hook=True), *args, **kwargs)

        def traced_module_pre_hook(module, hook, *args, **kwargs):
            trace.hooks += 1
            return module_pre_hook(module, trace._watch(hook, module_hook=True), *args, **kwargs)

        torch.autograd.backward = traced_backward
        torch.autograd.grad = traced_grad
        torch.Tensor.register_hook = traced_tensor_hook
        torch.nn.Module.register_full_backward_hook = traced_module_hook
        torch.nn.Module.register_full_backward_pre_hook = traced_module_pre_hook
        self._step_hook = register_optimizer_step_post_hook(
            lambda *_: setattr(trace, "steps", trace.steps + 1)
        )
        return self

    def __exit__(self, *exc):
        import torch

        (
            torch.autograd.backward,
            torch.autograd.grad,
            torch.Tensor.register_hook,
            torch.nn.Module.register_full_backward_hook,
            torch.nn.Module.register_full_backward_pre_hook,
        ) = self._saved
        self._step_hook.remove()
        return False

    def summary(self, result: Any) -> dict:
        leaf_grads = [
            (calls, leaf.grad.detach().cpu().numpy().copy())
            for leaf, calls in self.leaf_calls.values()
            if leaf.grad is not None
        ]
        return {
            "result": _plain(result),
            "backward_calls": self.backward_calls,
            "grad_calls": self.grad_calls,
            "leaf_grads": leaf_grads,
            "grad_outputs": [g.detach().cpu().numpy().copy() for g in self.grad_outputs],
            "hooks": self.hooks,
            "in_place": self.in_place,
            "steps": self.steps,
        }


def probe_traced(answer, *args) -> Any:
    """Call the learner's function on plain data and report what it did with autograd.

    Returns ``...`` if the answer returned the stub, else :meth:`_Trace.summary`: the
    result as plain data plus the counts of backward and ``autograd.grad`` calls, the
    ``.grad`` of every leaf a backward call reached (with the number of calls that reached
    it), the hooks registered (and whether one changed its argument in place and returned
    None) and the optimizer steps taken. The answer runs under ``rules.enforce`` with
    :data:`OWN_TORCH` forbidden.
    """
    with enforce(forbid=OWN_TORCH, rule=TOOL_RULE), _Trace() as trace:
        result = answer(*args)
    if is_stub(result):
        return ...
    return trace.summary(result)


def _traced(answer, *args) -> dict:
    """:func:`probe_traced` where the answer lives (the package's numpy answers refused)."""
    if is_stub(answer):
        raise NotAttempted
    return run_probe(probe_traced, answer, *args, shown=(answer_name(), args, {}))


TOOL_RULE = "this exercise asks you to let torch's autograd compute it, not your own formula"


def _needs_autograd(trace: Mapping, what: str) -> None:
    if trace["backward_calls"] == 0 and trace["grad_calls"] == 0:
        raise Wrong(
            f"{TOOL_RULE}; the answer never called backward() (or torch.autograd.grad): {what}"
        )


def _from_autograd(trace: Mapping, got: np.ndarray) -> None:
    """Wrong unless ``got`` is a gradient that autograd produced during the call."""
    produced = [g for _, g in trace["leaf_grads"]] + list(trace["grad_outputs"])
    if not any(g.shape == got.shape and np.allclose(g, got) for g in produced):
        raise Wrong(
            f"{TOOL_RULE}; the returned gradient is not one that backward() (or "
            "torch.autograd.grad) computed: return x.grad"
        )


def _returned_none(value: Any, name: str) -> None:
    if value is None:
        raise Wrong(f"{name} returned None: is a `return` missing?")


# ---------------------------------------------------------------- 09.grad_accumulation


def _linreg_grad(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of mean((X @ w - y)**2) with respect to w."""
    return 2.0 * X.T @ (X @ w - y) / len(X)


ACCUMULATE = (
    "this exercise asks you to let autograd accumulate the gradient in w.grad, one backward() "
    "per micro-batch"
)


@exercise(
    "09.grad_accumulation",
    title="Gradient accumulation over micro-batches",
    points=3,
    answer="accumulated_gradient",
    hints=(
        "Make w a float64 leaf tensor with requires_grad=True once, before the loop. Each "
        "loss.backward() ADDS into w.grad; nothing in the loop should reset it.",
        "The full-batch loss is the mean over B rows. With n equal micro-batches it equals the "
        "average of the n micro-batch means, so scale each micro-batch loss by 1 / n before "
        "calling backward.",
        "w = torch.tensor(w, dtype=torch.float64, requires_grad=True); for Xm, ym in "
        "zip(np.split(X, n_micro), np.split(y, n_micro)): loss = ((Xm @ w - ym) ** 2).mean() / "
        "n_micro; loss.backward(). Return w.grad.",
    ),
)
def _grad_accumulation(answer, rng):
    for _ in range(4):
        n_micro = int(rng.integers(2, 5))
        size = int(rng.integers(2, 6))
        D = int(rng.integers(2, 6))
        B = n_micro * size
        X = rng.normal(size=(B, D))
        y = rng.normal(size=B)
        w = rng.normal(size=D)
        where = f"for w of shape ({D},), a batch of {B} rows and n_micro={n_micro}"
        trace = _traced(answer, w.copy(), X.copy(), y.copy(), n_micro)
        got = trace["result"]
        _returned_none(got, "accumulated_gradient")
        expected = _linreg_grad(w, X, y)
        first = _linreg_grad(w, X[:size], y[:size])
        last = _linreg_grad(w, X[-size:], y[-size:])
        _close64(
            got,
            expected,
            name="the accumulated gradient",
            context=where,
            mistakes={
                "forgot to divide each micro-batch loss by the number of micro-batches: "
                "n gradients of means add up to n times the full-batch gradient": (
                    n_micro * expected
                ),
                "only the last micro-batch's gradient is left: did you zero w.grad (or "
                "create w) inside the loop? Accumulation means NOT zeroing": last / n_micro,
                "only the last micro-batch's gradient is left (zeroed or re-created w inside "
                "the loop), and it is not divided by the number of micro-batches": last,
                "only the first micro-batch's gradient: did the loop stop early?": first / n_micro,
                "summed the squared errors instead of taking their mean": B * expected,
            },
        )
        if trace["backward_calls"] == 0:
            raise Wrong(
                f"{ACCUMULATE}; the answer made no backward() call"
                + (
                    " (torch.autograd.grad returns gradients; it does not add them into .grad)"
                    if trace["grad_calls"]
                    else ""
                )
            )
        got = _array(got, "the accumulated gradient")
        calls = [c for c, g in trace["leaf_grads"] if g.shape == got.shape and np.allclose(g, got)]
        if not calls:
            raise Wrong(
                f"{ACCUMULATE}; the returned gradient is not the .grad that the backward() "
                "calls accumulated: return w.grad"
            )
        if max(calls) != n_micro:
            raise Wrong(
                f"{ACCUMULATE}; backward() reached w {max(calls)} time(s) for {n_micro} "
                f"micro-batches {where}"
            )


# ---------------------------------------------------------------- 09.straight_through


@exercise(
    "09.straight_through",
    title="A straight-through estimator with detach()",
    points=3,
    answer="quantized_loss_and_grad",
    hints=(
        "torch.round has derivative 0 almost everywhere, so a loss of round(x) has no useful "
        "gradient. The trick: a forward value that is rounded, and a backward pass that "
        "pretends the rounding was the identity.",
        "x + (q - x).detach() equals q in the forward pass, but autograd only sees the '+ x' "
        "part: the detached difference is a constant.",
        "x = torch.tensor(x, dtype=torch.float64, requires_grad=True); q = step * "
        "torch.round(x / step); q_st = x + (q - x).detach(); loss = ((q_st - t) ** 2).sum(); "
        "loss.backward(); return loss.item(), x.grad.",
    ),
)
def _straight_through(answer, rng):
    for _ in range(4):
        shape = tuple(int(n) for n in rng.integers(2, 6, size=int(rng.integers(1, 3))))
        x = rng.normal(scale=2.0, size=shape)
        t = rng.normal(scale=2.0, size=shape)
        step = float(rng.choice([0.25, 0.5, 1.0]))
        where = f"for x of shape {shape} and step={step}"
        trace = _traced(answer, x.copy(), t.copy(), step)
        got = trace["result"]
        _returned_none(got, "quantized_loss_and_grad")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(
                "quantized_loss_and_grad should return a pair (loss, gradient), got "
                f"{type(got).__name__}"
            )
        loss, grad = got
        if is_stub(loss) or is_stub(grad):
            raise NotAttempted
        q = step * np.round(x / step)
        expected_loss = float(((q - t) ** 2).sum())
        _close64(
            loss,
            expected_loss,
            name="the loss",
            context=where,
            mistakes={
                "the loss of the unrounded x: the forward pass must use the quantized "
                "values": float(((x - t) ** 2).sum()),
                "rounded to whole numbers: quantize to the grid, step * round(x / step)": float(
                    ((np.round(x) - t) ** 2).sum()
                ),
            },
        )
        expected = 2 * (q - t)
        _close64(
            grad,
            expected,
            name="the gradient",
            context=where,
            mistakes={
                "all zeros: the gradient of round() is 0 almost everywhere; pass it through "
                "with x + (q - x).detach()": np.zeros(shape),
                "sign error: detach the difference (q - x) and add x, not x.detach() + "
                "(q - x), whose gradient is -1": -expected,
                "the gradient of the unrounded loss: the forward pass must use the quantized "
                "values": 2 * (x - t),
            },
        )
        _needs_autograd(trace, "build the loss from x + (q - x).detach() and call backward()")
        _from_autograd(trace, _array(grad, "the gradient"))


# ---------------------------------------------------------------- 09.torch_mlp_gradients


def _torch_variant(params, X, y, activation, *, last_activation=False) -> dict[str, np.ndarray]:
    """Gradients of a wrongly built torch MLP (the checker runs trusted torch here)."""
    import torch

    from backprop_course.torch_tools import ACTIVATIONS

    h = torch.as_tensor(X, dtype=torch.float64)
    tensors = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()
    }
    count = len(params) // 2
    act = ACTIVATIONS[activation]()
    for i in range(1, count + 1):
        h = h @ tensors[f"W{i}"] + tensors[f"b{i}"]
        if i < count or last_activation:
            h = act(h)
    loss = torch.nn.functional.cross_entropy(h, torch.as_tensor(y))
    loss.backward()
    return {k: t.grad.numpy() for k, t in tensors.items()}


@exercise(
    "09.torch_mlp_gradients",
    title="The numpy MLP, rebuilt in torch",
    points=4,
    answer="torch_mlp_gradients",
    hints=(
        "Turn every array into a float64 tensor; the weights and biases need "
        "requires_grad=True. Run the same forward pass as backprop_course.nn.MLP: "
        "h = act(h @ W + b) for every layer but the last, which stays linear.",
        "The loss is torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)): it "
        "averages over the batch, like SoftmaxCrossEntropy. One loss.backward() fills .grad.",
        "If you use nn.Linear (for example backprop_course.torch_tools.torch_mlp_from_params), "
        "its weight has shape (out, in): return weight.grad.T so that every gradient has the "
        "shape of the numpy W.",
    ),
)
def _torch_mlp_gradients(answer, rng):
    for case in range(4):
        depth = 2 if case < 2 else 3
        activation = ("relu", "tanh", "sigmoid", str(rng.choice(["relu", "tanh"])))[case]
        params, X, y, where = _classification_case(rng, depth)
        where += f", activation={activation!r}"
        trace = _traced(answer, _copy(params), X.copy(), y.copy(), activation)
        _returned_none(trace["result"], "torch_mlp_gradients")
        got = _dict_of(
            trace["result"], _param_keys(depth), "torch_mlp_gradients(params, X, y, activation)"
        )
        _, expected = numpy_mlp_gradients(params, X, y, activation)
        last_act = _torch_variant(params, X, y, activation, last_activation=True)
        for key in _param_keys(depth):
            _close64(
                got[key],
                expected[key],
                name=f"the gradient of {key}",
                context=where,
                mistakes={
                    "summed the loss over the batch instead of averaging (cross_entropy "
                    "averages by default; the numpy SoftmaxCrossEntropy does too)": len(X)
                    * expected[key],
                    "twice the gradient: was backward() called twice without zeroing .grad?": (
                        2 * expected[key]
                    ),
                    "applied the activation after the last layer too: the last layer of the "
                    "MLP is linear": last_act[key],
                },
            )
        _needs_autograd(trace, "build the model in torch and call loss.backward()")


# ---------------------------------------------------------------- 09.custom_function


def probe_swish(function, x, beta, grad_output) -> Any:
    """Run a learner's ``torch.autograd.Function`` forward and backward; return plain data.

    ``function.apply(x, beta)`` on a float64 copy of ``x``, then its raw
    ``backward`` (to see exactly what it returns), then autograd's gradient with
    ``grad_output``, then ``torch.autograd.gradcheck`` on a small input. The raw
    backward runs under ``rules.enforce(autograd=True)``: it must be written by hand.
    Returns ``...`` when forward is still the stub, else a dict with ``forward``
    (tensor or None), ``forward_type``, ``backward_stub``, ``n_returned``,
    ``grad`` (tensor or None), ``error`` (str or None), ``gradcheck`` (bool or None)
    and ``rule`` (the broken rule's message, or None).
    """
    import torch

    if is_stub(function):
        return ...
    x = torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
    grad_output = torch.as_tensor(np.asarray(grad_output), dtype=torch.float64)
    result: dict[str, Any] = {
        "forward": None,
        "forward_type": None,
        "backward_stub": False,
        "n_returned": None,
        "grad": None,
        "error": None,
        "gradcheck": None,
        "rule": None,
    }
    try:
        y = function.apply(x, beta)
    except Exception as error:  # the learner's code may raise anything
        result["error"] = f"forward raised {type(error).__name__}: {error}"
        return result
    if is_stub(y):
        return ...
    result["forward_type"] = type(y).__name__
    if not isinstance(y, torch.Tensor):
        return result
    result["forward"] = y.detach().clone()
    if y.grad_fn is None or tuple(y.shape) != tuple(x.shape):
        return result
    try:
        # exactly what the learner's backward returns, computed by hand: autograd is off
        # and tripwired while it runs
        with enforce(autograd=True, rule=BY_HAND):
            raw = y.grad_fn.apply(grad_output)
    except Exception as error:
        if isinstance(error, (RuleBroken, Wrong)) or BY_HAND in str(error):
            result["rule"] = str(error)
        else:
            result["error"] = f"backward raised {type(error).__name__}: {error}"
        return result
    if is_stub(raw) or (isinstance(raw, tuple) and any(is_stub(r) for r in raw)):
        result["backward_stub"] = True
        return result
    result["n_returned"] = len(raw) if isinstance(raw, tuple) else 1
    try:
        (grad,) = torch.autograd.grad(y, x, grad_output)
        result["grad"] = grad.detach().clone()
    except Exception as error:
        result["error"] = f"autograd raised {type(error).__name__}: {error}"
        return result
    small = torch.linspace(-2.0, 2.0, 7, dtype=torch.float64).requires_grad_(True)
    try:
        result["gradcheck"] = bool(
            torch.autograd.gradcheck(
                lambda t: function.apply(t, beta), (small,), raise_exception=False
            )
        )
    except Exception:
        result["gradcheck"] = False
    return result


@exercise(
    "09.custom_function",
    title="A custom autograd Function: Swish",
    points=4,
    answer="Swish",
    hints=(
        "forward(ctx, x, beta) computes x * sigmoid(beta * x) and saves what backward needs: "
        "ctx.save_for_backward(x) for the tensor, ctx.beta = beta for the plain float.",
        "With s = sigmoid(beta x), the product rule and the chain rule give d/dx = s + x * "
        "beta * s * (1 - s). backward receives grad_output (dL/dy) and returns dL/dx, so "
        "multiply by grad_output.",
        "backward must return one value per input of forward: (grad_output * (s + beta * x * "
        "s * (1 - s)), None), None for beta, which needs no gradient.",
    ),
)
def _custom_function(answer, rng):
    if is_stub(answer):
        raise NotAttempted
    for _ in range(3):
        shape = tuple(int(n) for n in rng.integers(2, 6, size=int(rng.integers(1, 3))))
        x = rng.normal(scale=2.0, size=shape)
        beta = float(rng.uniform(0.5, 2.5))
        g = rng.normal(size=shape)
        where = f"for x of shape {shape}, beta={beta:.4g}"
        result = run_probe(probe_swish, answer, x, beta, g)
        if not isinstance(result, Mapping):
            raise Wrong("the check could not run Swish.apply(x, beta)")
        if result["error"] and result["forward"] is None:
            raise Wrong(f"Swish.apply(x, beta) failed {where}: {result['error']}")
        if result["forward"] is None:
            raise Wrong(
                f"forward should return a tensor, got {result['forward_type']}: "
                "return x * torch.sigmoid(beta * x)"
            )
        s = _sigmoid(beta * x)
        _close64(
            result["forward"],
            x * s,
            name="the output of forward",
            context=where,
            mistakes={
                "forgot beta: the Swish is x * sigmoid(beta * x)": x * _sigmoid(x),
                "forgot the factor x: the Swish is x * sigmoid(beta * x)": s,
            },
        )
        if result["rule"]:
            raise Wrong(f"backward: {result['rule']}")
        if result["backward_stub"]:
            raise Wrong("forward is right, but backward still returns `...`: fill it in too")
        if result["error"]:
            advice = ""
            if "saved" in result["error"] or "AttributeError" in result["error"]:
                advice = (
                    ": did forward save what backward needs, with ctx.save_for_backward(x) "
                    "(and ctx.beta = beta)?"
                )
            elif "incorrect number of gradients" in result["error"]:
                advice = (
                    ": backward must return one gradient per input of forward, "
                    "(grad_x, None) here, None for the float beta"
                )
            raise Wrong(f"the backward pass failed {where}: {result['error']}{advice}")
        if result["n_returned"] != 2:
            raise Wrong(
                f"backward returned {result['n_returned']} value(s), but forward takes 2 inputs "
                "(x and beta): return one gradient per input, (grad_x, None)"
            )
        local = s + beta * x * s * (1 - s)
        _close64(
            result["grad"],
            g * local,
            name="the gradient from backward",
            context=where + " and a random grad_output",
            mistakes={
                "returned the local derivative without multiplying by grad_output (the chain "
                "rule: dL/dx = dL/dy * dy/dx)": local,
                "forgot the product rule: d/dx [x * s] = s + x * ds/dx, not just s": g * s,
                "forgot the inner derivative beta of sigmoid(beta * x)": g * (s + x * s * (1 - s)),
                "sign error in the derivative of the sigmoid, s * (1 - s)": g
                * (s - beta * x * s * (1 - s)),
            },
        )
        if not result["gradcheck"]:
            raise Wrong(
                "torch.autograd.gradcheck fails on a float64 input from -2 to 2: the backward "
                "does not match finite differences of forward"
            )


# ---------------------------------------------------------------- 09.grad_norm_hooks


@exercise(
    "09.grad_norm_hooks",
    title="Per-layer gradient norms with module hooks",
    points=3,
    answer="layer_output_grad_norms",
    hints=(
        "module.register_full_backward_hook(hook) calls hook(module, grad_input, grad_output) "
        "during backward; grad_output[0] is dL/d(output of the module).",
        "Register a hook on every nn.Linear of the model, run the forward pass, the loss and "
        "loss.backward(), then read what the hooks recorded. Remove the hooks with the "
        "handles that register_full_backward_hook returns.",
        "Hooks fire during backward, so from the LAST layer to the first. Store the norm "
        "under the layer's index (a dict), then return them in layer order: "
        "[norms[i] for i in range(len(linears))].",
    ),
)
def _grad_norm_hooks(answer, rng):
    for case in range(3):
        depth = (2, 3, 4)[case]
        params, X, y, where = _classification_case(rng, depth)
        trace = _traced(answer, _copy(params), X.copy(), y.copy())
        got = trace["result"]
        _returned_none(got, "layer_output_grad_norms")
        if isinstance(got, Mapping):
            raise Wrong("return a list of floats (one per linear layer, input layer first)")
        got = _array(got, "layer_output_grad_norms(params, X, y)")
        grads, outputs = _mlp_backward(params, X, y)
        expected = np.array([np.linalg.norm(g) for g in outputs])
        weights = np.array([np.linalg.norm(grads[f"W{i}"]) for i in range(1, depth + 1)])
        _close64(
            got,
            expected,
            name="the list of norms",
            context=where,
            mistakes={
                "listed in the order the hooks fired, last layer first: return them input "
                "layer first": expected[::-1],
                "the norms of the weight gradients; this exercise asks for the gradient at "
                "each layer's output, grad_output[0]": weights,
                "squared norms: the Euclidean norm is the square root of the sum of squares": (
                    expected**2
                ),
                "summed the loss over the batch instead of averaging": len(X) * expected,
            },
        )
        _needs_autograd(trace, "run loss.backward() and let the hooks record the norms")
        if trace["hooks"] == 0:
            raise Wrong(
                "this exercise asks you to read the gradients with backward hooks "
                "(register_full_backward_hook); the answer registered none"
            )


# ---------------------------------------------------------------- 09.clip_hook


@exercise(
    "09.clip_hook",
    title="Clip a gradient in flight with a tensor hook",
    points=3,
    answer="clipped_gradients",
    hints=(
        "tensor.register_hook(fn) calls fn(grad) when the gradient of that tensor has been "
        "computed; if fn RETURNS a tensor, autograd uses it instead of grad from then on.",
        "Run the forward pass by hand (h = layer(h) for each layer of the model) and, right "
        "after every hidden activation, register on h a hook returning "
        "grad.clamp(-clip, clip). Then loss.backward() and read the parameter gradients.",
        "h.register_hook(lambda grad: grad.clamp(-clip, clip)) after each nn.ReLU; return "
        "backprop_course.torch_tools.grads_from_torch(model) (numpy layout).",
    ),
)
def _clip_hook(answer, rng):
    for case in range(3):
        depth = (2, 3, 3)[case]
        params, X, y, where = _classification_case(rng, depth)
        _, outputs = _mlp_backward(params, X, y)
        hidden = np.concatenate([np.abs(g).ravel() for g in outputs[:-1]])
        clip = float(np.quantile(hidden, 0.5))
        where += f", clip={clip:.4g}"
        trace = _traced(answer, _copy(params), X.copy(), y.copy(), clip)
        _returned_none(trace["result"], "clipped_gradients")
        got = _dict_of(trace["result"], _param_keys(depth), "clipped_gradients(params, X, y, clip)")
        expected, _ = _mlp_backward(params, X, y, clip=clip)
        plain, _ = _mlp_backward(params, X, y)
        for key in _param_keys(depth):
            _close64(
                got[key],
                expected[key],
                name=f"the gradient of {key}",
                context=where,
                mistakes={
                    "nothing was clipped: a hook must RETURN the modified gradient (one that "
                    "returns None, or clamps a copy, leaves the gradient unchanged)": plain[key],
                    "clipped the parameter gradients; this exercise clips the gradient flowing "
                    "back through each hidden activation": np.clip(plain[key], -clip, clip),
                },
            )
        _needs_autograd(trace, "register the hooks, then call loss.backward()")
        if trace["hooks"] == 0:
            raise Wrong(
                "this exercise asks you to clip the gradient in flight with tensor hooks "
                "(register_hook); the answer registered none"
            )
        if trace["in_place"]:
            raise Wrong(
                "a hook changed its grad argument in place and returned None: lesson 09 calls "
                "that unsupported (autograd may already have used, or may share, that tensor). "
                "Return the new gradient instead: return grad.clamp(-clip, clip)"
            )


# ---------------------------------------------------------------- 09.train_step


def _momentum_run(params, X, y, lr, momentum, steps, *, zero_grad=True):
    params = _copy(params)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(steps):
        _, grads = numpy_mlp_gradients(params, X, y)
        for k in params:
            total[k] = grads[k] if zero_grad else total[k] + grads[k]
            velocity[k] = momentum * velocity[k] + total[k]
            params[k] = params[k] - lr * velocity[k]
    return params


@exercise(
    "09.train_step",
    title="Training with nn.Module and torch.optim",
    points=3,
    answer="train_with_sgd",
    hints=(
        "Build the model with backprop_course.torch_tools.torch_mlp_from_params(params) and "
        "the optimizer with torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum).",
        "Each step: optimizer.zero_grad(), loss = F.cross_entropy(model(X), y), "
        "loss.backward(), optimizer.step(). In that order: zero_grad between backward and "
        "step would throw the gradient away.",
        "After the loop return backprop_course.torch_tools.params_from_torch(model): it "
        "transposes each nn.Linear weight back to the (in, out) layout.",
    ),
)
def _train_step(answer, rng):
    for _ in range(2):
        params, X, y, where = _classification_case(rng, 2)
        lr = float(rng.uniform(0.1, 0.5))
        momentum = float(rng.uniform(0.5, 0.9))
        steps = int(rng.integers(3, 7))
        where += f", lr={lr:.3g}, momentum={momentum:.3g}, steps={steps}"
        trace = _traced(answer, _copy(params), X.copy(), y.copy(), lr, momentum, steps)
        _returned_none(trace["result"], "train_with_sgd")
        got = _dict_of(
            trace["result"], _param_keys(2), "train_with_sgd(params, X, y, lr, momentum, steps)"
        )
        expected = _momentum_run(params, X, y, lr, momentum, steps)
        no_zero = _momentum_run(params, X, y, lr, momentum, steps, zero_grad=False)
        plain = _momentum_run(params, X, y, lr, 0.0, steps)
        extra = _momentum_run(params, X, y, lr, momentum, steps + 1)
        fewer = _momentum_run(params, X, y, lr, momentum, steps - 1)
        for key in _param_keys(2):
            _close64(
                got[key],
                expected[key],
                name=f"the trained {key}",
                context=where,
                mistakes={
                    "forgot optimizer.zero_grad(): each step's gradient was added to the "
                    "gradients of all earlier steps": no_zero[key],
                    "the parameters did not change: call optimizer.step() after "
                    "loss.backward(), and zero_grad() before backward, not between": params[key],
                    "ignored the momentum: torch.optim.SGD(..., momentum=momentum)": plain[key],
                    "one step too many": extra[key],
                    "one step too few": fewer[key],
                },
            )
        if trace["steps"] == 0:
            raise Wrong(
                "this exercise asks you to train with torch.optim (torch.optim.SGD(..., "
                "momentum=momentum)); the answer never called an optimizer's step()"
            )
        _needs_autograd(trace, "each step needs loss.backward() before optimizer.step()")
