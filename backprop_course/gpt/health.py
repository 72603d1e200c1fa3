"""Training-health monitoring: is the run learning, and if it broke, where?

Three signals, measured every ``every`` steps:

- the loss, which must stay finite;
- per-layer gradient norms ``||dL/dW||``: vanishing (near 0) or exploding
  (growing without bound) gradients show up here first;
- per-layer update-to-data ratios ``||W_after - W_before|| / ||W_before||``:
  about 1e-3 per step is a common rule of thumb for large models; much larger
  means the learning rate shakes the weights, much smaller means they barely
  move. Adam moves each number by about the learning rate, so the ratio is
  roughly ``lr / rms(W)``: a small model at a high rate sits well above 1e-3
  (lesson 11 shows the course's own runs).

A NaN or inf stops training with :class:`NonFiniteError`, which names the step
and the layer: a parameter that holds non-finite values, else the first module
whose output goes non-finite in a forward pass (found with forward hooks),
else the layer whose gradient went non-finite nearest the output (a NaN made
in the backward pass flows on into every layer before it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["HealthMonitor", "NonFiniteError", "first_nonfinite_module"]


class NonFiniteError(FloatingPointError):
    """Training produced NaN/inf. ``step``, ``layer`` and ``what`` say where."""

    def __init__(self, step: int, layer: str, what: str):
        self.step, self.layer, self.what = step, layer, what
        super().__init__(
            f"training stopped at step {step}: {what} in layer {layer!r}. "
            "Lower the learning rate, clip gradients, or use bf16/fp32 instead of fp16."
        )


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def first_nonfinite_module(model: nn.Module, forward: Callable[[], object]) -> str | None:
    """Run ``forward()`` with hooks on every module; the first (in execution order) whose
    output holds NaN/inf, or None if every output is finite."""
    found: list[str] = []
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            outputs = output if isinstance(output, tuple) else (output,)
            if not found and any(
                isinstance(o, torch.Tensor) and o.is_floating_point() and not _finite(o)
                for o in outputs
            ):
                found.append(name)

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):  # leaves: Linear, LayerNorm, Embedding...
            handles.append(module.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


class HealthMonitor:
    """Watches one model's loss, gradients and updates; raises :class:`NonFiniteError`.

    The training loop calls, at a monitored step (``should_record(step)``):
    ``check_loss`` after the forward pass, ``record_gradients`` after the
    backward pass (after unscaling, before clipping), ``snapshot`` before the
    optimizer step and ``record_updates`` after it. ``history`` holds one dict
    per monitored step: ``step``, ``loss``, ``grad_norm`` (global),
    ``grad_norms`` and ``update_ratios`` (per parameter name).

    ``allow_nonfinite_grads=True`` (fp16 with loss scaling) tolerates inf/NaN
    gradients: the gradient scaler skips those steps and lowers its scale.
    """

    def __init__(self, model: nn.Module, every: int = 1, allow_nonfinite_grads: bool = False):
        self.model = model
        self.every = every
        self.allow_nonfinite_grads = allow_nonfinite_grads
        self.named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.history: list[dict] = []
        self.skipped_steps: list[int] = []
        self._before: list[torch.Tensor] | None = None

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.named]

    def should_record(self, step: int) -> bool:
        return step % self.every == 0

    # ------------------------------------------------------------ checks

    def check_loss(
        self, step: int, loss: float, forward: Callable[[], object] | None = None
    ) -> None:
        """Raise if ``loss`` is NaN/inf, naming the layer where it started.

        ``forward`` re-runs the forward pass of this step; with it, the monitor
        can name the first module whose output went non-finite.
        """
        if math.isfinite(loss):
            self.history.append({"step": step, "loss": loss})
            return
        what = f"the loss is {loss}"
        for name, p in self.named:
            if not _finite(p.detach()):
                raise NonFiniteError(step, name, f"{what}; the parameter holds NaN/inf")
        if forward is not None:
            module = first_nonfinite_module(self.model, forward)
            if module is not None:
                raise NonFiniteError(step, module, f"{what}; the output first turns NaN/inf")
        raise NonFiniteError(step, "loss", what)

    def record_gradients(self, step: int) -> float:
        """Per-layer gradient norms of this step; return the global norm (may be inf)."""
        norms = {}
        bad = []
        for name, p in self.named:
            if p.grad is None:
                continue
            norm = p.grad.detach().float().norm().item()
            norms[name] = norm
            if not math.isfinite(norm):
                bad.append(name)
        total = math.sqrt(sum(n * n for n in norms.values()))
        if bad:
            if self.allow_nonfinite_grads:
                self.skipped_steps.append(step)
            else:
                # The non-finite value starts nearest the output and flows backwards.
                raise NonFiniteError(
                    step,
                    bad[-1],
                    f"the gradient is NaN/inf ({len(bad)} of {len(norms)} layers affected)",
                )
        record = self._record(step)
        record["grad_norm"] = total
        record["grad_norms"] = norms
        return total

    def snapshot(self) -> None:
        """Remember the weights before the optimizer step."""
        self._before = [p.detach().float().clone() for _, p in self.named]

    def record_updates(self, step: int) -> dict[str, float]:
        """``||W_after - W_before|| / ||W_before||`` per layer since :meth:`snapshot`."""
        if self._before is None:
            raise RuntimeError("HealthMonitor.record_updates() needs snapshot() before the step")
        ratios = {}
        for (name, p), before in zip(self.named, self._before):
            scale = before.norm().item()
            ratios[name] = (p.detach().float() - before).norm().item() / scale if scale else 0.0
        self._before = None
        self._record(step)["update_ratios"] = ratios
        return ratios

    def _record(self, step: int) -> dict:
        if not self.history or self.history[-1]["step"] != step:
            self.history.append({"step": step})
        return self.history[-1]

    # ------------------------------------------------------------ reading

    def series(self, key: str) -> tuple[list[int], dict[str, list[float]]]:
        """Steps and, per layer, the values of ``key`` (``grad_norms`` or ``update_ratios``)."""
        rows = [r for r in self.history if key in r]
        steps = [r["step"] for r in rows]
        values = {name: [r[key].get(name, math.nan) for r in rows] for name in self.layer_names}
        return steps, values

    def summary(self) -> str:
        """One line about the latest monitored step."""
        if not self.history:
            return "no steps monitored yet"
        last = self.history[-1]
        parts = [f"step {last['step']}"]
        if "loss" in last:
            parts.append(f"loss {last['loss']:.4f}")
        if "grad_norm" in last:
            parts.append(f"grad norm {last['grad_norm']:.3g}")
        if last.get("update_ratios"):
            ratios = [r for r in last["update_ratios"].values() if r > 0]
            if ratios:
                mean_log = sum(math.log10(r) for r in ratios) / len(ratios)
                parts.append(f"update/data ~1e{mean_log:.1f}")
        return ", ".join(parts)
