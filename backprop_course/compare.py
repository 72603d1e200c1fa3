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

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "NotAttempted",
    "Wrong",
    "assert_choice",
    "assert_close",
    "call",
    "expect_mapping",
    "expect_tuple",
    "is_stub",
    "run_probe",
]


class NotAttempted(Exception):
    """The answer is still the stub that ``release`` left in its place."""


class Wrong(Exception):
    """The answer is wrong; the message says why."""


def is_stub(value: Any) -> bool:
    """True for the placeholder that release writes for an answer (``...``)."""
    return value is Ellipsis


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
    return repr(value)


def call(function: Any, *args: Any, what: str = "your function", **kwargs: Any) -> Any:
    """Call the learner's ``function``; turn stubs and crashes into feedback.

    Returns what the function returned. Raises :class:`NotAttempted` if it is
    (or returns) the stub, :class:`Wrong` if it is not callable or raises.
    """
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
        raise Wrong(
            f"{what} raised {type(error).__name__}: {error} "
            f"when called as {getattr(function, '__name__', 'f')}({_format_args(args, kwargs)})"
        ) from error
    if is_stub(result):
        raise NotAttempted
    return result


def run_probe(probe: Callable, answer: Any, *args: Any, what: str = "your answer") -> Any:
    """``probe(answer, *args)``, run where the answer lives; returns what the probe returns.

    ``probe`` is a module-level function of the package that takes the learner's
    answer plus plain data (numbers, arrays, tensors, tuples/dicts of them), does what
    needs the answer itself (autograd on the learner's ``Function``, a training step on
    their module...) and returns plain data. In a notebook it simply runs here. When
    the grader checks a submission, ``answer`` is a proxy of an object in the learner's
    kernel, and the probe runs there (imported by name): only its plain result comes
    back. Errors and stubs are reported as by :func:`call`.
    """
    if is_stub(answer):
        raise NotAttempted
    remote = getattr(type(answer), "__backprop_course_remote__", False)
    if remote:
        session = object.__getattribute__(answer, "_session")

        def function(*arguments: Any) -> Any:
            return session.call(probe, *arguments)

        function.__name__ = getattr(probe, "__name__", "probe")
        return call(function, answer, *args, what=what)
    return call(probe, answer, *args, what=what)


def _as_array(value: Any, name: str) -> np.ndarray:
    if is_stub(value):
        raise NotAttempted
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise Wrong(
            f"expected {name} to be a number or an array of numbers, "
            f"got {type(value).__name__}: {_short(value)}"
        ) from error
    return array


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


def assert_close(
    got: Any,
    expected: Any,
    *,
    name: str = "your answer",
    rtol: float = 1e-6,
    atol: float = 1e-9,
    mistakes: Mapping[str, Any] | None = None,
    context: str = "",
) -> None:
    """Raise :class:`Wrong` unless ``got`` matches ``expected`` within tolerances.

    ``mistakes`` maps the name of a common mistake to the value it would give;
    ``context`` (e.g. ``"for x=0.3"``) says which test input was used.
    """
    where = f" {context}" if context else ""
    got_array = _as_array(got, name)
    expected_array = np.asarray(expected, dtype=float)

    if got_array.shape != expected_array.shape:
        message = (
            f"{name} has shape {got_array.shape}, expected shape {expected_array.shape}{where}"
        )
        if got_array.shape == expected_array.shape[::-1] and got_array.ndim == 2:
            message += ": it looks transposed"
        elif got_array.size == 1 and expected_array.size > 1:
            message += ": did you reduce (sum or mean) something that should stay an array?"
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

    if got_array.ndim == 0:
        message = f"{name} is {float(got_array):.6g}, expected {float(expected_array):.6g}{where}"
    else:
        error = np.abs(got_array - expected_array)
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(error), error.shape))
        count = int((~np.isclose(got_array, expected_array, rtol=rtol, atol=atol)).sum())
        message = (
            f"{name} differs from the expected value in {count} of {got_array.size} "
            f"elements{where}; the worst is at index {worst}: got "
            f"{got_array[worst]:.6g}, expected {expected_array[worst]:.6g}"
        )

    ratio = _constant_ratio(got_array, expected_array)
    if ratio is not None and math.isclose(ratio, -1.0, rel_tol=1e-6):
        message += ". Every value has the opposite sign: look for a sign error"
    elif ratio is not None:
        message += f". It is off by a constant factor of {ratio:.6g}"
    raise Wrong(message)


def expect_mapping(value: Any, keys: Sequence[str], *, name: str, advice: str = "") -> Mapping:
    """Return ``value`` if it is a dict holding every one of ``keys``; otherwise say why not.

    Raises :class:`NotAttempted` for the stub, :class:`Wrong` for another type or
    missing keys (``advice`` is appended to that message). Entries are not checked.
    """
    if is_stub(value):
        raise NotAttempted
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
