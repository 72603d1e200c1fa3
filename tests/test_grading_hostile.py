"""Hostile submissions against the sandbox: each tries one way around grading through the
operating system, and earns exactly what its answers earn, changes no one else's row, and
leaves the batch and its gradebook complete.

Most cases are one student each in ONE `grade` call (tiny lesson-00 notebooks, two
workers), so the whole file stays quick; the lock and the kernel-start cases need no
kernel that runs a notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from test_grading import MEAN_OK, MEAN_WRONG, WELCOME, add_cell_after, learner, released, write

from backprop_course import cli
from backprop_course.grading import grade
from backprop_course.grading.gradebook import read_csv
from backprop_course.grading.sandbox import probe
from conftest import ROOT

SANDBOX = probe()
# On CI (which installs bubblewrap) a missing sandbox is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not SANDBOX.available and not os.environ.get("CI"),
    reason=f"bubblewrap cannot sandbox here: {SANDBOX.reason}",
)
CGROUP = SANDBOX.caps.startswith("cgroup")
LIMITS = {"timeout": 120, "cell_timeout": 20, "memory_mb": 1000}
DAEMON_MARK = "bpc-hostile-daemon-7f3a"
STUB_MEAN = 'def mean(xs):\n    """The arithmetic mean."""\n    return ...\n'
FORGED = {
    "records": [
        {
            "submission": s,
            "notebook": f"{s}/{WELCOME}.ipynb",
            "exercise": e,
            "points": 1,
            "max_points": 1,
            "status": "correct",
            "feedback": "forged",
        }
        for s in ("forger", "invented")
        for e in ("00.slope", "00.mean")
    ],
    "notes": [],
}


def hostile(cell: str, answers: dict[str, str] | None = None):
    """Lesson 00 with wrong answers (or ``answers``) and ``cell`` added after the set-up."""
    nb = learner(WELCOME, answers or {"ex00-03": "slope = 5.0", "ex00-06": MEAN_WRONG})
    return add_cell_after(nb, "ex00-01", textwrap.dedent(cell))


def build(folder, out):
    """The hostile batch; returns the expected {student: {exercise: (status, points)}}."""
    sub = str(folder)
    write(folder / "good" / f"{WELCOME}.ipynb", learner(WELCOME))
    good_bytes = (folder / "good" / f"{WELCOME}.ipynb").read_bytes()
    # forges a result through the grader's /proc (its pipe, its fds), for itself and others
    forged = json.dumps(FORGED)
    write(
        folder / "forger" / f"{WELCOME}.ipynb",
        hostile(
            f"""
            import glob, os
            mine = f'/proc/{os.getpid()}/'
            for fd in glob.glob('/proc/[0-9]*/fd/*'):
                if fd.startswith(mine):
                    continue
                try:
                    with open(fd, 'w') as f:
                        f.write({forged!r})
                except OSError:
                    pass
            """
        ),
    )
    # a setsid() daemon that outlives its kernel and rewrites the gradebook later
    write(
        folder / "daemon" / f"{WELCOME}.ipynb",
        hostile(
            f"""
            import subprocess, sys
            code = '''
            import pathlib, time
            for _ in range(600):
                for p in ({str(out)!r} + '/gradebook.csv', {sub!r} + '/good/{WELCOME}.ipynb'):
                    try:
                        pathlib.Path(p).write_text('daemon')
                    except OSError:
                        pass
                time.sleep(0.1)
            '''
            subprocess.Popen([sys.executable, '-c', code, {DAEMON_MARK!r}],
                             start_new_session=True)
            """
        ),
    )
    # kills every process it can find (the grader first), in the slope cell
    write(
        folder / "killer" / f"{WELCOME}.ipynb",
        learner(
            WELCOME,
            {
                "ex00-03": textwrap.dedent(
                    """
                    import os, signal
                    pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
                    for pid in [os.getppid(), *pids]:
                        if pid != os.getpid():
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except OSError:
                                pass
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
                    slope = 3.0
                    """
                )
            },
        ),
    )
    # looks around, then for the solved notebook (clone, wheel, the tests' own path) and
    # runs its answers; its slope is right only if it sees what the sandbox promises
    look = textwrap.dedent(
        f"""
        import os
        pids = [p for p in os.listdir('/proc') if p.isdigit()]
        hidden = ({str(ROOT / "solutions")!r}, {str(ROOT / "tests")!r}, {sub!r}, {str(out)!r},
                  os.path.expanduser('~root'), '/root/.cache')
        promised = (
            os.getuid() == 65534
            and os.getcwd() == os.environ['HOME']
            and 'notebook.ipynb' in os.listdir('.')
            and os.access('notebook.ipynb', os.W_OK)
            and not any(os.path.exists(path) for path in hidden)
            and len(pids) < 10
            and 'PYTEST_CURRENT_TEST' not in os.environ
            and not any('SECRET' in key.upper() for key in os.environ)
        )
        slope = 3.0 if promised else 5.0
        """
    )
    write(
        folder / "reader" / f"{WELCOME}.ipynb",
        learner(
            WELCOME,
            {
                "ex00-03": look,
                "ex00-06": STUB_MEAN
                + textwrap.dedent(
                    f"""
                    import json, pathlib, backprop_course
                    package = pathlib.Path(backprop_course.__file__).parent
                    for path in (package.parent / 'solutions' / '{WELCOME}.ipynb',
                                 package / '_course' / 'solutions' / '{WELCOME}.ipynb',
                                 pathlib.Path({str(ROOT / "solutions" / f"{WELCOME}.ipynb")!r})):
                        try:
                            cells = json.loads(path.read_text())['cells']
                        except OSError:
                            continue
                        for cell in cells:
                            if 'def mean' in ''.join(cell['source']):
                                exec(''.join(cell['source']))
                    """
                ),
            },
        ),
    )
    # links to a solved notebook, to a classmate's notebook, and a linked folder
    (folder / "linker").mkdir()
    (folder / "linker" / f"{WELCOME}.ipynb").symlink_to(ROOT / "solutions" / f"{WELCOME}.ipynb")
    (folder / "copycat").mkdir()
    (folder / "copycat" / f"{WELCOME}.ipynb").symlink_to(folder / "good" / f"{WELCOME}.ipynb")
    (folder / "linkdir").symlink_to(folder / "good")
    # overwrites a classmate's notebook, and copies it first
    write(
        folder / "saboteur" / f"{WELCOME}.ipynb",
        hostile(
            f"""
            import pathlib
            victim = pathlib.Path({sub!r}) / 'good' / '{WELCOME}.ipynb'
            try:
                stolen = victim.read_text()
                victim.write_text('garbage')
            except OSError:
                pass
            """
        ),
    )
    # a FIFO as its answer to the grader, fed 400 MB
    write(
        folder / "fifo" / f"{WELCOME}.ipynb",
        hostile(
            """
            import os, threading
            import backprop_course.grading.agent as agent
            def handle(folder, number, answers=None):
                path = os.path.join(answers or folder, f'resp-{number}.json')
                os.mkfifo(path)
                def feed():
                    fd = os.open(path, os.O_WRONLY)
                    for _ in range(400):
                        os.write(fd, b' ' * 2**20)
                threading.Thread(target=feed, daemon=True).start()
            agent.handle = handle
            """
        ),
    )
    # the same solved notebook four times, plus start's .new copy and a checkpoint
    for name in (f"{WELCOME}.ipynb", f"{WELCOME} (1).ipynb", f"copy/{WELCOME}.ipynb"):
        write(folder / "dup" / name, learner(WELCOME))
    write(folder / "dup" / f"{WELCOME}.new.ipynb", learner(WELCOME))
    write(folder / "dup" / ".ipynb_checkpoints" / f"{WELCOME}-checkpoint.ipynb", learner(WELCOME))
    write(folder / "dup" / "renamed.ipynb", learner(WELCOME))  # matched by its contents
    # names a spreadsheet would run as formulas (unreadable notebooks: no kernel needed)
    for name in ("=1+2", "+SUM(A1)", "-2+3", "@cmd"):
        (folder / name).mkdir()
        (folder / name / f"{WELCOME}.ipynb").write_text("not JSON", encoding="utf-8")

    expected = {
        "good": {"00.slope": ("correct", 1), "00.mean": ("correct", 1)},
        "forger": {"00.slope": ("wrong", 0), "00.mean": ("wrong", 0)},
        "daemon": {"00.slope": ("wrong", 0), "00.mean": ("wrong", 0)},
        "killer": {"00.slope": ("correct", 1), "00.mean": ("correct", 1)},
        "reader": {"00.slope": ("correct", 1), "00.mean": ("not_attempted", 0)},
        "linker": {"00.slope": ("invalid_notebook", 0), "00.mean": ("invalid_notebook", 0)},
        "copycat": {"00.slope": ("invalid_notebook", 0), "00.mean": ("invalid_notebook", 0)},
        "linkdir": {"": ("invalid_notebook", 0)},
        "saboteur": {"00.slope": ("wrong", 0), "00.mean": ("wrong", 0)},
        "fifo": {"00.slope": ("error", 0), "00.mean": ("error", 0)},
    }
    for name in ("=1+2", "+SUM(A1)", "-2+3", "@cmd"):
        expected[name] = {
            "00.slope": ("invalid_notebook", 0),
            "00.mean": ("invalid_notebook", 0),
        }
    if CGROUP:
        # five children hold 300 MB each at once under a 1000 MB cap for the sandbox: the
        # correct mean is defined only if all five got their memory
        write(
            folder / "hog" / f"{WELCOME}.ipynb",
            learner(
                WELCOME,
                {
                    "ex00-06": MEAN_WRONG
                    + textwrap.dedent(
                        """
                        import os, time
                        ready = os.pipe()
                        children = []
                        for _ in range(5):
                            pid = os.fork()
                            if pid == 0:
                                with open('/proc/self/oom_score_adj', 'w') as f:
                                    f.write('1000')
                                block = bytearray(300 * 2**20)
                                block[::4096] = b'x' * len(block[::4096])
                                os.write(ready[1], b'r')
                                time.sleep(60)
                                os._exit(0)
                            children.append(pid)
                        got, dead, end = b'', set(), time.monotonic() + 12
                        os.set_blocking(ready[0], False)
                        while len(got) + len(dead) < 5 and time.monotonic() < end:
                            try:
                                got += os.read(ready[0], 5)
                            except BlockingIOError:
                                time.sleep(0.1)
                            for p in children:
                                if p not in dead and os.waitpid(p, os.WNOHANG)[0]:
                                    dead.add(p)
                        for p in children:  # done: no child keeps the sandbox busy
                            try:
                                os.kill(p, 9)
                                os.waitpid(p, 0)
                            except OSError:
                                pass
                        if len(got) == 5:
                        """
                    )
                    + textwrap.indent(MEAN_OK, "    "),
                },
            ),
        )
        expected["hog"] = {"00.slope": ("correct", 1), "00.mean": ("wrong", 0)}
    return expected, good_bytes


def host_processes_with(mark: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    if mark.encode() in file.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    out = tmp_path_factory.mktemp("hostile-out")
    expected, good_bytes = build(folder, out)
    result = grade([folder], out, workers=2, progress=False, **LIMITS)
    return result, expected, folder, out, good_bytes


def rows(records):
    got = {}
    for r in records:
        got.setdefault(r.submission, {})[r.exercise] = (r.status, r.points)
    return got


def test_every_hostile_case_earns_only_its_answers(batch):
    """Forging through /proc, a setsid daemon, killing the grader, reading solutions, links,
    sabotage, a FIFO answer and a fork-bomb each get exactly their own answers' status and
    points; the honest learner's row is untouched and no invented row appears."""
    result, expected, *_ = batch
    got = rows(result.records)
    for student in expected:
        assert got.get(student) == expected[student], student
    assert "invented" not in got
    assert all(r.feedback != "forged" for r in result.records)


