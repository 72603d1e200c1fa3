"""Scaling backprop out: data-parallel workers, and the memory that backward keeps.

Two halves, used by lesson 12.

**Data parallelism.** :func:`run_ddp` starts ``world_size`` worker processes
(start method ``spawn``) that form a ``torch.distributed`` process group over
``127.0.0.1``: backend ``gloo`` on the CPU, ``nccl`` when every worker has a GPU
of its own. Each worker builds the same small MLP (same seed), wraps it in
``DistributedDataParallel``, runs forward and backward on its shard of one batch
and reports its gradients, before and after DDP's all-reduce, and timings of
``all_reduce`` for several tensor sizes. The parent computes the gradient of the
whole batch in one process, for comparison. The workers live here, not in a
notebook, because spawned processes import their target by module path.

**Memory.** :class:`SavedTensorMeter` counts the bytes that autograd saves for
backward (via ``torch.autograd.graph.saved_tensors_hooks``: exact, on any
device), :func:`checkpointed_forward` runs a stack of blocks with
``torch.utils.checkpoint`` every ``every`` blocks, and :func:`time_forward_backward`
times the recompute it costs.
"""

from __future__ import annotations

import itertools
import os
import queue as queue_module
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from torch import nn

from backprop_course.device import torch_threads

__all__ = [
    "DDPResult",
    "SavedTensorMeter",
    "WorkerError",
    "checkpointed_forward",
    "combined_batch_gradient",
    "cuda_peak_bytes",
    "free_port",
    "make_batch",
    "make_blocks",
    "make_mlp",
    "pick_backend",
    "ring_allreduce_bytes",
    "run_ddp",
    "shard_rows",
    "time_forward_backward",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---------------------------------------------------------------- the model and its data


def make_mlp(sizes=(8, 32, 32, 1), *, seed: int = 0, dtype: str = "float64") -> nn.Sequential:
    """A tanh MLP with layer widths ``sizes``; the same seed gives the same weights anywhere."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    return nn.Sequential(*layers).to(_DTYPES[dtype])


def make_batch(batch_size: int, n_in: int, *, seed: int = 0, dtype: str = "float64"):
    """A regression batch ``(X, y)``: X (batch_size, n_in), y (batch_size, 1)."""
    generator = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(batch_size, n_in, generator=generator, dtype=_DTYPES[dtype])
    y = torch.sin(X.sum(dim=1, keepdim=True)) + 0.1 * torch.randn(
        batch_size, 1, generator=generator, dtype=_DTYPES[dtype]
    )
    return X, y


def shard_rows(batch_size: int, rank: int, world_size: int) -> slice:
    """The rows of a batch that ``rank`` works on: contiguous blocks whose sizes differ by <= 1.

    The first ``batch_size % world_size`` ranks take one extra row (as ``np.array_split``).
    """
    base, extra = divmod(batch_size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _gradients(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()}


def combined_batch_gradient(sizes, X, y, *, seed: int = 0) -> dict[str, np.ndarray]:
    """One process, whole batch: the gradient of the mean squared error, per parameter."""
    model = make_mlp(sizes, seed=seed, dtype=str(X.dtype).removeprefix("torch."))
    nn.functional.mse_loss(model(X), y).backward()
    return _gradients(model)


def ring_allreduce_bytes(n_bytes: float, world_size: int) -> float:
    """Bytes each worker sends in a ring all-reduce of an ``n_bytes`` buffer.

    A reduce-scatter then an all-gather, each ``world_size - 1`` steps of one
    chunk of ``n_bytes / world_size``: ``2 (n - 1) / n * n_bytes`` in all.
    """
    return 2 * (world_size - 1) / world_size * n_bytes


# ---------------------------------------------------------------- the process group


class WorkerError(RuntimeError):
    """A worker process failed; the message carries its traceback."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_backend(world_size: int) -> str:
    """``nccl`` when there is one CUDA GPU per worker, else ``gloo`` (the CPU backend)."""
    import torch.distributed as dist

    if (
        torch.cuda.is_available()
        and torch.cuda.device_count() >= world_size
        and dist.is_nccl_available()
    ):
        return "nccl"
    return "gloo"


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; pickled to each spawned process."""

    world_size: int
    backend: str
    port: int
    sizes: tuple[int, ...]
    batch_size: int
    dtype: str
    seed: int
    allreduce_numels: tuple[int, ...]
    repeats: int
    timeout: float
    fail_rank: int | None


@dataclass
class DDPResult:
    """What :func:`run_ddp` measured. Gradients are dicts ``parameter name -> array``."""

    world_size: int
    backend: str
    shard_sizes: list[int]
    local_grads: list[dict[str, np.ndarray]]  # per rank, own shard only (no all-reduce)
    ddp_grads: list[dict[str, np.ndarray]]  # per rank, after DDP's all-reduce
    reference_grads: dict[str, np.ndarray]  # one process, the whole batch
    allreduce_seconds: dict[int, float]  # bytes -> seconds per all_reduce (slowest rank)
    step_seconds: dict[str, float]  # forward+backward, "no_sync" and "sync" (rank 0)
    seconds: float  # wall time of the whole run, process start-up included

    def max_difference(self) -> float:
        """Largest |DDP gradient - whole-batch gradient| over every rank and parameter."""
        return max(
            float(np.max(np.abs(grads[name] - ref)))
            for grads in self.ddp_grads
            for name, ref in self.reference_grads.items()
        )


def _time(fn, repeats: int, device: torch.device) -> float:
    """Seconds of ``fn()``: the best of ``repeats`` runs after one warm-up.

    The minimum, not the mean: on a shared machine other processes only ever add time.
    """
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _work(rank: int, job: _Job) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(job.port)
    torch.set_num_threads(1)  # one core per worker: the workers share the machine
    device = torch.device(f"cuda:{rank}" if job.backend == "nccl" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl: one GPU per rank, chosen before joining
    dist.init_process_group(
        job.backend,
        rank=rank,
        world_size=job.world_size,
        timeout=timedelta(seconds=job.timeout),
    )
    try:
        if job.fail_rank == rank:
            raise RuntimeError(f"rank {rank} failed on purpose (fail_rank={rank})")
        model = make_mlp(job.sizes, seed=job.seed, dtype=job.dtype).to(device)
        ddp = DDP(model, device_ids=[rank] if device.type == "cuda" else None)
        X, y = make_batch(job.batch_size, job.sizes[0], seed=job.seed, dtype=job.dtype)
        rows = shard_rows(job.batch_size, rank, job.world_size)
        xs, ys = X[rows].to(device), y[rows].to(device)

        def step():
            nn.functional.mse_loss(ddp(xs), ys).backward()

        with ddp.no_sync():  # backward without the all-reduce: this shard's gradient only
            step()
        local = _gradients(model)
        model.zero_grad(set_to_none=True)
        step()  # DDP all-reduces (averages) the gradients during this backward
        averaged = _gradients(model)

        def step_no_sync():
            with ddp.no_sync():
                step()

        step_seconds = {
            "no_sync": _time(step_no_sync, job.repeats, device),
            "sync": _time(step, job.repeats, device),
        }
        allreduce = {}
        for numel in job.allreduce_numels:
            buffer = torch.ones(numel, dtype=torch.float32, device=device)
            dist.barrier()
            allreduce[numel * 4] = _time(lambda b=buffer: dist.all_reduce(b), job.repeats, device)
        return {
            "rows": (rows.start, rows.stop),
            "local": local,
            "averaged": averaged,
            "step_seconds": step_seconds,
            "allreduce": allreduce,
        }
    finally:
        dist.destroy_process_group()


def _worker(rank: int, job: _Job, results) -> None:
    """Process entry point: report ("ok", rank, payload) or ("error", rank, traceback)."""
    try:
        results.put(("ok", rank, _work(rank, job)))
    except BaseException:
        results.put(("error", rank, traceback.format_exc()))


def run_ddp(
    world_size: int = 2,
    backend: str | None = None,
    *,
    sizes=(8, 32, 32, 1),
    batch_size: int = 32,
    dtype: str = "float64",
    seed: int = 0,
    allreduce_numels=(2**8, 2**12, 2**16, 2**20),
    repeats: int = 10,
    timeout: float = 120.0,
    fail_rank: int | None = None,
) -> DDPResult:
    """Train one step of an MLP with DDP on ``world_size`` processes; see the module docstring.

    ``backend`` defaults to :func:`pick_backend`. ``timeout`` bounds the whole run
    in seconds: a stuck run raises ``TimeoutError``, a failing worker
    :class:`WorkerError` with its traceback; every process is ended either way.
    ``fail_rank`` makes that rank raise on purpose (to see how failures surface).
    """
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if batch_size < world_size:
        raise ValueError(f"batch_size={batch_size} leaves some of {world_size} workers no rows")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    backend = backend or pick_backend(world_size)
    job = _Job(
        world_size=world_size,
        backend=backend,
        port=free_port(),
        sizes=tuple(sizes),
        batch_size=batch_size,
        dtype=dtype,
        seed=seed,
        allreduce_numels=tuple(allreduce_numels),
        repeats=repeats,
        timeout=timeout,
        fail_rank=fail_rank,
    )
    context = mp.get_context("spawn")
    results = context.Queue()
    start = time.perf_counter()
    processes = [
        context.Process(target=_worker, args=(rank, job, results), daemon=True)
        for rank in range(world_size)
    ]
    payloads: dict[int, dict] = {}
    finished = False
    try:
        for process in processes:
            process.start()
        while len(payloads) < world_size:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                missing = sorted(set(range(world_size)) - set(payloads))
                raise TimeoutError(
                    f"DDP run timed out after {timeout:g} s; rank(s) {missing} never reported"
                )
            try:
                status, rank, payload = results.get(timeout=min(left, 0.5))
            except queue_module.Empty:
                _raise_if_died(processes, payloads)
                continue
            if status == "error":
                raise WorkerError(f"DDP worker rank {rank} of {world_size} failed:\n{payload}")
            payloads[rank] = payload
        finished = True
    finally:
        # After a failure the others may wait forever for the lost rank: end them now.
        _end(processes, grace=5.0 if finished else 0.0)
        results.close()
    seconds = time.perf_counter() - start

    X, y = make_batch(batch_size, sizes[0], seed=seed, dtype=dtype)
    ranks = range(world_size)
    return DDPResult(
        world_size=world_size,
        backend=backend,
        shard_sizes=[payloads[r]["rows"][1] - payloads[r]["rows"][0] for r in ranks],
        local_grads=[payloads[r]["local"] for r in ranks],
        ddp_grads=[payloads[r]["averaged"] for r in ranks],
        reference_grads=combined_batch_gradient(sizes, X, y, seed=seed),
        allreduce_seconds={
            n: max(payloads[r]["allreduce"][n] for r in ranks) for n in payloads[0]["allreduce"]
        },
        step_seconds=payloads[0]["step_seconds"],
        seconds=seconds,
    )


def _raise_if_died(processes, payloads) -> None:
    for rank, process in enumerate(processes):
        if rank not in payloads and process.exitcode not in (None, 0):
            raise WorkerError(
                f"DDP worker rank {rank} died with exit code {process.exitcode} before reporting"
            )


def _end(processes, grace: float) -> None:
    """Give each worker ``grace`` seconds to exit, then terminate (and if need be kill) it."""
    for process in processes:
        if process.pid is not None:
            process.join(timeout=grace)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=2)
        if process.is_alive():
            process.kill()
            process.join()


# ---------------------------------------------------------------- memory of backprop


class SavedTensorMeter:
    """Count the bytes autograd saves for backward inside a ``with`` block.

    Each saved tensor's storage is counted once (a tensor saved by two ops, or
    views of one buffer, cost memory once). Storages of the tensors in
    ``exclude`` (the parameters: they exist whether or not we train) are not
    counted. Run the forward pass inside the block; ``bytes`` and ``count``
    then hold the total and the number of distinct storages.
    """

    def __init__(self, exclude=()):
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: set[int] = set()
        self.bytes = 0
        self.count = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._excluded and key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
            self.count += 1
        return tensor

    @staticmethod
    def _unpack(tensor):
        return tensor

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def make_blocks(depth: int, width: int, *, seed: int = 0) -> nn.ModuleList:
    """``depth`` blocks Linear(width, width) -> Tanh, float32, seeded."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))
    torch.random.set_rng_state(generator_state)
    return blocks


