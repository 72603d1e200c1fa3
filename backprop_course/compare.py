"""Compare a learner's answer with the expected one and say precisely what differs.

Exercise checks are built from these helpers. Each raises :class:`Wrong` with a
message a learner can act on (which element, expected vs got, a shape or sign
hint, a named common mistake), or :class:`NotAttempted` when the answer is
still the release stub (``...``).

A *named mistake* is a value that a typical wrong answer would produce: a check
computes it (``{"divided by h instead of 2h": 2 * expected}``) and, when the
learner's answer matches it, the message names the mistake.
"""

from __future__ import annotations

import contextvars
import linecache
import math
import os
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "NotAttempted",
    "Wrong",
    "answer_name",
    "answering",
    "as_array",
    "assert_choice",
    "assert_close",
    "call",
    "call_each",
    "check_gradients",
    "describe_exception",
    "distinct_sizes",
    "expect_mapping",
    "expect_tuple",
    "is_stub",
    "run_probe",
    "signed",
    "unpack",
]


class NotAttempted(Exception):
    """The answer is still the stub that ``release`` left in its place."""


class Wrong(Exception):
    """The answer is wrong; the message says why."""


def is_stub(value: Any) -> bool:
    """True for the placeholder that release writes for an answer (``...``)."""
    return value is Ellipsis


# ------------------------------------------------------------------ the answer's name

_ANSWER_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "backprop_course_answer_name", default=None
)


def answer_name(default: str = "your answer") -> str:
    """The name the answer being checked is bound to (from the registry), e.g. ``"backward"``."""
    return _ANSWER_NAME.get() or default


@contextmanager
def answering(name: str) -> Iterator[None]:
    """While checking, :func:`call` and the other helpers call the answer ``name``."""
    token = _ANSWER_NAME.set(name)
    try:
        yield
    finally:
        _ANSWER_NAME.reset(token)


def _missing_return(name: str) -> Wrong:
    return Wrong(f"{name} is None: is a `return` missing?")


# ------------------------------------------------------------------ the learner's exceptions

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__))
    for m in (os, np, contextvars)
    if getattr(m, "__file__", None)
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
MAX_ERROR_TEXT = 200


def _is_library_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    return (
        path.startswith(_PACKAGE_DIR)
        or "site-packages" in path
        or "dist-packages" in path
        or path.startswith(_LIBRARY_DIRS)
    )


LINE_TAG = "@@learner-line: "  # how the grader's kernel agent passes the line along


def learner_line(error: BaseException) -> str:
    """``"line 3: return W.T @ x"``: the learner's own line where ``error`` was raised, or ``""``.

    The last frame of the traceback that is not in this package, numpy, torch or the
    standard library: a notebook cell or the learner's own module. For an error that
    comes from a grader's kernel, the line the kernel reported.
    """
    if hasattr(error, "remote_type"):
        last = str(error).rsplit("\n", 1)[-1]
        return last[len(LINE_TAG) :][:140] if last.startswith(LINE_TAG) else ""
    found = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith("<frozen") or _is_library_file(frame.filename):
            continue
        text = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        if text:
            found = f"line {frame.lineno}: {text[:120]}"
    return found


def describe_exception(error: BaseException) -> str:
    """``TypeError: unsupported operand...`` in one line, at most about 200 characters."""
    text = _ADDRESS.sub("", str(error)).strip()
    lines = [line for line in text.splitlines() if not line.startswith(LINE_TAG)]
    text = "\n".join(lines)
    first = lines[0] if lines else ""
    if len(first) > MAX_ERROR_TEXT:
        first = first[: MAX_ERROR_TEXT - 3].rstrip() + "..."
    elif len(text.splitlines()) > 1:
        first += " ..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _format_args(args: tuple, kwargs: Mapping[str, Any]) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _short(value: Any) -> str:
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape})"
    if type(value).__name__ == "Tensor" and hasattr(value, "shape"):  # torch, without importing it
        return f"tensor(shape={tuple(value.shape)})"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)} items"
    text = repr(value)
    if _ADDRESS.search(text) or len(text) > 80:
        return f"a {type(value).__name__}"
    return text


