"""How fast training runs: tokens per second and model FLOPs utilization (MFU).

One training step of a GPT costs about ``6 N`` floating-point operations per
token for the weight matmuls (2 in the forward pass, 4 in the backward, per
parameter) plus ``12 L H Q T`` for attention (the ``q k^T`` and ``att v``
matmuls over a context of ``T``, ``L`` layers of ``H`` heads of ``Q`` channels),
the estimate of the PaLM paper that nanoGPT uses. MFU is the achieved
FLOP/s over the device's peak dense tensor-core FLOP/s *for the precision the
matmuls ran in*: how much of the hardware the model really uses. bf16 and fp16
share one peak; an fp32 run on CUDA multiplies in TF32 (the trainer allows
it), whose peak is half of that on every GPU in the table. On a CPU, or a GPU
not in the table, there is no meaningful peak, and MFU is ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["PEAK_BF16_FLOPS", "ThroughputMeter", "flops_per_token", "peak_flops"]

# Dense tensor-core peak of each precision as a fraction of the bf16 one (the data sheets
# of the A100, H100, H200, L40S and L4 all give fp16 = bf16 and TF32 = bf16 / 2).
_PEAK_FRACTION = {"bf16": 1.0, "fp16": 1.0, "fp32": 0.5}

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
# Matched in order against torch.cuda.get_device_name(): specific names first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (its device name says "H100 80GB HBM3")
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def flops_per_token(
    n_params: int, n_layer: int, n_head: int, head_dim: int, block_size: int
) -> int:
    """Training FLOPs per token: ``6 N + 12 L H Q T`` (forward and backward)."""
    return 6 * n_params + 12 * n_layer * n_head * head_dim * block_size


def peak_flops(device=None, precision: str = "bf16") -> float | None:
    """The peak FLOP/s of a CUDA ``device`` (a name, a torch device or None) for the
    ``precision`` of the matmuls (``bf16``, ``fp16``, or ``fp32`` run as TF32), or None.

    A string that is not ``cuda``/``cpu``/``mps`` is taken as a GPU name,
    so ``peak_flops("NVIDIA H100 80GB HBM3")`` works without a GPU.
    """
    if precision not in _PEAK_FRACTION:
        raise ValueError(f"precision must be one of {', '.join(_PEAK_FRACTION)}, got {precision!r}")
    name = None
    if isinstance(device, str) and device.split(":")[0] not in ("cuda", "cpu", "mps"):
        name = device
    else:
        import torch

        kind = torch.device(device).type if device is not None else "cuda"
        if kind != "cuda" or not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(torch.device(device) if device is not None else None)
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in name.lower():
            return peak * _PEAK_FRACTION[precision]
    return None


class ThroughputMeter:
    """Tokens per second and MFU, over intervals and over the whole run.

    Call :meth:`start` when the timed work begins and :meth:`lap` with the
    number of tokens processed since the previous call; on a GPU, synchronise
    before calling (the trainer does) so the clock sees finished work.
    """

    def __init__(
        self,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.clock = clock  # tests pass a fake clock
        self.tokens = 0
        self.seconds = 0.0
        self._last: float | None = None

    def start(self) -> None:
        self._last = self.clock()

    def elapsed(self) -> float:
        """Seconds on the clock so far, the running interval included (no lap, no sync)."""
        running = self.clock() - self._last if self._last is not None else 0.0
        return self.seconds + running

    def lap(self, tokens: int) -> float:
        """Record ``tokens`` done since the last lap; return this interval's tokens per second."""
        if self._last is None:
            raise RuntimeError("ThroughputMeter.lap() called before start()")
        now = self.clock()
        elapsed, self._last = now - self._last, now
        self.tokens += tokens
        self.seconds += elapsed
        return tokens / elapsed if elapsed > 0 else float("inf")

    def pause(self) -> None:
        """Stop the clock (e.g. during an evaluation); :meth:`start` resumes it."""
        self._last = None

    @property
    def tokens_per_s(self) -> float | None:
        """Average over every lap so far."""
        return self.tokens / self.seconds if self.seconds > 0 else None

    def mfu(self, tokens_per_s: float | None = None) -> float | None:
        """Fraction of the peak used at ``tokens_per_s`` (default: the run's average)."""
        rate = self.tokens_per_s if tokens_per_s is None else tokens_per_s
        if rate is None or self.flops_per_token is None or not self.peak_flops:
            return None
        return rate * self.flops_per_token / self.peak_flops