def checkpointed_forward(blocks, x: torch.Tensor, every: int | None = None) -> torch.Tensor:
    """Run ``x`` through ``blocks``; with ``every=k``, checkpoint each segment of k blocks.

    A checkpointed segment keeps only its input for backward and runs its forward
    again during backward to rebuild the rest (``torch.utils.checkpoint``).
    """
    from torch.utils.checkpoint import checkpoint

    if every is None:
        for block in blocks:
            x = block(x)
        return x

    def segment(start):
        def run(h):
            for block in blocks[start : start + every]:
                h = block(h)
            return h

        return run

    for start in range(0, len(blocks), every):
        x = checkpoint(segment(start), x, use_reentrant=False)
    return x


def time_forward_backward(
    blocks, x: torch.Tensor, every: int | None, repeats: int = 5, threads: int | None = 1
) -> float:
    """Seconds of forward + backward (loss: mean of squares) with ``every``; best of ``repeats``.

    ``threads`` sets torch's CPU threads while timing (restored after): one thread gives
    steady timings on a shared CPU, where competing threads stall each other. ``None``
    leaves the setting alone.
    """

    def step():
        blocks.zero_grad(set_to_none=True)
        checkpointed_forward(blocks, x, every).pow(2).mean().backward()

    with torch_threads(threads if x.device.type == "cpu" else None):
        return _time(step, repeats, x.device)


def cuda_peak_bytes(blocks, x: torch.Tensor, every: int | None) -> int:
    """Peak CUDA memory allocated during forward + backward, above what was allocated before."""
    device = x.device
    blocks.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    checkpointed_forward(blocks, x, every).pow(2).mean().backward()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
