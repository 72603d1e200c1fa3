"""The grader's parts without a kernel: the strict codec, remote proxies (with the kernel
agent run in this process), discovery and lesson matching, restoring locked cells,
redaction, gradebook files and the command line's usage errors."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest
import torch

from backprop_course import cli
from backprop_course.autograd import Value
from backprop_course.compare import NotAttempted, Wrong, call, run_probe
from backprop_course.grading import agent, codec, remote
from backprop_course.grading.discover import (
    InvalidNotebook,
    Released,
    find_submissions,
    match_lesson,
    parse_notebook,
    restore,
)
from backprop_course.grading.gradebook import Record, read_csv, write_gradebook
from backprop_course.grading.runner import hidden_seed, redact
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
