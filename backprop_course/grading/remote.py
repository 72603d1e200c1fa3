"""Remote proxies: the grader's handle on objects that live in a learner's kernel.

A :class:`Session` sends requests to :mod:`backprop_course.grading.agent`
inside the kernel and reads back strict JSON (:mod:`backprop_course.grading.codec`).
Plain data (numbers, strings, arrays, tensors, lists/tuples/dicts of them)
comes back by value; anything else comes back as a :class:`Proxy`, which
forwards calls, attribute access, indexing, iteration, conversions and
arithmetic to the kernel. Arguments travel by value (pickled, grader ->
kernel only); objects the grader sent keep their identity, and changes that
the learner's code makes to them in place are copied back after each request.

An exception in the kernel comes back as a :class:`RemoteError` whose class
has the remote type's name and, for a built-in exception type, is also an
instance of it (``except TypeError`` catches a remote ``TypeError``), so
``compare.call`` reports it like any learner error. A request that does not
finish in time, a kernel that dies and a malformed answer raise
:class:`GradingInterrupt` subclasses, which derive from ``BaseException`` so
that no ``except Exception`` in a check can swallow them.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import pickle
import re
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from backprop_course.grading import codec

__all__ = [
    "CallableProxy",
    "CannotSend",
    "GradingInterrupt",
    "KernelDied",
    "ProtocolError",
    "Proxy",
    "RemoteError",
    "RemoteTimeout",
    "Session",
    "is_proxy",
]

MAX_RESPONSE_BYTES = 256 * 2**20
AGENT_CALL = (
    "__import__('backprop_course.grading.agent', fromlist=['handle']).handle({!r}, {}, {!r})"
)


class GradingInterrupt(BaseException):
    """Grading of this exercise cannot go on (the kernel hung, died or answered garbage)."""


class RemoteTimeout(GradingInterrupt):
    """The kernel did not answer within the time limit."""


class KernelDied(GradingInterrupt):
    """The kernel process is gone."""


class ProtocolError(GradingInterrupt):
    """The kernel answered something that is not a valid response."""


class CannotSend(GradingInterrupt):
    """The check's arguments cannot be pickled (a bug in the check, not the learner's)."""


class RemoteError(Exception):
    """An exception raised by the learner's code in the kernel (type name and message)."""

    remote_type: str = "Exception"


_ERROR_CLASSES: dict[str, type] = {}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
# Built-in exception types a remote error also inherits from, so checks can catch them.
_NOT_MIXED = {"BaseException", "Exception", "GeneratorExit", "KeyboardInterrupt", "SystemExit"}


def remote_error(type_name: str, message: str) -> RemoteError:
    """A :class:`RemoteError` instance for a remote exception ``type_name: message``."""
    name = type_name if isinstance(type_name, str) and _IDENTIFIER.match(type_name) else "Error"
    cls = _ERROR_CLASSES.get(name)
    if cls is None:
        builtin = getattr(builtins, name, None)
        bases: tuple[type, ...] = (RemoteError,)
        if (
            isinstance(builtin, type)
            and issubclass(builtin, Exception)
            and name not in _NOT_MIXED
            and not issubclass(builtin, StopIteration)
        ):
            bases = (RemoteError, builtin)
        cls = type(name, bases, {"remote_type": name, "__module__": "kernel"})
        _ERROR_CLASSES[name] = cls
    error = cls.__new__(cls)
    Exception.__init__(error, str(message))
    return error


def is_proxy(value: Any) -> bool:
    return isinstance(value, Proxy)


# ---------------------------------------------------------------- pickling (grader -> kernel)


def _eligible(obj: Any) -> bool:
    """Objects whose identity and in-place changes matter: containers, arrays, instances."""
    if isinstance(obj, (list, dict, np.ndarray)):
        return True
    if isinstance(obj, (type, Proxy, str, bytes, int, float, complex, tuple, frozenset, set)):
        return False
    if callable(obj) and not hasattr(obj, "__dict__"):
        return False
    kind = type(obj).__name__
    if kind in ("function", "builtin_function_or_method", "module", "method", "partial"):
        return False
    return hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__")


def _children(obj: Any) -> list:
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (np.ndarray, type, Proxy, str, bytes, int, float, complex)) or obj is None:
        return []
    out = []
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict):
        out.extend(state.values())
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                out.append(getattr(obj, name))
    return out


_SCALARS = frozenset({str, int, float, bool, type(None), bytes, complex})