def call(function: Any, *args: Any, what: str | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``function``; turn stubs and crashes into feedback.

    Returns what the function returned. Raises :class:`NotAttempted` if it is
    (or returns) the stub, :class:`Wrong` if it is not callable or raises: the
    message names the exception in one line and shows the learner's own line.
    ``what`` names the function in messages (default: the exercise's answer name).
    """
    return _invoke(function, args, kwargs, what=what)


def _invoke(
    function: Any, args: tuple, kwargs: Mapping, *, what: str | None, shown: tuple | None = None
) -> Any:
    """:func:`call`; ``shown`` is ``(name, args, kwargs)`` to describe the call by in messages
    (the learner's function, when ``function`` is a probe that calls it)."""
    what = what or answer_name("your function")
    if is_stub(function):
        raise NotAttempted
    if not callable(function):
        raise Wrong(f"expected {what} to be a function, got {type(function).__name__}")
    try:
        # Overflow in a learner's code is reported by the check (as nan/inf or a named
        # mistake); numpy's warning on top of it would only clutter the feedback.
        with np.errstate(all="ignore"):
            result = function(*args, **kwargs)
    except NotImplementedError as error:
        raise NotAttempted from error
    except Exception as error:  # the learner's code may raise anything
        if type(error).__name__ == "RuleBroken":  # see backprop_course.rules
            rule = "\n".join(x for x in str(error).splitlines() if not x.startswith(LINE_TAG))
            raise Wrong(rule) from None
        name, shown_args, shown_kwargs = shown or (
            getattr(function, "__name__", None) or what,
            args,
            kwargs,
        )
        message = (
            f"{what} raised {describe_exception(error)}\n"
            f"  when called as {name}({_format_args(shown_args, shown_kwargs)})"
        )
        line = learner_line(error)
        if line:
            message += f"\n  at {line}"
        raise Wrong(message) from error
    if is_stub(result):
        raise NotAttempted
    return result


def run_probe(
    probe: Callable, answer: Any, *args: Any, what: str | None = None, shown: tuple | None = None
) -> Any:
    """``probe(answer, *args)``, run where the answer lives; returns what the probe returns.

    ``probe`` is a module-level function of the package that takes the learner's
    answer plus plain data (numbers, arrays, tensors, tuples/dicts of them), does what
    needs the answer itself (autograd on the learner's ``Function``, a training step on
    their module...) and returns plain data. In a notebook it simply runs here. When
    the grader checks a submission, ``answer`` is a proxy of an object in the learner's
    kernel, and the probe runs there (imported by name): only its plain result comes
    back. Errors and stubs are reported as by :func:`call`; ``shown``, ``(name, args,
    kwargs)``, describes the call in those messages instead of the probe's own arguments.
    """
    if is_stub(answer):
        raise NotAttempted
    what = what or answer_name()
    remote = getattr(type(answer), "__backprop_course_remote__", False)
    if remote:
        session = object.__getattribute__(answer, "_session")

        def function(*arguments: Any) -> Any:
            return session.call(probe, *arguments)

        function.__name__ = getattr(probe, "__name__", "probe")
        return _invoke(function, (answer, *args), {}, what=what, shown=shown)
    return _invoke(probe, (answer, *args), {}, what=what, shown=shown)


def call_each(answer: Any, calls: list[tuple]) -> list[Any]:
    """A probe: ``answer(*args)`` for each ``args`` in ``calls``, in one go.

    Returns the results up to the first call that raises (fewer results than calls
    means that call raised: repeat it with :func:`call` to report it). Use it with
    :func:`run_probe` or :func:`backprop_course.rules.probe_under_rules` when a check
    evaluates the learner's function at many points: graded, that is one round trip
    to the learner's kernel instead of one per point.
    """
    results = []
    for args in calls:
        try:
            results.append(answer(*args))
        except Exception:  # the check repeats this call to report the learner's error
            break
    return results


def _float_dtype(value: Any) -> str | None:
    """``"float32"`` (or float16, bfloat16) for a low-precision array or tensor, else None."""
    dtype = getattr(value, "dtype", None)
    name = str(dtype).replace("torch.", "") if dtype is not None else ""
    return name if name in ("float32", "float16", "bfloat16") else None


def as_array(value: Any, name: str | None = None) -> np.ndarray:
    """``value`` (a number, an array, a tensor, a list of numbers) as a float64 array.

    Raises :class:`NotAttempted` for the stub and :class:`Wrong`, saying what came,
    for ``None`` (a missing ``return``) and anything that is not numbers.
    """
    name = name or answer_name()
    if is_stub(value):
        raise NotAttempted
    if value is None:
        raise _missing_return(name)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = (
            value.detach().cpu().float().numpy()
            if _float_dtype(value) == "bfloat16"
            else (value.detach().cpu().numpy())
        )
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise Wrong(
            f"expected {name} to be a number or an array of numbers, "
            f"got {type(value).__name__}: {_short(value)}"
        ) from None
    return array


def unpack(value: Any, names: Sequence[str], what: str | None = None) -> dict[str, Any]:
    """The learner's tuple ``(a, b, ...)`` (in ``names`` order) or dict, as ``{name: item}``.

    Raises :class:`NotAttempted` when it, or any item, is the stub, and
    :class:`Wrong`, naming the items, for another type, length or missing keys.
    """
    what = what or answer_name()
    names = list(names)
    wanted = f"({', '.join(names)})"
    if is_stub(value):
        raise NotAttempted
    if value is None:
        raise Wrong(f"{what} gave None, expected {wanted}: is a `return` missing?")
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise Wrong(f"{what} gave a dict without the key(s) {missing}; expected {wanted}")
        items = {n: value[n] for n in names}
    elif isinstance(value, (tuple, list)):
        if len(value) != len(names):
            raise Wrong(
                f"{what} should give the {len(names)} items {wanted}, got {len(value)} items"
            )
        items = dict(zip(names, value))
    else:
        raise Wrong(f"{what} should give the tuple {wanted}, got {type(value).__name__}")
    if any(is_stub(v) for v in items.values()):
        raise NotAttempted
    return items


def signed(rng: np.random.Generator, low: float, high: float) -> float:
    """A number with ``low <= |x| <= high`` and a random sign."""
    return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))


def distinct_sizes(rng: np.random.Generator, count: int, low: int = 2, high: int = 9) -> list:
    """``count`` different integers in ``[low, high)``: a transposed answer has the wrong shape."""
    return [int(v) for v in rng.choice(np.arange(low, high), size=count, replace=False)]


def _matches(got: np.ndarray, candidate: Any, rtol: float, atol: float) -> bool:
    try:
        candidate = np.asarray(candidate, dtype=float)
    except (TypeError, ValueError):
        return False
    return candidate.shape == got.shape and bool(
        np.allclose(got, candidate, rtol=rtol, atol=atol, equal_nan=False)
    )


def _constant_ratio(got: np.ndarray, expected: np.ndarray) -> float | None:
    """The factor c with got = c * expected, if one fits every element."""
    mask = np.abs(expected) > 1e-12
    if not mask.any() or not np.isfinite(got).all():
        return None
    ratios = got[mask] / expected[mask]
    ratio = float(np.median(ratios))
    if abs(ratio) < 1e-12 or not np.allclose(got, ratio * expected, rtol=1e-6, atol=1e-9):
        return None
    return ratio


def _pair(got: float, expected: float) -> tuple[str, str]:
    """The two numbers with just enough digits to tell them apart (6 to 17)."""
    for digits in range(6, 18):
        a, b = f"{got:.{digits}g}", f"{expected:.{digits}g}"
        if a != b:
            return a, b
    return repr(got), repr(expected)


def _float32_note(dtype: str, rtol: float) -> str:
    return (
        f"your answer is {dtype}, which keeps only about "
        f"{7 if dtype == 'float32' else 3} significant digits, and this check compares to "
        f"a relative tolerance of {rtol:g}: compute in float64 (the inputs are float64; "
        f"don't convert them, or use np.float64 / torch.float64)"
    )


def assert_close(
    got: Any,
    expected: Any,
    *,
    name: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    mistakes: Mapping[str, Any] | None = None,
    context: str = "",
) -> None:
    """Raise :class:`Wrong` unless ``got`` matches ``expected`` within tolerances.

    ``mistakes`` maps the name of a common mistake to the value it would give;
    ``context`` (e.g. ``"for x=0.3"``) says which test input was used. The message
    names a missing ``return`` (``None``), a transposed or reduced array, a float32
    answer that is right only to float32 precision, a flipped sign, and a constant
    factor (for arrays of several elements).
    """
    name = name or answer_name()
    where = f" {context}" if context else ""
    low_precision = _float_dtype(got)
    got_array = as_array(got, name)
    expected_array = np.asarray(expected, dtype=float)

    if got_array.shape != expected_array.shape:
        message = (
            f"{name} has shape {got_array.shape}, expected shape {expected_array.shape}{where}"
        )
        if got_array.shape == expected_array.shape[::-1] and got_array.ndim == 2:
            message += ": it looks transposed"
        elif got_array.size == 1 and expected_array.size > 1:
            message += ": did you reduce (sum or mean) something that should stay an array?"
        elif got_array.size == expected_array.size:
            message += ": the right number of elements in the wrong shape (a missing keepdims?)"
        raise Wrong(message)
    if not np.isfinite(got_array).all():
        bad = np.argwhere(~np.isfinite(got_array))
        at = "" if got_array.ndim == 0 else f" at index {tuple(int(i) for i in bad[0])}"
        raise Wrong(f"{name} contains nan or inf{at}{where}")
    if np.allclose(got_array, expected_array, rtol=rtol, atol=atol):
        return

    for mistake, value in (mistakes or {}).items():
        if _matches(got_array, value, rtol=max(rtol, 1e-6), atol=atol):
            raise Wrong(f"{name} is wrong{where}: it matches a common mistake: {mistake}")

    if low_precision and np.allclose(
        got_array,
        expected_array,
        rtol=max(rtol, 1e-2 if low_precision != "float32" else 1e-5),
        atol=max(atol, 1e-6),
    ):
        raise Wrong(
            f"{name} is right only to {low_precision} precision{where}: "
            + _float32_note(low_precision, rtol)
        )

    if got_array.size == 1:
        g, e = _pair(float(got_array.reshape(())), float(expected_array.reshape(())))
        message = f"{name} is {g}, expected {e}{where}"
        if float(expected_array.reshape(())) != 0 and math.isclose(
            float(got_array.reshape(())), -float(expected_array.reshape(())), rel_tol=1e-6
        ):
            message += ": the sign is flipped"
        raise Wrong(message)

    error = np.abs(got_array - expected_array)
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(error), error.shape))
    count = int((~np.isclose(got_array, expected_array, rtol=rtol, atol=atol)).sum())
    g, e = _pair(float(got_array[worst]), float(expected_array[worst]))
    message = (
        f"{name} differs from the expected value in {count} of {got_array.size} "
        f"elements{where}; the worst is at index {worst}: got {g}, expected {e}"
    )
    ratio = _constant_ratio(got_array, expected_array)
    if ratio is not None and math.isclose(ratio, -1.0, rel_tol=1e-6):
        message += ". Every value has the opposite sign: look for a sign error"
    elif ratio is not None:
        message += f". It is off by a constant factor of {ratio:.6g}"
    raise Wrong(message)


