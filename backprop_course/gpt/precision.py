"""Mixed precision set-up: the autocast context of the forward pass and the loss scaler.

``fp32`` runs as written. ``bf16`` runs the matmuls inside ``torch.autocast`` in
bfloat16 (fp32's range, so nothing else is needed). ``fp16`` does the same in
float16 and turns on a gradient scaler: the loss is multiplied before the
backward pass so small gradients do not underflow, the gradients are divided
back before clipping and the step, and a step whose gradients overflowed is
skipped.
"""

from __future__ import annotations

import contextlib

import torch

from backprop_course.device import device_name

__all__ = ["autocast_context", "grad_scaler"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, precision: str):
    """The context for forward passes: nothing for fp32, autocast to bf16/fp16 otherwise.

    Raises a ValueError naming ``TrainConfig.precision`` when this device (and
    torch build) cannot autocast to it.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = _DTYPES[precision]
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"TrainConfig.precision='bf16' is not supported by {device_name(device)}; "
            "use 'fp16' (with loss scaling) or 'fp32'"
        )
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            probe = torch.nn.functional.linear(
                torch.ones(2, 2, device=device), torch.ones(2, 2, device=device)
            )
        if probe.dtype != dtype:
            raise RuntimeError(f"autocast produced {probe.dtype}")
    except Exception as error:  # torch builds differ in what each device can autocast
        raise ValueError(
            f"TrainConfig.precision={precision!r} is not supported on {device.type} by this "
            f"torch {torch.__version__} ({error}); use 'bf16' or 'fp32'"
        ) from None
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """A gradient scaler, switched on for ``fp16`` only (elsewhere its calls pass through)."""
    enabled = precision == "fp16"
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3, any device
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")