def _postorder(roots: list, skip: Callable[[Any], bool]) -> list:
    """Eligible objects reachable from ``roots``, each after everything it holds.

    Pickling them in this order first keeps pickle's recursion shallow, even for a
    graph thousands of nodes deep.
    """
    out, seen = [], set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        obj, done = stack.pop()
        if type(obj) in _SCALARS:
            continue
        if done:
            if _eligible(obj):
                out.append(obj)
            continue
        if id(obj) in seen or skip(obj):
            continue
        seen.add(id(obj))
        stack.append((obj, True))
        stack.extend((child, False) for child in reversed(_children(obj)))
    return out


_ATOMIC = frozenset({str, int, float, bool, type(None), bytes, complex, tuple})


class _Dumper(pickle.Pickler):
    def __init__(self, file, session: Session):
        super().__init__(file, protocol=5)
        self.session = session

    def persistent_id(self, obj: Any):
        if type(obj) in _ATOMIC:
            return None
        if isinstance(obj, Proxy):
            if object.__getattribute__(obj, "_session") is not self.session:
                raise pickle.PicklingError("a proxy from another kernel session")
            return ("R", object.__getattribute__(obj, "_ref"))
        key = self.session._local_key(obj)
        return ("K", key) if key is not None else None


# ---------------------------------------------------------------- files the kernel can reach


