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
import warnings
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


_GRACE = 3.0  # seconds to wait for the other ranks' reports after one failed


def _secondary(error: str) -> bool:
    """True for the error a rank gets when a peer it talks to has gone."""
    return any(
        text in error
        for text in ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
    )


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
            with warnings.catch_warnings():
                # Python >= 3.12 warns that forking a multi-threaded process (a notebook
                # kernel is one) may deadlock the child if it takes a lock another thread
                # held. The child here only runs the rank's function, on one thread.
                warnings.filterwarnings("ignore", "This process .* use of fork", DeprecationWarning)
                process.start()
            send.close()
            pipes.append(receive)
            processes.append(process)
        results: dict[int, tuple] = {}
        failed_at = None  # when the first rank reported an error
        while len(results) < world_size:
            now = time.perf_counter()
            if failed_at is not None and now - failed_at > _GRACE:
                break  # the others are stuck (or slow): report what failed
            left = timeout - (now - start)
            if left <= 0:
                missing = sorted(set(range(world_size)) - set(results))
                raise TimeoutError(f"rank(s) {missing} did not finish within {timeout:g} s")
            waiting = [p for r, p in enumerate(pipes) if r not in results]
            for pipe in multiprocessing.connection.wait(waiting, timeout=min(left, 0.2)):
                rank = pipes.index(pipe)
                try:
                    results[rank] = pickle.loads(pipe.recv_bytes())
                except EOFError:
                    if failed_at is not None:  # ended by the failure already seen
                        results[rank] = ("died", None, "")
                        continue
                    raise WorkerError(
                        f"rank {rank} of {world_size} died (exit code "
                        f"{processes[rank].exitcode}) before reporting"
                    ) from None
                if results[rank][0] == "error" and failed_at is None:
                    failed_at = time.perf_counter()
        errors = {r: result[1] for r, result in results.items() if result[0] == "error"}
        if errors:
            # A rank whose peer failed fails too, in a collective ("Connection reset by
            # peer"): report the cause, a rank that failed on its own, where there is one.
            causes = [r for r, (error, _) in errors.items() if not _secondary(error)]
            rank = min(causes or errors)
            error, trace = errors[rank]
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
