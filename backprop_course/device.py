"""Device choice, decided in one place: CUDA, then Apple's MPS, then the CPU.

torch is imported inside the functions, so ``backprop-course doctor`` can say
that torch is missing instead of failing to start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "DeviceInfo",
    "describe_device",
    "device_name",
    "pick_device",
    "resolve_device",
    "synchronize",
    "torch_threads",
]


@dataclass(frozen=True)
class DeviceInfo:
    """Which device the course will use, and a sentence about it."""

    kind: str  # "cuda", "mps" or "cpu"
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.name} ({self.detail})"


def pick_device(prefer: str | None = None) -> str:
    """The best available device as a string torch accepts: ``cuda``, ``mps`` or ``cpu``.

    ``prefer`` asks for one; asking for a device that is not there raises a
    ``RuntimeError`` that names the device found instead.
    """
    import torch

    found = "cpu"
    if torch.cuda.is_available():
        found = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found = "mps"
    if prefer is None or prefer == found or prefer == "cpu":
        return prefer or found
    raise RuntimeError(
        f"device {prefer!r} was asked for but is not available; the best device found is {found!r}"
    )


def resolve_device(requested: str | None = None):
    """A ``torch.device``: for ``None`` the best there is (CUDA, then MPS, then CPU),
    else the one asked for; asking for one that is not there raises a ``RuntimeError``
    naming the device found."""
    import torch

    if requested is None:
        return torch.device(pick_device())
    device = torch.device(requested)
    pick_device(device.type)  # raises RuntimeError naming the device found
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise RuntimeError(
            f"device {requested!r} was asked for but only "
            f"{torch.cuda.device_count()} CUDA device(s) are present"
        )
    return device


def device_name(device) -> str:
    """A human name for a torch device: the GPU model, or the CPU and its thread count."""
    import platform

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    plural = "thread" if threads == 1 else "threads"
    return f"{platform.processor() or platform.machine()} CPU, {threads} {plural}"


def synchronize(device) -> None:
    """Wait until the work queued on ``device`` is done (GPU work runs asynchronously:
    a clock read without this measures the queueing, not the work)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def describe_device() -> DeviceInfo:
    """What :func:`pick_device` chooses, with its name and size."""
    import os

    import torch

    kind = pick_device()
    if kind == "cuda":
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            kind,
            props.name,
            f"{props.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}",
        )
    if kind == "mps":
        return DeviceInfo(kind, "Apple GPU", "Metal Performance Shaders")
    import platform

    name = platform.processor() or platform.machine() or "CPU"
    return DeviceInfo(
        kind,
        name,
        f"{os.cpu_count()} cores, {torch.get_num_threads()} "
        "torch threads; GPU lessons shrink themselves to fit",
    )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads, then restore the setting.

    Tiny tensors run fastest, and most steadily on a busy machine, on one thread:
    two threads handing tiny ops to each other can be hundreds of times slower.
    ``None`` leaves the setting alone.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
