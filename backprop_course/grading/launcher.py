"""Start an IPython kernel under resource limits: run as a script, not imported.

    python launcher.py --memory-mb M --cpu-seconds S --file-mb F --log LOG
        [--uid U] [--nproc N] [--copy NOTEBOOK] -- -f CONNECTION

sets the limits on this process (address space, CPU time, size of a written
file, no core dumps), drops to uid and gid ``U`` when it runs as root inside
the sandbox (no capability survives that), caps the processes of that uid at
``N``, copies ``NOTEBOOK`` into its working folder, then replaces itself
with ``python -m ipykernel_launcher``, which keeps all of it. It runs inside
the sandbox (:mod:`.sandbox`), or, with ``--no-sandbox``, in a new session,
so the kernel and everything it starts share one process group that the
grader can kill at once. It is kept tiny on purpose: it runs before every
kernel and imports nothing from the course.
"""

import os
import resource
import sys


def _limit(which: int, value: int) -> None:
    try:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else hard))
    except (ValueError, OSError):  # the OS refuses: run without this cap
        pass


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: launcher.py [--memory-mb M] [--cpu-seconds S] -- KERNEL_ARGS")
    split = argv.index("--")
    options, kernel_args = argv[:split], argv[split + 1 :]
    settings = dict(zip(options[::2], options[1::2]))
    memory = int(settings.get("--memory-mb", 0))
    cpu = int(settings.get("--cpu-seconds", 0))
    file_mb = int(settings.get("--file-mb", 0))
    if memory > 0:
        _limit(resource.RLIMIT_AS, memory * 2**20)
    if cpu > 0:
        _limit(resource.RLIMIT_CPU, cpu)
    if file_mb > 0:
        _limit(resource.RLIMIT_FSIZE, file_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)
    uid = int(settings.get("--uid", -1))
    if uid >= 0 and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:  # pragma: no cover
            raise SystemExit("could not drop privileges")
    nproc = int(settings.get("--nproc", 0))
    if nproc > 0:
        _limit(resource.RLIMIT_NPROC, nproc)
    copy = settings.get("--copy")
    if copy:  # the notebook being graded, into the kernel's own (private, writable) folder
        try:
            with open(copy, "rb") as source:
                data = source.read()
            with open(os.path.basename(copy), "wb") as target:
                target.write(data)
        except OSError:
            pass
    log = settings.get("--log")
    if log:  # the kernel's own chatter goes to a file, not the grader's terminal
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *kernel_args])


if __name__ == "__main__":
    main(sys.argv[1:])
