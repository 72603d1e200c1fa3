"""The bubblewrap sandbox a learner's kernel runs in, and its resource caps.

:func:`probe` finds ``bwrap`` and checks that it can build a sandbox on this
machine (once per process). :class:`Sandbox` turns a kernel command into one
that runs inside it:

- new PID, IPC, network, UTS (and, where possible, cgroup) namespaces, a new
  session, ``--die-with-parent``: the grader is not in the kernel's process
  table, so it can be neither signalled nor read through ``/proc``; killing
  ``bwrap`` kills every process in the sandbox, ``setsid()`` children included;
- an unprivileged uid (65534): as root, bwrap keeps only ``CAP_SETUID`` and
  ``CAP_SETGID`` for the launcher, which drops to that uid before any learner
  code runs (a real, different uid); as any other user, a user namespace maps
  it to the grader's own uid;
- a file system of its own: read-only the system libraries (``/usr``), the
  Python environment (the venv and the interpreter it links to) and the
  package (every ``solutions`` folder in it hidden under an empty tmpfs);
  writable only a private tmpfs for home (with a copy of its notebook) and
  ``/tmp``, and one folder of its
  kernel's own (its ZMQ ``ipc://`` sockets, its answers to the grader, its
  log). No other submission, no ``--out``, no grader home.
- caps for the sandbox as a whole: a cgroup per kernel (v2, else v1 ``memory``
  and ``pids``) where the machine lets the grader create one; otherwise
  ``RLIMIT_NPROC`` plus per-process limits. :attr:`Probe.caps` says which.

The kernel talks to the grader over ``ipc://`` sockets in its own folder,
since with its own network namespace it cannot reach a TCP port of the
grader's; and the grader's result channel (a pipe between two grader
processes) is in no folder the sandbox sees.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INSTALL_HINT", "SANDBOX_UID", "Cgroup", "Probe", "Sandbox", "probe"]

SANDBOX_UID = 65534  # "nobody" on Debian, Ubuntu, Fedora and macOS alike
HOME = "/home/learner"
PACKAGE = Path(__file__).resolve().parents[1]
INSTALL_HINT = (
    "grading runs every notebook inside bubblewrap, which was not found or cannot create "
    "a sandbox here ({reason}). Install it (Debian/Ubuntu: sudo apt-get install "
    "bubblewrap; Fedora: sudo dnf install bubblewrap; Arch: pacman -S bubblewrap) on a "
    "Linux machine that allows user namespaces (in a container: run it with "
    "--security-opt seccomp=unconfined or as root), or grade anyway with --no-sandbox "
    "(unsafe for untrusted notebooks: they run as you, with your files)"
)
TMPFS_BYTES = 1024 * 2**20
MAX_PROCESSES = 512  # threads count too; torch starts one per core, lesson 12 two processes


@dataclass(frozen=True)
class Probe:
    """Whether notebooks can be sandboxed here, how, and how they are capped."""

    available: bool
    reason: str  # why not, when not available
    bwrap: str | None = None
    version: str = ""
    as_root: bool = False
    caps: str = ""  # "cgroup v1 (memory, pids)", "cgroup v2 ..." or "rlimits ..."

    def describe(self) -> str:
        if not self.available:
            return f"not sandboxed: {self.reason}"
        user = (
            f"uid {SANDBOX_UID} (bwrap as root, launcher drops privileges)"
            if self.as_root
            else f"uid {SANDBOX_UID} in a user namespace"
        )
        return (
            f"bubblewrap {self.version}: own PID, IPC, network and mount namespaces, {user}; "
            f"caps: {self.caps}"
        )


# ---------------------------------------------------------------- cgroups


def _own_cgroup(controller: str | None) -> str | None:
    """This process's cgroup path for a v1 controller, or the v2 path (``None``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if controller is None and number == "0" and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _v2_root() -> Path | None:
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.controllers").is_file():
            return candidate
    return None


