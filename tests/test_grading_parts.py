"""The grader's parts without a kernel: the strict codec, remote proxies (with the kernel
agent run in this process), discovery and lesson matching, restoring locked cells,
redaction, gradebook files and the command line's usage errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from backprop_course import cli, grading
from backprop_course.autograd import Value
from backprop_course.compare import NotAttempted, Wrong, call, run_probe
from backprop_course.grading import agent, batch, codec, remote
from backprop_course.grading.discover import (
    InvalidNotebook,
    Released,
    Submission,
    find_submissions,
    match_lesson,
    parse_notebook,
    restore,
)
from backprop_course.grading.gradebook import (
    GradebookLocked,
    Record,
    locked,
    read_csv,
    write_gradebook,
)
from backprop_course.grading.runner import Job, Options, hidden_seed, redact
from conftest import ROOT

# ---------------------------------------------------------------- codec


def roundtrip(value):
    text = json.dumps(codec.encode(value, lambda o: {"R": {"id": 1}}))
    return codec.decode(json.loads(text), reference=lambda b: ("ref", b["id"]), known=None)


def test_codec_round_trips_plain_data():
    """Numbers, strings, containers, arrays, tensors and Ellipsis come back by value."""
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = {"a": [1, 2.5, None, True, "s"], (1, 2): (array, np.int32(7)), "e": ...}
    back = roundtrip(value)
    assert back["a"] == [1, 2.5, None, True, "s"] and back["e"] is Ellipsis
    got, scalar = back[(1, 2)]
    assert got.dtype == np.float32 and np.array_equal(got, array) and got.flags.writeable
    assert isinstance(scalar, np.int32) and scalar == 7
    tensor = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = roundtrip(tensor)
    assert isinstance(t, torch.Tensor) and torch.equal(t, tensor.detach()) and not t.requires_grad
    bf = roundtrip(torch.ones(2, dtype=torch.bfloat16))
    assert bf.dtype == torch.bfloat16
    assert roundtrip(object()) == ("ref", 1)


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"A": {"dtype": "|O", "shape": [1], "data": ""}},
        {"A": {"dtype": "<f8", "shape": [3], "data": "AAAA"}},
        {"Z": 1},
        {"L": [1], "T": [2]},
        {"K": "1.2"},
    ],
)
def test_codec_refuses_anything_unexpected(bad):
    """Objects, wrong sizes, unknown tags and unknown ids are errors, never unpickled."""
    with pytest.raises(codec.CodecError):
        codec.decode(
            bad,
            reference=lambda b: None,
            known=lambda k: (_ for _ in ()).throw(codec.CodecError("unknown")),
        )


# ---------------------------------------------------------------- proxies, in process


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A session whose 'kernel' is this process: the agent answers from a dict namespace."""
    namespace: dict = {}
    monkeypatch.setattr(agent, "_namespace", lambda: namespace)
    agent.reset()
    session = remote.Session(lambda code, timeout: exec(code), tmp_path, request_timeout=30)
    return session, namespace


def _mutate(a, items, node):
    a += 1
    items.append(5)
    node.grad = 7.0
    return node


def test_proxy_calls_and_converts(kernel):
    session, ns = kernel
    ns.update(f=lambda x, y=1: x * 2 + y, stub=..., data=[1, {"k": np.ones(2)}])
    assert session.lookup("stub") == (True, Ellipsis)
    assert session.lookup("missing") == (False, None)
    assert session.lookup("data")[1][1]["k"].tolist() == [1.0, 1.0]
    f = session.lookup("f")[1]
    assert isinstance(f, remote.CallableProxy) and f.__name__ == "<lambda>"
    assert call(f, 3, what="f") == 7 and np.allclose(f(np.ones(2), y=3), 5)
    with pytest.raises(TypeError) as info:  # a remote TypeError is a TypeError here
        f(None)
    assert isinstance(info.value, remote.RemoteError)
    with pytest.raises(Wrong, match="raised TypeError"):
        call(f, None, what="f")


def test_proxy_keeps_identity_and_copies_back_changes(kernel):
    """Objects sent to the kernel come back as themselves, with in-place changes."""
    session, ns = kernel
    ns["mutate"] = _mutate
    a, items, node = np.zeros(3), [1], Value(2.0)
    assert session.lookup("mutate")[1](a, items, node) is node
    assert a.tolist() == [1, 1, 1] and items == [1, 5] and node.grad == 7.0


def test_deep_graphs_travel(kernel):
    """A chain thousands of nodes deep is sent, walked and returned without recursion."""
    session, ns = kernel
    ns["order"] = lambda root: root.topological_order()
    leaf = Value(0.5)
    v = leaf
    for _ in range(5000):
        v = (v + leaf) * 0.5
    order = session.lookup("order")[1](v)
    assert order[-1] is v and any(n is leaf for n in order) and len(order) == 15001


