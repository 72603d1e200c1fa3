"""The grader's agent inside a learner's kernel: it answers one request at a time.

The grader (:mod:`backprop_course.grading.remote`) writes a request as a pickle
file (trusted -> untrusted, so unpickling it here is fine) and runs
``handle(folder, number)`` in the kernel. The answer is written as strict JSON
(:mod:`backprop_course.grading.codec`): the grader never unpickles what comes
from here. Nothing in this module is trusted by the grader: a learner's code
may have replaced any of it, which can only spoil that learner's own answers.

Objects the grader sent keep their identity: each one has an id on both sides
(from the pickle memo), a result that contains one goes back as ``{"K": id}``,
and after every request the objects that the learner's code changed in place
(array contents, list items, attributes) go back as updates, which the grader
copies into its own objects.
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import pickle
import sys
from typing import Any

from backprop_course.grading import codec

_REFS: dict[int, Any] = {}
_REF_IDS: dict[int, int] = {}  # id(obj) -> ref number
_KNOWN: dict[str, Any] = {}  # id the grader gave -> the object here
_KNOWN_IDS: dict[int, str] = {}
_SNAPSHOTS: dict[str, Any] = {}
_NEXT = [0]
_MISSING = object()

BINARY = {name: getattr(operator, name) for name in codec.ARITHMETIC + codec.COMPARISONS}
UNARY = {name: getattr(operator, name) for name in codec.UNARY}


def _reference(obj: Any) -> dict:
    key = id(obj)
    number = _REF_IDS.get(key)
    if number is None or _REFS.get(number) is not obj:
        _NEXT[0] += 1
        number = _NEXT[0]
        _REFS[number] = obj
        _REF_IDS[key] = number
    name = getattr(obj, "__name__", None)
    return {
        "R": {
            "id": number,
            "type": type(obj).__name__[:100],
            "callable": callable(obj),
            "name": name[:100] if isinstance(name, str) else None,
        }
    }


def _known(obj: Any) -> str | None:
    key = _KNOWN_IDS.get(id(obj))
    return key if key is not None and _KNOWN.get(key) is obj else None


def _encode(value: Any) -> Any:
    return codec.encode(value, _reference, known=_known)


class _Loader(pickle.Unpickler):
    def persistent_load(self, pid):
        kind, key = pid
        if kind == "R":
            return _REFS[key]
        if kind == "K":
            return _KNOWN[key]
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def _state(obj: Any) -> tuple[str, Any] | None:
    """What the grader can copy back, and a snapshot to see whether it changed."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None and isinstance(obj, np.ndarray):
        return ("array", obj.copy()) if obj.dtype.kind in "biufc" else None
    if isinstance(obj, list):
        return "list", list(obj)
    if isinstance(obj, dict):
        return "dict", dict(obj)
    state = getattr(obj, "__dict__", None)
    attrs = dict(state) if isinstance(state, dict) else {}
    for name in _slots(type(obj)):
        with contextlib.suppress(AttributeError):
            attrs[name] = getattr(obj, name)
    return "attrs", attrs


_SLOTS: dict[type, tuple[str, ...]] = {}


def _slots(cls: type) -> tuple[str, ...]:
    names = _SLOTS.get(cls)
    if names is None:
        found = []
        for klass in cls.__mro__:
            slots = vars(klass).get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name not in ("__dict__", "__weakref__") and name not in found:
                    found.append(name)
        names = _SLOTS[cls] = tuple(found)
    return names


def _changed(kind: str, obj: Any, snapshot: Any) -> bool:
    if kind == "array":
        import numpy as np

        return obj.shape != snapshot.shape or not np.array_equal(obj, snapshot, equal_nan=True)
    if kind == "list":
        return len(obj) != len(snapshot) or any(a is not b for a, b in zip(obj, snapshot))
    if len(obj) != len(snapshot):
        return True
    return any(k not in snapshot or snapshot[k] is not v for k, v in obj.items())


def _register(memo: dict, request: int, indices: list) -> None:
    for index in indices:
        obj = memo.get(index, _MISSING)
        if obj is _MISSING:
            continue
        key = f"{request}.{index}"
        state = _state(obj)
        if state is None:
            continue
        _KNOWN[key] = obj
        _KNOWN_IDS[id(obj)] = key
        _SNAPSHOTS[key] = state