class Cgroup:
    """One cgroup (v2) or a pair of v1 cgroups (memory, pids) for one sandbox."""

    def __init__(self, folders: list[Path], kind: str):
        self.folders = folders
        self.kind = kind

    @classmethod
    def create(cls, name: str, memory_mb: int) -> Cgroup | None:
        """A fresh cgroup capped at ``memory_mb`` (0: no memory cap) and MAX_PROCESSES."""
        for make in (cls._create_v2, cls._create_v1):
            with contextlib.suppress(OSError, ValueError):
                made = make(name, memory_mb)
                if made is not None:
                    return made
        return None

    @classmethod
    def _create_v2(cls, name: str, memory_mb: int) -> Cgroup | None:
        root, own = _v2_root(), _own_cgroup(None)
        if root is None or own is None:
            return None
        parent = root / own.lstrip("/")
        wanted = {"memory", "pids"}
        if not wanted <= set((parent / "cgroup.subtree_control").read_text().split()):
            return None
        folder = parent / name
        folder.mkdir()
        group = cls([folder], "v2")
        try:
            if memory_mb > 0:
                (folder / "memory.max").write_text(str(memory_mb * 2**20))
                with contextlib.suppress(OSError):
                    (folder / "memory.swap.max").write_text("0")
            (folder / "pids.max").write_text(str(MAX_PROCESSES))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _create_v1(cls, name: str, memory_mb: int) -> Cgroup | None:
        folders = []
        for controller in ("memory", "pids"):
            own = _own_cgroup(controller)
            base = Path("/sys/fs/cgroup") / controller
            if own is None or not base.is_dir():
                return None
            folders.append(base / own.lstrip("/") / name)
        memory, pids = folders
        group = cls([], "v1")
        try:
            for folder in folders:
                folder.mkdir()
                group.folders.append(folder)
            if memory_mb > 0:
                limit = str(memory_mb * 2**20)
                (memory / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):  # no swap accounting: the cap is on RAM
                    (memory / "memory.memsw.limit_in_bytes").write_text(limit)
            (pids / "pids.max").write_text(str(MAX_PROCESSES))
        except OSError:
            group.remove()
            raise
        return group

    def describe(self) -> str:
        if self.kind == "v2":
            return f"cgroup v2 per notebook (memory.max, pids.max {MAX_PROCESSES})"
        return f"cgroup v1 per notebook (memory.limit_in_bytes, pids.max {MAX_PROCESSES})"

    def join_command(self) -> list[str]:
        """A prefix that moves the command into this cgroup before it starts."""
        script = "".join(f'echo $$ > "{f}/cgroup.procs" && ' for f in self.folders)
        return ["/bin/sh", "-c", script + 'exec "$@"', "sh"]

    def pids(self) -> set[int]:
        found = set()
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (what bwrap's own teardown missed)."""
        kill_file = self.folders[0] / "cgroup.kill" if self.kind == "v2" else None
        if kill_file is not None and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill()
        for folder in self.folders:
            for _ in range(25):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


@functools.lru_cache(maxsize=1)
def _caps() -> str:
    group = Cgroup.create(f"bpc-probe-{os.getpid()}", 64)
    if group is not None:
        text = group.describe()
        group.remove()
        return text
    return (
        f"no writable cgroup: RLIMIT_NPROC (room for {MAX_PROCESSES} more tasks of the sandbox's "
        "uid), and per-process RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE"
    )


# ---------------------------------------------------------------- the sandbox


def _environment_paths() -> list[str]:
    """Folders of the Python environment: the venv and the interpreter it links to."""
    paths = []
    for raw in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        real = os.path.realpath(raw)
        for path in (raw, real):
            if path and os.path.isdir(path) and path not in paths:
                paths.append(path)
    real_exe = os.path.realpath(sys.executable)
    folder = os.path.dirname(os.path.dirname(real_exe))
    if folder not in paths:
        paths.append(folder)
    clone = PACKAGE.parent
    if not (clone / "pyproject.toml").is_file():
        return paths
    # no bind may expose a clone's root: solutions/ is there
    root = str(clone).rstrip("/") + "/"
    return [p for p in paths if not root.startswith(p.rstrip("/") + "/")]


def _hidden_inside(folder: Path) -> list[str]:
    """Every ``solutions`` folder below ``folder`` (a wheel's bundled course keeps one)."""
    found = []
    for root, dirs, _files in os.walk(folder):
        for name in list(dirs):
            if name == "solutions":
                found.append(os.path.join(root, name))
                dirs.remove(name)
            elif name in ("__pycache__", ".git"):
                dirs.remove(name)
    return found


def _system_binds() -> list[str]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ("ld.so.cache", "ld.so.conf", "localtime", "mime.types"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--ro-bind-try", "/etc/ld.so.conf.d", "/etc/ld.so.conf.d"]
    args += ["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
    return args


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return (0,)


def _open_parents(args: list[str]) -> list[str]:
    """``--chmod`` for the folders bwrap made on the way to a mount point.

    bwrap makes them private (0700) like the host folders they mirror, so the
    unprivileged uid could not reach what is mounted below them (the interpreter under
    ``/root/.pyenv``, a kernel folder under ``/tmp/bpc-grading-*``).
    """
    mounts, tmpfs = [], []
    for index, arg in enumerate(args):
        if arg in ("--ro-bind", "--bind", "--ro-bind-try") and index + 2 < len(args):
            mounts.append(args[index + 2])
        elif arg in ("--tmpfs", "--proc", "--dev", "--symlink") and index + 1 < len(args):
            destination = args[index + 2] if arg == "--symlink" else args[index + 1]
            mounts.append(destination)
            if arg == "--tmpfs":
                tmpfs.append(destination)
    bound = [m for m in mounts if m not in tmpfs]

    def inside(path: str, folders: list[str]) -> bool:
        return any(path.startswith(f.rstrip("/") + "/") for f in folders)

    out, done = [], set()
    for mount in mounts:
        parent = os.path.dirname(mount.rstrip("/"))
        parents = []
        while parent not in ("", "/"):
            parents.append(parent)
            parent = os.path.dirname(parent)
        for folder in reversed(parents):
            if folder in done or folder in mounts or inside(folder, bound):
                continue
            done.add(folder)
            mode = "1777" if folder == f"{HOME}/.matplotlib" else "0755"
            out += ["--chmod", mode, folder]
    return out


class Sandbox:
    """Builds the ``bwrap`` command line for one kernel."""

    def __init__(self, info: Probe):
        self.info = info

    def command(
        self,
        inner: list[str],
        *,
        private: Path,
        shared: Path,
        env: dict[str, str],
        files: dict[str, Path] | None = None,
    ) -> list[str]:
        """``inner`` wrapped in bwrap.

        ``shared`` is the kernel's own read-write folder (sockets, answers, log) and
        ``private`` a read-only one (its connection file, the grader's requests), both at
        the same path inside; ``files`` maps paths inside to files bound read-only.
        """
        info = self.info
        args = [info.bwrap or "bwrap", "--die-with-parent", "--new-session"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--hostname", "grader"]
        if info.as_root:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
            if _version(info.version) >= (0, 8):  # no nested user namespace (bwrap 0.8+)
                args += ["--disable-userns"]
        args += _system_binds()
        # The private /tmp and home come first: the Python environment and the package
        # may live below /tmp (a CI clone), and a tmpfs mounted later would hide them.
        size = ["--size", str(TMPFS_BYTES)] if _version(info.version) >= (0, 6) else []
        for folder in ("/tmp", HOME):
            args += ["--perms", "1777", *size, "--tmpfs", folder]
        for path in _environment_paths():
            args += ["--ro-bind", path, path]
        args += ["--ro-bind", str(PACKAGE), str(PACKAGE)]
        for hidden in _hidden_inside(PACKAGE):
            args += ["--tmpfs", hidden, "--remount-ro", hidden]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", *size, "--tmpfs", "/dev/shm"]
        args += ["--ro-bind", str(private), str(private), "--bind", str(shared), str(shared)]
        for inside, outside in (files or {}).items():
            args += ["--ro-bind", str(outside), inside]
        args += _open_parents(args)
        args += ["--chdir", HOME, "--clearenv"]
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        return [*args, "--", *inner]


@functools.lru_cache(maxsize=1)
def probe() -> Probe:
    """Can notebooks be sandboxed here? Tried once: a real sandbox runs ``true``."""
    if not sys.platform.startswith("linux"):
        return Probe(False, f"bubblewrap needs Linux (this is {sys.platform})")
    found = shutil.which("bwrap")
    if found is None:
        return Probe(False, "the bwrap command is not installed")
    try:
        version = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = "?"
    info = Probe(True, "", found, version, os.geteuid() == 0)
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    try:
        command = Sandbox(info).command(
            ["/bin/true"], private=folder, shared=folder, env={"PATH": "/usr/bin:/bin"}
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return Probe(False, f"bwrap could not run: {error}", found, version)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        return Probe(False, f"bwrap failed: {message}", found, version)
    return Probe(True, "", found, version, info.as_root, _caps())