def test_remote_objects_support_operators_and_iteration(kernel):
    session, ns = kernel

    class Thing:
        def __init__(self, x):
            self.x = x

        def __add__(self, other):
            return Thing(self.x + (other.x if isinstance(other, Thing) else other))

        def __radd__(self, other):
            return Thing(other + self.x)

        def __float__(self):
            return float(self.x)

    def gen(n):
        yield from range(n)

    ns.update(Thing=Thing, gen=gen)
    cls = session.lookup("Thing")[1]
    a, b = cls(1.5), cls(2.0)
    assert float(a + b) == 3.5 and float(2 + a) == 3.5 and (a + b).x == 3.5
    assert sum(session.lookup("gen")[1](600)) == sum(range(600))
    assert not hasattr(a, "missing")


def _probe_twice(function, x):
    return function(x) * 2


def test_run_probe_runs_where_the_answer_lives(kernel):
    """Locally the probe calls the answer; through the grader, the probe runs in the kernel."""
    session, ns = kernel
    assert run_probe(_probe_twice, math.sin, 0.5) == 2 * math.sin(0.5)
    ns["f"] = lambda x: x + 1
    assert run_probe(_probe_twice, session.lookup("f")[1], 1.0) == 4.0
    with pytest.raises(NotAttempted):
        run_probe(_probe_twice, ..., 1.0)


def test_unsendable_arguments_are_a_grader_error(kernel):
    session, ns = kernel
    ns["f"] = lambda g: g(1)
    with pytest.raises(remote.CannotSend):
        session.lookup("f")[1](lambda x: x)


# ---------------------------------------------------------------- discovery and restoring


def test_find_submissions_layouts(tmp_path):
    (tmp_path / "alice" / "sub").mkdir(parents=True)
    (tmp_path / "alice" / "sub" / "01_x.ipynb").write_text("{}")
    (tmp_path / "alice" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "alice" / ".ipynb_checkpoints" / "01_x-checkpoint.ipynb").write_text("{}")
    (tmp_path / "bob.ipynb").write_text("{}")
    found = find_submissions([tmp_path])
    assert [(s.student, s.notebook) for s in found] == [
        ("alice", "alice/sub/01_x.ipynb"),
        ("bob", "bob.ipynb"),
    ]
    assert [s.student for s in find_submissions([tmp_path / "bob.ipynb"])] == ["bob"]
    with pytest.raises(FileNotFoundError):
        find_submissions([tmp_path / "nobody"])


def _release(stem):
    text = (ROOT / "exercises" / f"{stem}.ipynb").read_text(encoding="utf-8")
    return Released(stem[:2], f"{stem}.ipynb", text)


def test_lessons_are_matched_by_name_then_by_contents():
    released = {"00": _release("00_welcome"), "01": _release("01_derivatives")}
    nb = released["01"].nb
    assert match_lesson("00_welcome.ipynb", nb, released) == "00"  # the name wins
    assert match_lesson("homework.ipynb", nb, released) == "01"
    assert match_lesson("homework.ipynb", nbformat.v4.new_notebook(), released) is None


def test_restore_brings_back_locked_cells_and_flags_edited_checks():
    release = _release("00_welcome")
    nb = nbformat.from_dict(json.loads(json.dumps(release.nb)))
    nb.cells[4].source = "print('PASS')"  # the check cell of 00.slope
    nb.cells[1].source = "import os"  # the set-up cell
    del nb.cells[7]  # the check cell of 00.mean
    extra = nbformat.v4.new_code_cell("scratch = 1")
    nb.cells.insert(4, extra)
    prepared = restore(nb, release)
    sources = [c.source for c in prepared.nb.cells]
    assert sources.count('check("00.slope", slope)') == 1 and "print('PASS')" not in sources
    assert 'check("00.mean", mean)' in sources and "scratch = 1" in sources
    assert prepared.edited_checks == {"00.slope"}
    assert any("edited" in n for n in prepared.notes) and any(
        "deleted" in n for n in prepared.notes
    )
    assert prepared.section[sources.index("scratch = 1")] == "00.slope"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"a": 1}', "not a Jupyter notebook"),
        ('{"nbformat": 3, "worksheets": []}', "nbformat 3"),
        ('{"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "bogus"}]}', "nbformat 4"),
    ],
)
def test_invalid_notebooks_say_why(text, reason):
    with pytest.raises(InvalidNotebook, match=reason):
        parse_notebook(text)


# ---------------------------------------------------------------- feedback and files


def test_redaction_hides_numbers_but_keeps_the_mistake():
    message = (
        "forward_difference is wrong for f=sin, x=0.3172, h=1.2e-05: it matches a common "
        "mistake: forgot to divide by h (index (2, 1), value 123456)"
    )
    assert redact(message) == (
        "forward_difference is wrong for f=sin, x=…, h=…: it matches a common "
        "mistake: forgot to divide by h (index (2, 1), value …)"
    )