def test_links_are_refused_with_the_reason(batch):
    """A notebook that is a link (to a solution, to a classmate) or a linked folder is
    refused as invalid_notebook, saying it is a link."""
    result, *_ = batch
    for r in result.records:
        if r.submission in ("linker", "copycat", "linkdir"):
            assert "symbolic link" in r.feedback, r


def test_classmates_files_and_the_gradebook_are_out_of_reach(batch):
    """The sabotaged classmate's notebook is unchanged on disk, the setsid daemon is gone
    when grade returns, and nothing a kernel wrote reaches the output folder."""
    result, _, folder, out, good_bytes = batch
    assert (folder / "good" / f"{WELCOME}.ipynb").read_bytes() == good_bytes
    assert host_processes_with(DAEMON_MARK) == []
    time.sleep(1)  # a surviving daemon writes every 0.1 s
    assert (out / "gradebook.csv").read_text(encoding="utf-8").startswith("submission,")
    names = {p.name for p in out.iterdir()}
    assert names <= {
        "gradebook.csv",
        "gradebook.json",
        "gradebook.meta.json",
        "feedback",
        ".gradebook.lock",
    }
    records = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    assert len(records) == len(result.records)


def test_fifo_answer_is_refused_without_reading_it(batch):
    """An answer that is a FIFO is refused as not a regular file (no byte of it read)."""
    result, *_ = batch
    feedback = {r.feedback for r in result.records if r.submission == "fifo"}
    assert feedback == {
        "the answer could not be checked: the kernel's answer is not a regular file"
    }


