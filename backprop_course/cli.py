"""The ``backprop-course`` command: start, doctor, release, progress, bench, grade.

Each subcommand is a small function; errors a user can fix are printed as one
clear sentence with exit status 2 (usage) or 1 (a check failed), never as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import socket
import sys
from pathlib import Path

from backprop_course import __version__

DEFAULT_WORKDIR = "backprop-course-work"
FIRST_LESSON = "notebooks/00_welcome.ipynb"
REQUIRED = (
    "numpy",
    "matplotlib",
    "torch",
    "jupyterlab",
    "ipykernel",
    "ipywidgets",
    "nbformat",
    "nbclient",
    "tqdm",
)


class UsageError(Exception):
    """A problem the user can fix; printed without a traceback."""


# ---------------------------------------------------------------- start


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _already_serving(target: Path) -> dict | None:
    """The running Jupyter server whose root is ``target``, if any (never raises)."""
    from backprop_course import lab

    try:
        return lab.running_server(target)
    except Exception:  # no jupyter_server, an unreadable runtime folder: just start one
        return None


def _print_copy_report(target: Path, report) -> None:
    print(f"course folder: {target}")
    counts = (
        f"  {len(report.copied)} copied, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
    )
    if report.edited or report.kept_with_new_beside:
        counts += f", {len(report.edited) + len(report.kept_with_new_beside)} edited by you"
    print(counts)
    for name in report.updated:
        print(f"  updated {name} (you had not edited it): {report.changes[name]}")
    for name in report.kept_with_new_beside:
        print(
            f"  kept your edited {name}; the new release ({report.changes[name]}) is beside "
            f"it as {name.removesuffix('.ipynb')}.new.ipynb"
        )
    for name in report.stale_removed:
        print(f"  removed {name}: an older start left it there, and it equals the release")
    if report.progress_copied_from:
        print(
            f"  your progress so far ({report.progress_copied_from}) is now kept in this "
            "folder, in .backprop_course/progress.json"
        )


def cmd_start(args: argparse.Namespace) -> int:
    from backprop_course import lab, settings
    from backprop_course.course import copy_course

    target = Path(args.dir).expanduser().resolve()
    running = _already_serving(target)
    if running and not args.copy_only:
        url = lab.server_url(running, FIRST_LESSON)
        print(f"JupyterLab already serves {target} (process {running.get('pid')}); open:")
        print(f"  {url}")
        print(
            "To update the course files, stop that server (Ctrl+C twice in its terminal, "
            f"or kill {running.get('pid')}) and run start again."
        )
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)
        return 0
    if args.port is not None and not _port_free(args.port):
        raise UsageError(
            f"port {args.port} is already in use; choose another with --port, "
            "or leave --port out and JupyterLab picks a free one"
        )
    if args.with_solutions:
        from backprop_course.course import course_root

        if not (course_root() / "solutions").is_dir():
            raise UsageError(
                "--with-solutions works from a clone of the course repository only: the "
                "installed package does not ship the solved notebooks (clone it, then "
                "pip install -e . and run start --with-solutions there)"
            )
    try:
        report = copy_course(target, with_solutions=args.with_solutions)
    except PermissionError as error:
        raise UsageError(
            f"cannot write the course into {target} ({error.strerror}); "
            "give a folder you can write to: backprop-course start DIR"
        ) from error
    except OSError as error:
        raise UsageError(f"cannot copy the course into {target}: {error}") from error
    _print_copy_report(target, report)
    if args.copy_only:
        if running:
            print(f"JupyterLab already serves it: {lab.server_url(running, FIRST_LESSON)}")
        else:
            print(
                f"open it with: backprop-course start {target} (the course's own JupyterLab "
                f"settings), or: cd {target} && jupyter lab {FIRST_LESSON}"
            )
        return 0
    # root_dir is the whole course folder; without it Jupyter serves only notebooks/.
    # The browser opens lesson 00 (the file argument), and so does the URL JupyterLab
    # prints (default_url), which is what --no-browser users paste.
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={target}",
        f"--LabApp.default_url=/lab/tree/{FIRST_LESSON}",
        str(target / FIRST_LESSON),
    ]
    if args.no_browser:
        command.append("--no-browser")
    if args.port is not None:
        # The port asked for or none: never a silent move to the next free one.
        command += [f"--port={args.port}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Containers and CI machines often run as root; JupyterLab refuses without this.
        print("note: running as root, so JupyterLab is started with --allow-root")
        command.append("--allow-root")
    # The course's own settings (widget state saved, no news pop-up) for this server only.
    env = lab.course_env(target / settings.STATE_FOLDER)
    print(
        f"starting JupyterLab; stop it with Ctrl+C twice, or kill {os.getpid()}:",
        " ".join(command[2:]),
    )
    return lab.launch(command, env, target)


# ---------------------------------------------------------------- doctor


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cmd_doctor(args: argparse.Namespace) -> int:
    from backprop_course import settings

    problems = []
    print(f"backprop-course {__version__}")
    print(f"Python {platform.python_version()} ({sys.executable})")
    print(f"platform: {platform.platform()}")
    for name in REQUIRED:
        version = _version(name)
        print(f"  {name:<12} {version or 'MISSING'}")
        if version is None:
            problems.append(f"{name} is not installed: pip install {name}")
    if _version("torch"):
        try:
            from backprop_course.device import describe_device

            print(f"device: {describe_device()}")
        except Exception as error:  # a broken torch install should be reported, not crash
            problems.append(f"torch is installed but failed to start: {error}")
    else:
        print("device: unknown (torch is missing)")
    try:
        from backprop_course.course import course_root, lessons

        root = course_root()
        print(f"course files: {root} ({len(lessons(root))} lessons)")
    except FileNotFoundError as error:
        problems.append(str(error))
    print(f"progress store: {settings.progress_path()} (set {settings.HOME_VARIABLE} to move it)")
    from backprop_course.grading.sandbox import probe

    sandbox = probe()  # for instructors; a learner's laptop needs no sandbox
    print(f"grading: {'sandboxed, ' if sandbox.available else ''}{sandbox.describe()}")
    if not sandbox.available:
        print("  (to grade: install bubblewrap on Linux, or grade with --no-sandbox, unsafe)")
    if problems:
        print("\nproblems:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("\nall good: run `backprop-course start` to open the course")
    return 0


# ---------------------------------------------------------------- release


def _course_folder(root: str | None) -> Path:
    if root:
        return Path(root)
    if (Path.cwd() / "solutions").is_dir():
        return Path.cwd()
    from backprop_course.course import course_root

    return course_root()


def cmd_release(args: argparse.Namespace) -> int:
    from backprop_course.release import ReleaseError, release

    root = _course_folder(args.root)
    try:
        changes = release(root / "solutions", root / "exercises", check=args.check)
    except ReleaseError as error:
        raise UsageError(f"release failed: {error}") from error
    if args.check:
        if changes:
            print("exercises/ is out of date with solutions/; run `backprop-course release`:")
            for change in changes:
                print(f"  {change}")
            return 1
        print("exercises/ is up to date")
        return 0
    print(
        f"released {root / 'exercises'}: "
        + (f"{len(changes)} file(s) changed" if changes else "nothing changed")
    )
    for change in changes:
        print(f"  {change}")
    return 0


# ---------------------------------------------------------------- progress


def cmd_progress(args: argparse.Namespace) -> int:
    from backprop_course import settings
    from backprop_course.checking import ProgressReport
    from backprop_course.progress import ProgressStore

    if args.dir is not None:
        folder = Path(args.dir).expanduser()
        if not settings.is_course_folder(folder):
            raise UsageError(f"{folder} is not a course folder made by `backprop-course start`")
    elif settings.course_folder() is None and settings.is_course_folder(Path(DEFAULT_WORKDIR)):
        folder = Path(DEFAULT_WORKDIR)  # run from where `start` was run
    else:
        folder = Path.cwd()
    path = settings.progress_path(folder)
    print(ProgressReport.collect(ProgressStore(path)))
    print(f"(from {path})")
    return 0


# ---------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from backprop_course import bench

    if args.which == "gpt":
        try:  # progress goes to stderr, so stdout stays one JSON object
            preset = args.preset or "cpu"
            result = bench.bench_gpt(preset, args.device, progress=sys.stderr.isatty())
        except (RuntimeError, ValueError) as error:  # no such device, unsupported precision
            raise UsageError(str(error)) from error
        result["network"] = f"char GPT on tiny-shakespeare, preset {preset}"
    else:
        if args.preset or args.device:
            raise UsageError("--preset and --device apply to `bench gpt` only")
        result = {"autograd": bench.bench_autograd, "mlp": bench.bench_mlp}[args.which]()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"bench {args.which}: {result.get('network', '')}")
    for key, value in result.items():
        if key not in ("benchmark", "network", "machine", "model", "train"):
            print(f"  {key:<14} {value}")
    if result.get("micrograd_ms") is None and args.which == "autograd":
        print(
            "  (micrograd is not installed: pip install micrograd==0.1.0, or from a clone "
            'pip install -e ".[bench]", to time it side by side)'
        )
    return 0


# ---------------------------------------------------------------- grade


def cmd_grade(args: argparse.Namespace) -> int:
    from backprop_course.grading import GradebookLocked, SandboxUnavailable, grade, read_secret

    secret = None
    if args.secret_file:
        try:
            secret = read_secret(args.secret_file)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read the secret from {args.secret_file}: {error}") from None
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.timeout <= 0 or (args.cell_timeout is not None and args.cell_timeout <= 0):
        raise UsageError("--timeout and --cell-timeout must be positive numbers of seconds")
    try:
        result = grade(
            args.paths,
            args.out,
            timeout=args.timeout,
            cell_timeout=args.cell_timeout,
            workers=args.workers,
            memory_mb=args.memory_mb,
            secret=secret,
            sandbox=not args.no_sandbox,
        )
    except (FileNotFoundError, ValueError, SandboxUnavailable, GradebookLocked) as error:
        raise UsageError(str(error)) from error
    print(result.summary)
    print(f"\ngradebook: {result.csv_path} and {result.json_path}")
    print(f"feedback:  {len(result.feedback)} file(s) in {Path(args.out) / 'feedback'}")
    print(f"secret:    in {Path(args.out) / 'gradebook.meta.json'} (--secret-file to reproduce)")
    for warning in result.meta.get("warnings", []):
        print(f"WARNING: {warning}")
    return 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop-course",
        description="A Jupyter course on backpropagation: open it, check your setup, "
        "track progress, and (for instructors) release and grade exercises.",
        epilog="New here? `backprop-course start` opens the course; "
        "`backprop-course COMMAND --help` explains a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    start = sub.add_parser(
        "start",
        help="copy the course into a folder and open JupyterLab on lesson 00",
        description="Copy the lessons (notebooks/) and exercises (exercises/) into DIR and\n"
        "open JupyterLab there on lesson 00. Running it again updates notebooks you\n"
        "have not edited and never overwrites one you have; when the release changed\n"
        "under an edited notebook, it is written beside it as NN_topic.new.ipynb.\n"
        "Only cell sources count as edits: running, saving or autosaving a notebook\n"
        "does not. Solved exercises are copied only with --with-solutions.",
        epilog=START_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument(
        "dir",
        nargs="?",
        default=DEFAULT_WORKDIR,
        help=f"working folder for your copy of the course (default: ./{DEFAULT_WORKDIR})",
    )
    start.add_argument(
        "--with-solutions", action="store_true", help="also copy the solved exercise notebooks"
    )
    start.add_argument(
        "--no-browser", action="store_true", help="start JupyterLab without opening a browser"
    )
    start.add_argument("--port", type=int, help="port for JupyterLab (default: a free one)")
    start.add_argument(
        "--copy-only",
        action="store_true",
        help="copy the course and print how to open it, without starting JupyterLab",
    )
    start.set_defaults(func=cmd_start)

    doctor = sub.add_parser(
        "doctor",
        help="report versions, the device found and anything missing",
        description="Check this machine for the course: Python, package and torch versions, "
        "the device found (CUDA, MPS or CPU), the course files and the progress store; "
        "exits 1 and lists what to fix when something is missing.",
    )
    doctor.set_defaults(func=cmd_doctor)

    release = sub.add_parser(
        "release",
        help="regenerate exercises/ from solutions/",
        description="Regenerate the exercise notebooks (exercises/) from the solved ones "
        "(solutions/): each solution region becomes a stub that check() reports as not "
        "attempted. With --check, change nothing and exit 1 if exercises/ is out of date.",
    )
    release.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if exercises/ is out of date"
    )
    release.add_argument(
        "--root",
        help="course folder holding solutions/ and exercises/ "
        "(default: the current folder if it has solutions/)",
    )
    release.set_defaults(func=cmd_release)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Time the course's code against its reference on this machine: the "
        "scalar engine against micrograd, the numpy MLP against torch, or the lesson-11 "
        "GPT trained from scratch.",
    )
    bench.add_argument(
        "which",
        choices=["autograd", "mlp", "gpt"],
        help="autograd: one training step of micrograd's demo network, ours "
        "against micrograd (when installed); mlp: one float32 training step of a "
        "784-256-10 MLP, the numpy layers of backprop_course.nn against torch on the CPU; "
        "gpt: train the character-level GPT on tiny-shakespeare from scratch and report "
        "validation loss, time, tokens/s and MFU",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--preset",
        choices=["cpu", "gpu", "test"],
        help="gpt only: cpu (2 CPU cores, default), gpu (one GPU) or test (seconds)",
    )
    bench.add_argument(
        "--device",
        choices=["cuda", "mps", "cpu"],
        help="gpt only: the device to train on (default: CUDA, then MPS, then the CPU)",
    )
    bench.set_defaults(func=cmd_bench)

    progress = sub.add_parser(
        "progress",
        help="your exercise progress, per lesson",
        description="A table per lesson of the exercises passed and the points earned out of "
        "the points possible, read from the progress store that check() writes to: the "
        "course folder's (.backprop_course/progress.json), outside one the user store. In a "
        "notebook, progress() shows the same table.",
    )
    progress.add_argument(
        "dir",
        nargs="?",
        help="course folder (default: the one you are in, else ./"
        f"{DEFAULT_WORKDIR}, else your user store ~/.backprop_course)",
    )
    progress.set_defaults(func=cmd_progress)

    grade = sub.add_parser(
        "grade",
        help="grade submitted notebooks into a gradebook (CSV and JSON) with feedback",
        description="Grade submitted exercise notebooks headlessly. PATH is a notebook, a "
        "folder of notebooks, or a folder of per-student folders (the student is the "
        "folder's name). Each notebook runs in its own kernel inside a bubblewrap sandbox "
        "that sees only that notebook and the package; every answer is "
        "then checked by the grader itself on hidden test inputs. Writes "
        "OUT/gradebook.csv, OUT/gradebook.json and OUT/feedback/STUDENT.md. Exits 0 "
        "whenever grading ran, whatever the scores.",
    )
    grade.add_argument("paths", nargs="+", metavar="PATH", help="notebooks or folders to grade")
    grade.add_argument(
        "--out", default="gradebook", help="folder for the gradebook (default: ./gradebook)"
    )
    grade.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds one notebook may run (default: 120); checking its answers "
        "afterwards may take as long again",
    )
    grade.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        help="seconds one cell, or one call of an answer, may take (default: the "
        "smaller of 60 and --timeout)",
    )
    grade.add_argument(
        "--workers", type=int, default=1, help="notebooks graded at once (default: 1)"
    )
    grade.add_argument(
        "--memory-mb",
        type=int,
        default=None,
        help="address-space cap of each notebook's kernel in MiB (default: 4096; 0: no cap, "
        "which CUDA needs)",
    )
    grade.add_argument(
        "--secret-file",
        metavar="FILE",
        help="secret that derives the hidden test inputs: a gradebook.meta.json of an "
        "earlier run, or a file of hex digits (default: a fresh random one, recorded in "
        "OUT/gradebook.meta.json); the same secret and submissions give the same gradebook",
    )
    grade.add_argument(
        "--no-sandbox",
        action="store_true",
        help="grade without bubblewrap where it is missing (UNSAFE for untrusted notebooks: "
        "they run as you, with your files); the gradebook records the warning",
    )
    grade.set_defaults(func=cmd_grade)
    return parser


START_EPILOG = f"""\
examples:
  backprop-course start                  copy into ./{DEFAULT_WORKDIR} and open JupyterLab
  backprop-course start ~/backprop --no-browser --port 8899
                                         serve on port 8899; open the printed URL yourself
  backprop-course start --copy-only      copy (or update) the notebooks, start nothing

Your answers stay yours: a notebook you edited is never replaced. Progress is
kept in the course folder (DIR/.backprop_course/progress.json), so each course
folder has its own. Stop JupyterLab with Ctrl+C twice, or by killing the process
whose number start prints: its kernels stop with it. Run start again while the
server still serves DIR and it prints that server's address instead of starting
another. If DIR is not writable, or the port is in use, start says so and stops:
pick another folder or port (or leave --port out).
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `backprop-course`: say what it can do
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except UsageError as error:
        print(f"backprop-course {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