def test_hidden_seed_is_deterministic_and_secret_dependent():
    assert hidden_seed(b"a", "01.x") == hidden_seed(b"a", "01.x") != hidden_seed(b"b", "01.x")


def test_gradebook_files_agree_and_quote(tmp_path):
    records = [
        Record("ann, jr.", "a.ipynb", "00.slope", 1, 1, "correct", 'said "hi",\nthen left'),
        Record("bob", "b.ipynb", "", 0, 0, "invalid_notebook", "not JSON"),
    ]
    csv_path, json_path = write_gradebook(records, tmp_path)
    assert read_csv(csv_path) == json.loads(json_path.read_text(encoding="utf-8"))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_cli_usage_errors(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "nowhere")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["grade", str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err


def test_cli_grades_and_exits_zero(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "00_welcome.ipynb").write_text("garbage", encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["grade", str(tmp_path / "in"), "--out", str(out), "--workers", "1"]) == 0
    assert "invalid_notebook 2" in capsys.readouterr().out
    assert (out / "gradebook.csv").exists() and (out / "feedback" / "00_welcome.md").exists()


# ---------------------------------------------------------------- what the sandbox hands back


def test_answers_are_read_only_from_regular_files(tmp_path):
    """A kernel's answer that is a FIFO or a link is refused unread; a big one is refused
    after reading one byte more than the cap."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(remote.ProtocolError, match="not a regular file"):
        remote._read_capped(fifo, 100)
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(remote.ProtocolError, match="cannot be opened"):
        remote._read_capped(tmp_path / "link.json", 100)
    (tmp_path / "big.json").write_bytes(b" " * 101)
    with pytest.raises(remote.ProtocolError, match="too large"):
        remote._read_capped(tmp_path / "big.json", 100)
    assert remote._read_capped(tmp_path / "real.json", 100) == b"{}"


def _job(student="ann", notebook="ann/00_welcome.ipynb", lesson="00"):
    sub = Submission(student, Path(notebook), notebook)
    return Job(sub, {}, {}, Options(secret=b"s"), None, lesson)


def _row(exercise, points, status="correct", student="ann", top=1):
    return {
        "submission": student,
        "notebook": f"{student}/00_welcome.ipynb",
        "exercise": exercise,
        "points": points,
        "max_points": top,
        "status": status,
        "feedback": "f",
    }


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([_row("00.slope", 1), _row("00.mean", 1), _row("00.mean", 1)], "twice"),
        ([_row("00.slope", 1), _row("00.mean", 1, student="bob")], "another submission"),
        ([_row("00.slope", 5, top=5), _row("00.mean", 1)], "out of range"),
        ([_row("00.slope", 1), _row("00.mean", 1, "wrong")], "without a correct"),
        ([_row("00.slope", 1)], "every exercise"),
        ([_row("00.slope", 1), _row("01.gradient", 3, top=3)], "not an exercise"),
        ([_row("00.slope", 1), {**_row("00.mean", 1), "extra": 1}], "wrong fields"),
        ([_row("00.slope", 1), _row("00.mean", float("nan"))], "not finite"),
        ([_row("00.slope", 1), _row("00.mean", 1, "bogus")], "bad status"),
    ],
)
def test_results_that_do_not_fit_their_job_are_rejected(rows, reason):
    """A grading result with rows of another learner, an invented or repeated exercise,
    points out of range or a missing exercise is rejected (it becomes an error row)."""
    with pytest.raises(ValueError, match=reason):
        batch._validate(_job(), {"records": rows, "notes": []})
    with pytest.raises(ValueError, match="not a grading result"):
        batch._validate(_job(), [rows])


def test_a_result_that_fits_its_job_is_kept():
    outcome = batch._validate(
        _job(), {"records": [_row("00.slope", 1), _row("00.mean", 0, "wrong")], "notes": ["n"]}
    )
    assert [r.points for r in outcome.records] == [1, 0] and outcome.notes == ["n"]


def test_feedback_has_no_addresses_or_proxy_names():
    """Run-to-run details leave feedback: object addresses and the grader's proxy classes."""
    message = "got <function slope at 0x7f3a2b4c5d60> (a backprop_course.grading.remote.Proxy)"
    assert redact(message) == "got <function slope> (a object)"
    assert "0x" not in redact("id 0xdeadbeef01")


def test_csv_neutralises_formulas_and_reads_back(tmp_path):
    """Cells starting with = + - @ tab CR (or ') get a leading quote; read_csv undoes it."""
    names = ["=1+2", "+x", "-1", "@a", "\tt", "\rr", "'q", "plain", "a=b"]
    records = [Record(n, "nb", "", 0, 0, "invalid_notebook", n) for n in names]
    csv_path, json_path = write_gradebook(records, tmp_path)
    text = csv_path.read_text(encoding="utf-8")
    assert "'=1+2,nb" in text and "'@a" in text and "''q" in text and "\na=b," in text
    assert read_csv(csv_path) == json.loads(json_path.read_text(encoding="utf-8"))


def test_secret_files(tmp_path):
    """--secret-file takes a gradebook.meta.json, hex digits or raw bytes."""
    (tmp_path / "meta.json").write_text(json.dumps({"secret": "ab" * 32}))
    (tmp_path / "hex").write_text("0102\n")
    (tmp_path / "raw").write_bytes(b"my words")
    assert grading.read_secret(tmp_path / "meta.json") == b"\xab" * 32
    assert grading.read_secret(tmp_path / "hex") == b"\x01\x02"
    assert grading.read_secret(tmp_path / "raw") == b"my words"


def test_discovery_skips_copies_and_refuses_links(tmp_path):
    """.new.ipynb and checkpoints are skipped; a linked notebook or folder is refused."""
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "00_welcome.ipynb").write_text("{}")
    (tmp_path / "ann" / "00_welcome.new.ipynb").write_text("{}")
    (tmp_path / "ann" / "01_x.ipynb").symlink_to(tmp_path / "ann" / "00_welcome.ipynb")
    (tmp_path / "bob").symlink_to(tmp_path / "ann")
    found = {(s.student, s.notebook): s.refused for s in find_submissions([tmp_path])}
    assert found == {
        ("ann", "ann/00_welcome.ipynb"): "",
        ("ann", "ann/01_x.ipynb"): "it is a symbolic link (submit the notebook itself)",
        ("bob", "bob"): "its folder is a symbolic link (submit the notebooks themselves)",
    }