def _updates() -> list:
    out = []
    for key, (kind, snapshot) in list(_SNAPSHOTS.items()):
        obj = _KNOWN[key]
        state = _state(obj)
        if state is None:
            continue
        current = state[1] if kind == "attrs" else obj
        if not _changed(kind, current, snapshot):
            continue
        _SNAPSHOTS[key] = state
        if kind == "array":
            payload = {"A": codec._array_payload(obj)}
        elif kind == "attrs":
            payload = {"D": [[name, _encode(value)] for name, value in state[1].items()]}
        else:
            if kind == "list":
                payload = {"L": [_encode(v) for v in obj]}
            else:
                payload = {"D": [[_encode(k), _encode(v)] for k, v in dict.items(obj)]}
        out.append([key, kind, payload])
    return out


def reset() -> None:
    """Forget every reference and every object the grader sent."""
    _REFS.clear()
    _REF_IDS.clear()
    _KNOWN.clear()
    _KNOWN_IDS.clear()
    _SNAPSHOTS.clear()


def _namespace() -> dict:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else sys.modules["__main__"].__dict__


def _perform(op: str, req: dict) -> Any:
    target = req.get("target")
    if op == "lookup":
        value = _namespace().get(req["name"], _MISSING)
        return {"missing": True} if value is _MISSING else {"value": value}
    if op == "reset":
        reset()
        return None
    if op == "call":
        return req["fn"](*req.get("args", ()), **req.get("kwargs", {}))
    if op == "getattr":
        return getattr(target, req["name"])
    if op == "setattr":
        setattr(target, req["name"], req["value"])
        return None
    if op == "delattr":
        delattr(target, req["name"])
        return None
    if op == "getitem":
        return target[req["key"]]
    if op == "setitem":
        target[req["key"]] = req["value"]
        return None
    if op == "delitem":
        del target[req["key"]]
        return None
    if op == "contains":
        return bool(req["value"] in target)
    if op == "binary":
        function = BINARY[req["name"]]
        other = req["other"]
        return function(other, target) if req.get("reflected") else function(target, other)
    if op == "unary":
        return UNARY[req["name"]](target)
    if op == "convert":
        kind = req["name"]
        value = {
            "len": len,
            "bool": bool,
            "float": float,
            "int": int,
            "index": operator.index,
            "complex": complex,
            "hash": hash,
            "repr": repr,
            "str": str,
        }[kind](target)
        return value[:2000] if isinstance(value, str) else value
    if op == "format":
        return format(target, req["spec"])[:2000]
    if op == "array":
        import numpy as np

        return np.asarray(target, dtype=req.get("dtype"))
    if op == "iter":
        return iter(target)
    if op == "next":
        items = []
        for _ in range(req.get("count", 256)):
            try:
                items.append(next(target))
            except StopIteration:
                return {"items": items, "done": True}
        return {"items": items, "done": False}
    raise ValueError(f"unknown request {op!r}")


def _error_text(error: BaseException) -> str:
    """The error's message and, on a tagged last line, the learner's own line (see compare)."""
    from backprop_course.compare import LINE_TAG, learner_line

    text = str(error)[:1500]
    try:
        line = learner_line(error)
    except Exception:
        line = ""
    return f"{text}\n{LINE_TAG}{line}"[:2000] if line else text


def handle(folder: str, number: int) -> None:
    """Answer request ``number``: read ``req-N.pkl`` in ``folder``, write ``resp-N.json``."""
    response: dict
    try:
        with open(os.path.join(folder, f"req-{number}.pkl"), "rb") as file:
            data = file.read()
        stream = io.BytesIO(data)
        loader = _Loader(stream)
        _prelude, req = loader.load()
        memo = loader.memo.copy()
        _register(memo, number, pickle.load(stream))
        del _prelude
        result = _perform(req["op"], req)
        try:
            encoded = _encode(result)
        except RecursionError:
            encoded = _reference(result)
        response = {"ok": encoded}
    except BaseException as error:  # the learner's code may raise anything, even SystemExit
        response = {"error": [type(error).__name__[:100], _error_text(error)]}
    try:
        response["updates"] = _updates()
    except BaseException as error:
        response = {"error": [type(error).__name__[:100], f"copying back failed: {error}"[:2000]]}
    try:
        text = json.dumps(response, allow_nan=True)
    except BaseException as error:
        text = json.dumps({"error": [type(error).__name__, "the result could not be encoded"]})
    path = os.path.join(folder, f"resp-{number}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(path + ".tmp", path)
