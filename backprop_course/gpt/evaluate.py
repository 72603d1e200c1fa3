"""How good is the model: the validation loss, exactly or as a quick estimate.

``evaluate`` predicts every token of the validation text once (consecutive
windows), so its figure does not depend on a seed: the benchmark's number.
``estimate_loss`` is nanoGPT's cheaper estimate during training, the mean loss
of a few random batches.
"""

from __future__ import annotations

import torch

from backprop_course.gpt.data import get_batch, val_windows
from backprop_course.gpt.precision import autocast_context

__all__ = ["estimate_loss", "evaluate"]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: torch.Tensor,
    block_size: int,
    *,
    precision: str = "fp32",
    limit: int | None = None,
    batch_size: int = 64,
) -> tuple[float, int]:
    """Mean cross-entropy over consecutive ``block_size`` windows of ``data``.

    Every token (up to the last partial window, or the first ``limit``
    windows) is predicted once, so the figure does not depend on a seed.
    Returns ``(loss, tokens)``.
    """
    device = next(model.parameters()).device
    x_all, y_all = val_windows(data, block_size, limit)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with autocast_context(device, precision):
            for i in range(0, len(x_all), batch_size):
                x = x_all[i : i + batch_size].to(device)
                y = y_all[i : i + batch_size].to(device)
                _, loss = model(x, y)
                total += loss.item() * y.numel()
                count += y.numel()
    finally:
        model.train(was_training)
    return total / count, count


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    iters: int,
    *,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
) -> float:
    """nanoGPT's estimate: the mean loss of ``iters`` random batches (quick, a little noisy)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    try:
        with autocast_context(device, precision):
            for _ in range(iters):
                x, y = get_batch(data, batch_size, block_size, generator, device)
                losses.append(model(x, y)[1].float())
    finally:
        model.train(was_training)
    return torch.stack(losses).mean().item()