def test_a_second_grader_is_locked_out(tmp_path):
    """While one process holds the output folder's lock, another gets GradebookLocked."""
    with locked(tmp_path), pytest.raises(GradebookLocked, match="another"), locked(tmp_path):
        pass
    with locked(tmp_path):  # released again
        pass


def test_cli_no_sandbox_is_recorded_and_sandbox_missing_refuses(tmp_path, capsys, monkeypatch):
    """Without bubblewrap, grade refuses saying how to install it; --no-sandbox grades with
    a warning printed and recorded in gradebook.meta.json."""
    from backprop_course.grading import sandbox

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "00_welcome.ipynb").write_text("garbage", encoding="utf-8")
    out = tmp_path / "out"
    missing = sandbox.Probe(False, "the bwrap command is not installed")
    monkeypatch.setattr(batch, "probe", lambda: missing)
    assert cli.main(["grade", str(tmp_path / "in"), "--out", str(out)]) == 2
    assert "apt-get install bubblewrap" in capsys.readouterr().err
    assert cli.main(["grade", str(tmp_path / "in"), "--out", str(out), "--no-sandbox"]) == 0
    captured = capsys.readouterr()
    assert "WITHOUT a sandbox" in captured.err and "WITHOUT a sandbox" in captured.out
    meta = json.loads((out / "gradebook.meta.json").read_text(encoding="utf-8"))
    assert meta["sandbox"] == "off" and "WITHOUT a sandbox" in meta["warnings"][0]


def test_start_with_solutions_needs_a_clone(tmp_path, capsys, monkeypatch):
    """From an installed wheel (no solutions/), start --with-solutions says to use a clone."""
    from backprop_course import course

    bundled = tmp_path / "_course"
    (bundled / "notebooks").mkdir(parents=True)
    (bundled / "exercises").mkdir()
    monkeypatch.setattr(course, "course_root", lambda: bundled)
    argv = ["start", str(tmp_path / "work"), "--with-solutions", "--copy-only"]
    assert cli.main(argv) == 2
    assert "from a clone" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_doctor_reports_the_sandbox(capsys):
    """doctor says whether grading is sandboxed here, and how."""
    from backprop_course.grading.sandbox import probe

    cli.main(["doctor"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("grading:"))
    assert line.startswith("grading: sandboxed, bubblewrap" if probe().available else "grading:")
    assert ("caps:" in line) == probe().available


def test_the_kernel_agent_imports_only_what_it_needs():
    """Importing the grader's agent in a kernel loads neither the batch machinery (nbformat,
    the exercise checks) nor torch: its first request would otherwise cost seconds."""
    import subprocess
    import sys

    code = (
        "import sys, backprop_course.grading.agent; "
        "print(sorted(m for m in ('nbformat', 'torch', 'backprop_course.exercises.lesson03', "
        "'backprop_course.grading.batch', 'backprop_course.grading.runner') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