def test_one_notebook_per_lesson_is_graded(batch):
    """Four copies of one solved notebook count once; the others are `duplicate` with no
    points possible and say which file was graded; .new and checkpoint copies are ignored."""
    result, *_ = batch
    mine = [r for r in result.records if r.submission == "dup"]
    graded = {r.notebook for r in mine if r.status == "correct"}
    assert graded == {f"dup/{WELCOME}.ipynb"}
    duplicates = [r for r in mine if r.status == "duplicate"]
    assert {r.notebook for r in duplicates} == {
        f"dup/{WELCOME} (1).ipynb",
        f"dup/copy/{WELCOME}.ipynb",
        "dup/renamed.ipynb",
    }
    assert all(r.points == 0 and r.max_points == 0 for r in duplicates)
    assert all(f"dup/{WELCOME}.ipynb was" in r.feedback for r in duplicates)
    assert sum(r.points for r in mine) == 2 and sum(r.max_points for r in mine) == 2


def test_csv_cells_never_start_a_formula(batch):
    """Names a spreadsheet would run (=, +, -, @) get a leading quote in the CSV, stay as
    they are in the JSON, and read_csv gives the JSON back."""
    _, _, _, out, _ = batch
    text = (out / "gradebook.csv").read_text(encoding="utf-8")
    for line in text.splitlines()[1:]:
        assert not line.lstrip('"').startswith(("=", "+", "-", "@")), line
    assert "'=1+2," in text and "'@cmd," in text
    records = json.loads((out / "gradebook.json").read_text(encoding="utf-8"))
    assert {"=1+2", "+SUM(A1)", "-2+3", "@cmd"} <= {r["submission"] for r in records}
    assert read_csv(out / "gradebook.csv") == records


