"""Run one function on several real ``torch.distributed`` processes and collect what each returns.

:func:`run_ranks` forks ``world_size`` worker processes from the calling one (a
notebook kernel, a test, the grader's sandboxed kernel). Forking, unlike
``spawn``, copies the caller's memory: a function defined in a notebook cell runs
in every worker as it is, with no need to be importable. Each worker joins a
process group over ``127.0.0.1`` (``gloo``: the CPU backend, which is what a
laptop and the grader's sandbox have), calls ``fn(rank, world_size, *args)``
and sends back what it returned (plain data: numbers, arrays, tensors, lists and
dicts of them). A worker that raises is reported with its traceback, a worker
that hangs or dies with a clear error, and every worker is ended either way.

Forking needs a POSIX system (Linux, macOS); Windows has only ``spawn``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from backprop_course.distributed import WorkerError, free_port

__all__ = ["RankFailed", "WorkerError", "run_ranks"]


class RankFailed(WorkerError):
    """``fn`` raised in a worker; ``rank`` and ``error`` (the exception's ``repr``) say where."""

    def __init__(self, message: str, rank: int, error: str):
        super().__init__(message)
        self.rank = rank
        self.error = error


def _child(fn: Callable, rank: int, world_size: int, port: int, args: tuple, timeout, conn):
    import io
    import sys

    import torch
    import torch.distributed as dist

    # What the rank prints is sent back with its result: the parent's output streams
    # (a notebook kernel's are served by threads that were not forked) are not used.
    sys.stdout = sys.stderr = captured = io.StringIO()
    # One thread per worker: the workers share the machine's cores, and OpenMP
    # thread pools inherited through fork are not safe to use in the child.
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        try:
            result = ("ok", fn(rank, world_size, *args))
        finally:
            dist.destroy_process_group()
    except BaseException as error:  # everything is reported to the parent
        text = f"{type(error).__name__}: {error}"
        result = ("error", (text[:500], traceback.format_exc()[-4000:]))
    # Plain pickle, not the connection's own: that one (with torch loaded) would pass a
    # tensor as a handle to shared memory, which dies with this process.
    try:
        payload = pickle.dumps((*result, captured.getvalue()[-20_000:]))
    except Exception:  # the result could not be pickled
        text = ("unpicklable result", traceback.format_exc()[-2000:])
        payload = pickle.dumps(("error", text, ""))
    conn.send_bytes(payload)
    conn.close()
    os._exit(0)  # no atexit handlers, no flushing of the parent's copied buffers


def run_ranks(
    fn: Callable,
    world_size: int = 2,
    args: tuple = (),
    *,
    timeout: float = 120.0,
    echo: bool = True,
) -> list[Any]:
    """``[fn(0, world_size, *args), ..., fn(world_size - 1, world_size, *args)]``, each on its
    own process of one ``gloo`` process group; see the module docstring.

    ``timeout`` (seconds) bounds the whole run and each collective. Raises
    :class:`RankFailed` when ``fn`` raised in a worker (the lowest such rank is named),
    :class:`WorkerError` when a worker died, ``TimeoutError`` when one never answered.
    With ``echo``, what each rank printed is printed here afterwards, rank by rank.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    context = multiprocessing.get_context("fork")
    port = free_port()
    pipes, processes = [], []
    start = time.perf_counter()
    try:
        for rank in range(world_size):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_child, args=(fn, rank, world_size, port, args, timeout, send), daemon=True
            )
            process.start()
            send.close()
            pipes.append(receive)
            processes.append(process)
        results: dict[int, tuple] = {}
        while len(results) < world_size:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                missing = sorted(set(range(world_size)) - set(results))
                raise TimeoutError(f"rank(s) {missing} did not finish within {timeout:g} s")
            ready = multiprocessing.connection.wait(
                [p for r, p in enumerate(pipes) if r not in results], timeout=min(left, 0.5)
            )
            for pipe in ready:
                rank = pipes.index(pipe)
                try:
                    results[rank] = pickle.loads(pipe.recv_bytes())
                except EOFError:
                    raise WorkerError(
                        f"rank {rank} of {world_size} died (exit code "
                        f"{processes[rank].exitcode}) before reporting"
                    ) from None
                if results[rank][0] == "error":
                    # a failed rank leaves the others waiting in a collective: stop now
                    error, trace = results[rank][1]
                    raise RankFailed(
                        f"rank {rank} of {world_size} failed:\n{trace}", rank=rank, error=error
                    )
        if echo:
            for rank in range(world_size):
                for line in results[rank][2].splitlines():
                    print(f"[rank {rank}] {line}")
        return [results[r][1] for r in range(world_size)]
    finally:
        for process in processes:
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in pipes:
            pipe.close()