def _index(flat_index: int, shape: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape)) + "]"


def _listing(names: Sequence[str]) -> str:
    names = list(names)
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def check_gradients(
    got: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    mistakes: Mapping[str, Any] | None = None,
    context: str = "",
    shape_advice: Mapping[str, str] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> None:
    """Compare several named gradients; :class:`Wrong` names each wrong one, its error and where.

    ``got`` and ``expected`` map names to arrays or tensors (``got`` as the learner
    gave them: ``None`` and float32 are diagnosed). A mistake maps gradient names to
    the values that mistake gives (names left out take the right value), or is a
    function returning that mapping (called only when the answer is wrong); it is
    reported when every gradient matches it. Example message: ``dK is wrong: max abs
    error 0.31 (relative 0.97) at [0, 1, 3, 2]; dQ and dV are right``.
    """
    where = f" {context}" if context else ""
    low = {n: _float_dtype(got[n]) for n in expected}
    got = {n: as_array(got[n], n) for n in expected}
    want = {n: as_array(e, n) for n, e in expected.items()}
    for name, e in want.items():
        g = got[name]
        if g.shape != e.shape:
            advice = (shape_advice or {}).get(name, "")
            if not advice and g.ndim == 2 and g.shape == e.shape[::-1]:
                advice = "it looks transposed"
            raise Wrong(
                f"{name} has shape {g.shape}, expected {e.shape}{where}"
                + (f": {advice}" if advice else "")
            )
        if not np.isfinite(g).all():
            raise Wrong(f"{name} contains nan or inf{where}")
    wrong = [n for n in want if not np.allclose(got[n], want[n], rtol=rtol, atol=atol)]
    if not wrong:
        return
    parts = []
    for name in wrong:
        error = np.abs(got[name] - want[name])
        worst = int(np.argmax(error))
        scale = float(np.linalg.norm(want[name]))
        relative = float(np.linalg.norm(got[name] - want[name])) / scale if scale else math.inf
        parts.append(
            f"{name} is wrong: max abs error {error.flat[worst]:.3g} "
            f"(relative {relative:.3g}) at {_index(worst, error.shape)}"
        )
    right = [n for n in want if n not in wrong]
    message = "; ".join(parts) + where
    if len(right) > 3:
        message += f"; the other {len(right)} are right"
    elif right:
        message += f"; {_listing(right)} {'is' if len(right) == 1 else 'are'} right"
    for label, values in (mistakes or {}).items():
        if callable(values):  # computed only now that the answer is wrong
            values = values()
        candidate = {n: as_array(values[n], n) if n in values else want[n] for n in want}
        if all(
            candidate[n].shape == got[n].shape
            and np.allclose(got[n], candidate[n], rtol=max(rtol, 1e-6), atol=atol)
            for n in want
        ):
            raise Wrong(f"{message}. It matches a common mistake: {label}")
    low_names = [n for n in wrong if low[n]]
    if low_names and all(
        np.allclose(got[n], want[n], rtol=max(rtol, 1e-5), atol=max(atol, 1e-6)) for n in wrong
    ):
        raise Wrong(f"{message}. " + _float32_note(low[low_names[0]], rtol))
    if len(wrong) == 1:
        name = wrong[0]
        mask = np.abs(want[name]) > 1e-12
        if mask.any() and want[name].size > 1:
            ratio = float(np.median(got[name][mask] / want[name][mask]))
            if abs(ratio) > 1e-12 and np.allclose(got[name], ratio * want[name], rtol=1e-6):
                message += f". {name} is off by a constant factor of {ratio:.4g}"
    raise Wrong(message)


def expect_mapping(value: Any, keys: Sequence[str], *, name: str, advice: str = "") -> Mapping:
    """Return ``value`` if it is a dict holding every one of ``keys``; otherwise say why not.

    Raises :class:`NotAttempted` for the stub, :class:`Wrong` for another type or
    missing keys (``advice`` is appended to that message). Entries are not checked.
    """
    if is_stub(value):
        raise NotAttempted
    if value is None:
        raise _missing_return(name)
    if not isinstance(value, Mapping):
        raise Wrong(
            f"{name} should be a dict with the keys {list(keys)}, got {type(value).__name__}"
        )
    missing = [k for k in keys if k not in value]
    if missing:
        raise Wrong(f"{name} is missing the key(s) {missing}" + (f": {advice}" if advice else ""))
    return value


def expect_tuple(value: Any, count: int, names: str, what: str, where: str = "") -> Sequence:
    """``value`` as a tuple (or list) of ``count`` items; Wrong, naming the items, if not."""
    if is_stub(value):
        raise NotAttempted
    if value is None:
        raise Wrong(f"{what} returned None, expected the tuple ({names}): is a `return` missing?")
    if not isinstance(value, (tuple, list)) or len(value) != count:
        kind = type(value).__name__
        size = f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""
        raise Wrong(
            f"{what} should return the tuple ({names}), got a {kind}{size} {where}".rstrip()
        )
    return value


def assert_choice(
    got: Any,
    expected: str,
    choices: Mapping[str, str],
    *,
    name: str,
    why: Callable[[str], str] | Mapping[str, str] | None = None,
) -> None:
    """Check a multiple-choice answer given as one of the keys of ``choices``.

    ``why`` explains, for a wrong key, what is wrong with that choice.
    """
    if is_stub(got):
        raise NotAttempted
    key = str(got).strip().lower() if isinstance(got, str) else got
    if key not in choices:
        options = ", ".join(repr(k) for k in choices)
        raise Wrong(f"{name} should be one of {options}, got {got!r}")
    if key == expected:
        return
    reason = ""
    if callable(why):
        reason = why(key)
    elif why is not None:
        reason = why.get(key, "")
    message = f"{name}: {key!r} ({choices[key]}) is not right"
    raise Wrong(f"{message}. {reason}" if reason else message)
