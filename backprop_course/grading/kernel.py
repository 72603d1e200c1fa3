"""One sandbox kernel: started under resource limits in its own process group.

:class:`Kernel` owns a jupyter kernel manager whose command is
:mod:`backprop_course.grading.launcher` (limits, then ``ipykernel``). The
kernel is a session leader, so :meth:`Kernel.kill` ends it and anything it
started with one ``SIGKILL`` to the group: a loop that catches
``KeyboardInterrupt`` cannot outlive it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from queue import Empty

from jupyter_client import AsyncKernelManager, BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec

from backprop_course import settings
from backprop_course.grading.remote import KernelDied, RemoteTimeout

__all__ = ["Kernel", "kernel_environment"]

LAUNCHER = Path(__file__).with_name("launcher.py")


def _font_caches() -> list[str]:
    folders = [os.environ.get("MPLCONFIGDIR", "")]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folders.append(os.path.join(cache, "matplotlib"))
    found = []
    for folder in folders:
        if folder:
            found.extend(glob.glob(os.path.join(folder, "fontlist-*.json")))
    return found


def kernel_environment(workdir: Path, threads: int) -> dict[str, str]:
    """The environment of a sandbox kernel: private home and progress store, no recording."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_"))}
    home = workdir / "home"
    mpl = home / ".matplotlib"
    mpl.mkdir(parents=True, exist_ok=True)
    for cache in _font_caches():  # a copy, so matplotlib need not rebuild it
        with contextlib.suppress(OSError):
            shutil.copy(cache, mpl)
    env.update(
        {
            "HOME": str(home),
            "MPLCONFIGDIR": str(mpl),
            "IPYTHONDIR": str(home / ".ipython"),
            "MPLBACKEND": "Agg",
            settings.HOME_VARIABLE: str(home / "backprop_course"),
            settings.NO_RECORD_VARIABLE: "1",
            settings.TEST_MODE_VARIABLE: "1",
            "PYTHONHASHSEED": "0",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "MALLOC_ARENA_MAX": "2",
        }
    )
    return env


class Kernel:
    """A kernel manager for one sandbox kernel, and a way to kill it for sure."""

    def __init__(self, workdir: Path, *, memory_mb: int, cpu_seconds: int, file_mb: int = 512):
        self.workdir = Path(workdir)
        argv = [sys.executable, str(LAUNCHER)]
        argv += ["--memory-mb", str(int(memory_mb)), "--cpu-seconds", str(int(cpu_seconds))]
        argv += ["--file-mb", str(int(file_mb)), "--log", str(self.workdir / "kernel.log")]
        argv += ["--", "-f", "{connection_file}"]
        self.manager = AsyncKernelManager(
            kernel_name="python3", connection_file=str(self.workdir / "kernel-connection.json")
        )
        self.manager._kernel_spec = KernelSpec(
            argv=argv, display_name="backprop-course grader", language="python"
        )
        self._client: BlockingKernelClient | None = None

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self.manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    def alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        process = self.manager.provisioner.process
        return process.poll() is None

    def kill(self) -> None:
        """SIGKILL the kernel's whole process group; safe to call twice."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop_channels()
            self._client = None
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        process = self.manager.provisioner.process
        with contextlib.suppress(Exception):
            process.wait(timeout=5)

    def client(self) -> BlockingKernelClient:
        """A blocking client on the shell channel only (no output is buffered)."""
        if self._client is None:
            client = BlockingKernelClient(connection_file=self.manager.connection_file)
            client.load_connection_file()
            client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
            self._client = client
        return self._client

    def run(self, code: str, timeout: float) -> None:
        """Execute ``code`` silently and wait for the reply (the transport of the RPC)."""
        client = self.client()
        msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteTimeout(f"no answer within {timeout:.0f} s")
            try:
                msg = client.get_shell_msg(timeout=min(remaining, 0.5))
            except Empty:
                if not self.alive():
                    raise KernelDied("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return