def _write_new(path: Path, data: bytes) -> None:
    """Write a fresh file, never through a link or into a file someone placed there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _read_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them counted as read.

    The kernel wrote it, so it may be a FIFO, a device or a link: open without
    following links and without blocking, and refuse anything but a regular file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ProtocolError("the kernel gave no answer to a grading request") from None
    except OSError as error:
        raise ProtocolError(f"the kernel's answer cannot be opened ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ProtocolError("the kernel's answer is not a regular file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(2**20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ProtocolError(f"the kernel's answer is too large (over {limit} bytes)")
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the session


class Session:
    """Requests to one kernel. ``run(code, timeout)`` executes code there and waits.

    ``run`` raises :class:`RemoteTimeout` or :class:`KernelDied`; ``deadline``
    (a ``time.monotonic()`` value) bounds every request, ``request_timeout``
    each one.
    """

    def __init__(
        self,
        run: Callable[[str, float], None],
        folder: Path,
        *,
        request_timeout: float = 30.0,
        deadline: float | None = None,
        answers: Path | None = None,
    ):
        self._run = run
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # where the kernel writes its answers (a folder it can write; requests are not)
        self.answers = Path(answers) if answers is not None else self.folder
        self.answers.mkdir(parents=True, exist_ok=True)
        self.request_timeout = request_timeout
        self.deadline = deadline
        self._count = 0
        self._locals: dict[str, Any] = {}
        self._local_ids: dict[int, str] = {}
        self._proxies: dict[int, Proxy] = {}

    # -- identity of objects the grader sent
    def _local_key(self, obj: Any) -> str | None:
        key = self._local_ids.get(id(obj))
        return key if key is not None and self._locals.get(key) is obj else None

    def reset(self) -> None:
        """Forget references and sent objects, here and in the kernel."""
        self.request("reset")
        self._locals.clear()
        self._local_ids.clear()
        self._proxies.clear()

    # -- one request
    def _pickle(self, number: int, payload: dict) -> bytes:
        roots = [v for k, v in payload.items() if k != "op"]
        prelude = _postorder(roots, lambda o: self._local_key(o) is not None)
        stream = io.BytesIO()
        dumper = _Dumper(stream, self)
        try:
            dumper.dump((prelude, payload))
        except RecursionError:
            raise CannotSend("the test inputs are nested too deeply to send") from None
        except (pickle.PicklingError, AttributeError, TypeError) as error:
            raise CannotSend(f"the test inputs cannot be sent to the kernel ({error})") from None
        wanted = {id(o) for o in prelude}
        indices = []
        for key, (index, obj) in dumper.memo.copy().items():
            if key in wanted:
                name = f"{number}.{index}"
                self._locals[name] = obj
                self._local_ids[key] = name
                indices.append(index)
        pickle.dump(sorted(indices), stream, protocol=5)
        return stream.getvalue()

    def request(self, op: str, **fields: Any) -> Any:
        now = time.monotonic()
        timeout = self.request_timeout
        if self.deadline is not None:
            if now >= self.deadline:
                raise RemoteTimeout("the time limit for this notebook ran out")
            timeout = min(timeout, self.deadline - now)
        self._count += 1
        number = self._count
        data = self._pickle(number, {"op": op, **fields})
        request_path = self.folder / f"req-{number}.pkl"
        response_path = self.answers / f"resp-{number}.json"
        _write_new(request_path, data)
        try:
            self._run(AGENT_CALL.format(str(self.folder), number, str(self.answers)), timeout)
            raw = _read_capped(response_path, MAX_RESPONSE_BYTES)
            try:
                response = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError, UnicodeDecodeError) as error:
                raise ProtocolError(f"the kernel's answer is not valid JSON ({error})") from None
        finally:
            for path in (request_path, response_path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return self._result(response)

    def _result(self, response: Any) -> Any:
        if not isinstance(response, dict) or set(response) - {"ok", "error", "updates"}:
            raise ProtocolError("the kernel's answer has an unexpected shape")
        try:
            for update in response.get("updates", []):
                self._apply(update)
            if "error" in response:
                error = response["error"]
                if (
                    not isinstance(error, list)
                    or len(error) != 2
                    or not all(isinstance(e, str) for e in error)
                ):
                    raise ProtocolError("the kernel's error report has an unexpected shape")
                raise remote_error(error[0], error[1][:2000])
            if "ok" not in response:
                raise ProtocolError("the kernel's answer has no result")
            return self._decode(response["ok"])
        except (codec.CodecError, RecursionError) as error:
            raise ProtocolError(f"the kernel's answer is malformed: {error}") from None

    def _decode(self, value: Any) -> Any:
        return codec.decode(value, reference=self._proxy, known=self._known)

    def _known(self, key: str) -> Any:
        if key not in self._locals:
            raise codec.CodecError(f"unknown object id {key!r}")
        return self._locals[key]

    def _proxy(self, body: dict) -> Proxy:
        number = body.get("id")
        if not isinstance(number, int) or isinstance(number, bool):
            raise codec.CodecError("bad reference id")
        proxy = self._proxies.get(number)
        if proxy is None:
            kind = body.get("type")
            name = body.get("name")
            cls = CallableProxy if body.get("callable") is True else Proxy
            proxy = cls.__new__(cls)
            object.__setattr__(proxy, "_session", self)
            object.__setattr__(proxy, "_ref", number)
            object.__setattr__(proxy, "_type", str(kind)[:100] if isinstance(kind, str) else "?")
            if isinstance(name, str):
                object.__setattr__(proxy, "__name__", name[:100])
            self._proxies[number] = proxy
        return proxy

    def _apply(self, update: Any) -> None:
        if not isinstance(update, list) or len(update) != 3 or not isinstance(update[0], str):
            raise codec.CodecError("bad update")
        key, kind, payload = update
        obj = self._known(key)
        value = self._decode(payload)
        if kind == "array" and isinstance(obj, np.ndarray) and isinstance(value, np.ndarray):
            if value.shape == obj.shape and obj.flags.writeable:
                np.copyto(obj, value, casting="unsafe")
        elif kind == "list" and isinstance(obj, list) and isinstance(value, list):
            obj[:] = value
        elif kind == "dict" and isinstance(obj, dict) and isinstance(value, dict):
            obj.clear()
            obj.update(value)
        elif kind == "attrs" and isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(name, str) or (name.startswith("__") and name.endswith("__")):
                    continue
                try:
                    current = getattr(obj, name, _ABSENT)
                    if current is item or _same(current, item):
                        continue
                    setattr(obj, name, item)
                except Exception:  # a read-only attribute: keep ours
                    continue
        else:
            raise codec.CodecError(f"bad update of kind {kind!r}")

    # -- conveniences
    def lookup(self, name: str) -> tuple[bool, Any]:
        """(found, value) of a global name in the kernel's namespace."""
        result = self.request("lookup", name=name)
        if not isinstance(result, dict):
            raise ProtocolError("bad lookup answer")
        if result.get("missing") is True:
            return False, None
        if "value" not in result:
            raise ProtocolError("bad lookup answer")
        return True, result["value"]

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in the kernel (a proxy, or a function pickled by name)."""
        return self.request("call", fn=function, args=args, kwargs=kwargs)


_ABSENT = object()


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or not isinstance(a, (int, float, str, bool, type(None))):
        return False
    return a == b or (isinstance(a, float) and a != a and b != b)


# ---------------------------------------------------------------- proxies


def _remote(proxy: Proxy, op: str, **fields: Any) -> Any:
    session = object.__getattribute__(proxy, "_session")
    return session.request(op, target=proxy, **fields)


def _typed(value: Any, kind: type | tuple, what: str) -> Any:
    if isinstance(value, bool) and kind is int:
        return int(value)
    if not isinstance(value, kind):
        raise TypeError(f"{what} returned {type(value).__name__} in the kernel")
    return value


class Proxy:
    """An object that lives in the learner's kernel."""

    __slots__ = ("__dict__", "_ref", "_session", "_type")
    # Marks remote objects for backprop_course.compare.run_probe.
    __backprop_course_remote__ = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _remote(self, "getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        _remote(self, "setattr", name=name, value=value)

    def __delattr__(self, name: str) -> None:
        _remote(self, "delattr", name=name)

    def __getitem__(self, key: Any) -> Any:
        return _remote(self, "getitem", key=key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _remote(self, "setitem", key=key, value=value)

    def __delitem__(self, key: Any) -> None:
        _remote(self, "delitem", key=key)

    def __contains__(self, value: Any) -> bool:
        return _typed(_remote(self, "contains", value=value), bool, "in")

    def __len__(self) -> int:
        value = _typed(_remote(self, "convert", name="len"), int, "len()")
        if value < 0:
            raise ValueError("len() returned a negative number in the kernel")
        return value

    def __bool__(self) -> bool:
        return _typed(_remote(self, "convert", name="bool"), bool, "bool()")

    def __float__(self) -> float:
        return float(_typed(_remote(self, "convert", name="float"), (float, int), "float()"))

    def __int__(self) -> int:
        return _typed(_remote(self, "convert", name="int"), int, "int()")

    def __index__(self) -> int:
        return _typed(_remote(self, "convert", name="index"), int, "__index__")

    def __complex__(self) -> complex:
        value = _remote(self, "convert", name="complex")
        return complex(_typed(value, (complex, float, int), "complex()"))

    def __hash__(self) -> int:
        return _typed(_remote(self, "convert", name="hash"), int, "hash()")

    def __repr__(self) -> str:
        try:
            text = _remote(self, "convert", name="repr")
        except Exception:  # a broken __repr__ in the learner's class
            text = None
        if not isinstance(text, str):
            return f"<{object.__getattribute__(self, '_type')} object>"
        return text

    def __str__(self) -> str:
        return _typed(_remote(self, "convert", name="str"), str, "str()")

    def __format__(self, spec: str) -> str:
        return _typed(_remote(self, "format", spec=spec), str, "format()")

    def __iter__(self) -> Iterator:
        iterator = _remote(self, "iter")
        if not isinstance(iterator, Proxy):
            raise TypeError("iter() returned plain data in the kernel")
        return _RemoteIterator(iterator)

    def __array__(self, dtype=None, copy=None):
        value = _remote(self, "array", dtype=None if dtype is None else np.dtype(dtype).str)
        if not isinstance(value, np.ndarray):
            raise TypeError(f"could not convert a {object.__getattribute__(self, '_type')} object")
        return value

    def __dir__(self):
        return []


class CallableProxy(Proxy):
    """A remote function, class or callable object."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        session = object.__getattribute__(self, "_session")
        return session.call(self, *args, **kwargs)


class _RemoteIterator:
    def __init__(self, iterator: Proxy):
        self._iterator = iterator
        self._buffer: list = []
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if not self._buffer and not self._done:
            batch = _remote(self._iterator, "next", count=256)
            if not isinstance(batch, dict) or not isinstance(batch.get("items"), list):
                raise TypeError("bad iteration answer")
            self._buffer = batch["items"]
            self._done = batch.get("done") is True
            if not self._buffer and not self._done:
                raise TypeError("bad iteration answer")
        if self._buffer:
            return self._buffer.pop(0)
        raise StopIteration


def _binary(name: str, reflected: bool):
    def method(self, other):
        return _remote(self, "binary", name=name, other=other, reflected=reflected)

    return method


def _unary(name: str):
    def method(self):
        return _remote(self, "unary", name=name)

    return method


for _op in codec.ARITHMETIC:
    _dunder = _op.rstrip("_")  # operator.and_ is __and__
    setattr(Proxy, f"__{_dunder}__", _binary(_op, False))
    setattr(Proxy, f"__r{_dunder}__", _binary(_op, True))
for _op in codec.COMPARISONS:
    setattr(Proxy, f"__{_op}__", _binary(_op, False))
for _op in codec.UNARY:
    setattr(Proxy, f"__{_op}__", _unary(_op))
del _op, _dunder
