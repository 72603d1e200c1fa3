"""One kernel: started inside the sandbox (:mod:`.sandbox`) under resource limits.

:class:`Kernel` owns a jupyter kernel manager whose command is ``bwrap`` (in a
cgroup of its own where the machine allows one) around
:mod:`backprop_course.grading.launcher` (limits, then ``ipykernel``). The
kernel talks over ZMQ ``ipc://`` sockets in its folder's ``shared/`` (the only
place it may write outside its private tmpfs); the grader's requests and the
connection file are in ``private/``, read-only inside. :meth:`Kernel.kill`
ends ``bwrap``'s process group, which takes the sandbox's PID namespace and
every process in it along, then empties the cgroup.

Without a sandbox (``--no-sandbox``) the launcher runs directly, as the
grader's user, in a session of its own, over TCP on localhost.
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
from backprop_course.grading.sandbox import (
    HOME,
    MAX_PROCESSES,
    SANDBOX_UID,
    Cgroup,
    Probe,
    Sandbox,
)

__all__ = ["Kernel", "kernel_environment"]

LAUNCHER = Path(__file__).with_name("launcher.py")
NOTEBOOK = "notebook.ipynb"  # the notebook being graded, as the kernel's home holds it


def _font_caches() -> list[str]:
    folders = [os.environ.get("MPLCONFIGDIR", "")]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folders.append(os.path.join(cache, "matplotlib"))
    found = []
    for folder in folders:
        if folder:
            found.extend(glob.glob(os.path.join(folder, "fontlist-*.json")))
    return sorted(found)[-1:]


def _course_variables(home: str, threads: int) -> dict[str, str]:
    return {
        "HOME": home,
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "IPYTHONDIR": f"{home}/.ipython",
        "MPLBACKEND": "Agg",
        settings.HOME_VARIABLE: f"{home}/backprop_course",
        settings.NO_RECORD_VARIABLE: "1",
        settings.GRADING_VARIABLE: "1",  # check() leaves the judging to the grader
        settings.TEST_MODE_VARIABLE: "1",
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MALLOC_ARENA_MAX": "2",
    }


def sandbox_environment(threads: int) -> dict[str, str]:
    """The whole environment of a sandboxed kernel: built, never inherited."""
    path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {"PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "USER": "learner"}
    env.update(_course_variables(HOME, threads))
    return env


def kernel_environment(workdir: Path, threads: int) -> dict[str, str]:
    """The environment of an unsandboxed kernel (``--no-sandbox``): private home, no
    recording, and only the variables a kernel needs from the grader's (no secret is
    ever in the grader's environment, but nothing else need be passed on either)."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    home = workdir / "home"
    mpl = home / ".matplotlib"
    mpl.mkdir(parents=True, exist_ok=True)
    for cache in _font_caches():  # a copy, so matplotlib need not rebuild it
        with contextlib.suppress(OSError):
            shutil.copy(cache, mpl)
    env.update(_course_variables(str(home), threads))
    return env


def _tasks_of(uid: int) -> int:
    """How many tasks (threads included) ``uid`` runs now: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = dict(
                    line.split(":", 1)
                    for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                    if ":" in line
                )
                if int(fields["Uid"].split()[1]) == uid:
                    count += int(fields["Threads"])
    return count


class _Manager(AsyncKernelManager):
    """A kernel manager whose connection file the sandbox's uid can read."""

    owner: int | None = None

    def write_connection_file(self, **kwargs):
        result = super().write_connection_file(**kwargs)
        if self.owner is not None:
            os.chown(self.connection_file, self.owner, self.owner)
        return result


class Kernel:
    """A kernel manager for one sandbox kernel, and a way to kill it for sure.

    ``workdir`` is the grader's folder for this kernel; with a sandbox, its
    ``private/`` (read-only inside: connection file, requests) and ``shared/``
    (writable inside: sockets, answers, log) are all the kernel sees of it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        memory_mb: int,
        cpu_seconds: int,
        file_mb: int = 512,
        sandbox: Probe | None = None,
        threads: int = 1,
    ):
        self.workdir = Path(workdir)
        self.private = self.workdir / "private"
        self.shared = self.workdir / "shared"
        self.private.mkdir(parents=True, exist_ok=True)
        self.shared.mkdir(parents=True, exist_ok=True)
        self.sandboxed = sandbox is not None and sandbox.available
        self.cgroup: Cgroup | None = None
        argv = [sys.executable, str(LAUNCHER)]
        argv += ["--memory-mb", str(int(memory_mb)), "--cpu-seconds", str(int(cpu_seconds))]
        argv += ["--file-mb", str(int(file_mb)), "--log", str(self.shared / "kernel.log")]
        self.manager = _Manager(
            kernel_name="python3", connection_file=str(self.private / "kernel-connection.json")
        )
        if self.sandboxed:
            assert sandbox is not None
            self.cgroup = Cgroup.create(f"bpc-{os.getpid()}-{self.workdir.name}", memory_mb)
            if self.cgroup is None:  # the fallback: count the sandbox uid's tasks instead
                base = 0 if sandbox.as_root else _tasks_of(os.getuid())
                argv += ["--nproc", str(base + MAX_PROCESSES)]
            argv += ["--copy", str(self.private / NOTEBOOK)]
            if sandbox.as_root:
                argv += ["--uid", str(SANDBOX_UID)]
                os.chown(self.shared, SANDBOX_UID, SANDBOX_UID)
                self.manager.owner = SANDBOX_UID
            argv += ["--", "-f", "{connection_file}"]
            self.manager.transport = "ipc"
            self.manager.ip = str(self.shared / "k")
            (self.private / "passwd").write_text(
                f"learner:x:{SANDBOX_UID}:{SANDBOX_UID}:learner:{HOME}:/bin/sh\n"
            )
            files = {"/etc/passwd": self.private / "passwd"}
            for cache in _font_caches():
                files[f"{HOME}/.matplotlib/{os.path.basename(cache)}"] = Path(cache)
            argv = Sandbox(sandbox).command(
                argv,
                private=self.private,
                shared=self.shared,
                env=sandbox_environment(threads),
                files=files,
            )
            if self.cgroup is not None:
                (self.workdir / "cgroups").write_text(
                    "\n".join(str(f) for f in self.cgroup.folders)
                )
                argv = self.cgroup.join_command() + argv
        else:
            argv += ["--", "-f", "{connection_file}"]
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
        """SIGKILL the kernel's sandbox (or process group) and its cgroup; safe to call twice."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop_channels()
            self._client = None
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            process = self.manager.provisioner.process
            with contextlib.suppress(Exception):
                process.wait(timeout=5)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def client(self) -> BlockingKernelClient:
        """A blocking client on the shell channel only (no output is buffered)."""
        if self._client is None:
            client = BlockingKernelClient()
            client.load_connection_info(self.manager.get_connection_info())
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