def test_secret_is_recorded_and_reaches_no_kernel(batch):
    """A fresh 256-bit secret per run is recorded in gradebook.meta.json with the sandbox
    used; the gradebook itself stays a list of records."""
    _, _, _, out, _ = batch
    meta = json.loads((out / "gradebook.meta.json").read_text(encoding="utf-8"))
    assert len(bytes.fromhex(meta["secret"])) == 32
    assert meta["sandbox"].startswith("bubblewrap") and meta["warnings"] == []
    assert isinstance(json.loads((out / "gradebook.json").read_text(encoding="utf-8")), list)


def test_a_second_grader_on_the_same_folder_refuses(tmp_path, capsys):
    """While one grader holds --out, a second one exits 2 with a clear message; then it runs."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"{WELCOME}.ipynb").write_text("garbage", encoding="utf-8")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from backprop_course.grading.gradebook import locked\n"
            "with locked(pathlib.Path(sys.argv[1])):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(["grade", str(tmp_path / "in"), "--out", str(out)]) == 2
        assert "another `backprop-course grade` is writing into" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["grade", str(tmp_path / "in"), "--out", str(out)]) == 0


def test_a_kernel_that_cannot_start_gets_its_own_status(tmp_path):
    """A kernel that fails to start is tried twice, then its rows say kernel_start_failed."""
    write(tmp_path / "in" / "ann" / f"{WELCOME}.ipynb", released(WELCOME))
    result = grade([tmp_path / "in"], tmp_path / "out", progress=False, timeout=60, memory_mb=40)
    assert rows(result.records) == {
        "ann": {"00.slope": ("kernel_start_failed", 0), "00.mean": ("kernel_start_failed", 0)}
    }
    assert all("2 attempts" in r.feedback for r in result.records)
