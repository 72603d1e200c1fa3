"""An exercise's rules, enforced where the answer runs.

Some exercises forbid a shortcut: "by hand" (no autograd), "your own code"
(not the course's reference implementation). Saying so is not enough; a check
runs the learner's code under :func:`enforce`, which

- tripwires torch's autograd entry points (``Tensor.backward``,
  ``torch.autograd.grad``, ``torch.autograd.functional``, ``torch.func``...) and
  turns grad mode off; where torch is not loaded yet, importing it (or another
  autodiff package) is what is refused, and
- watches, with a profile hook, for any call into the forbidden parts of the
  package (a function, a class's methods, a whole module), so an alias, a
  wrapper or a subclass of a reference is caught by what it does, not only by
  what it is.

A use is recorded even if the learner's code catches the error it raises, and
the check then fails with a message that names the rule and what was used.

In a notebook this all happens in the learner's process. When the grader
checks a submission the answer is a proxy and the same enforcement runs in the
learner's kernel, through :func:`backprop_course.compare.run_probe`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from backprop_course.compare import Wrong, answer_name, call, is_stub, run_probe

__all__ = [
    "BY_HAND",
    "OWN_CODE",
    "RuleBroken",
    "call_under_rules",
    "enforce",
    "probe_under_rules",
    "refuse_reference",
]

BY_HAND = "this exercise asks for the gradient by hand, without autograd"
OWN_CODE = "this exercise asks for your own code, not the course's reference implementation"


class RuleBroken(Exception):
    """The answer used something its exercise forbids (the message names the rule)."""


# ------------------------------------------------------------------ what is forbidden

# torch's ways of computing a gradient for you: (module path, attribute)
_AUTOGRAD_ENTRY_POINTS = (
    ("torch.Tensor", "backward"),
    ("torch.autograd", "backward"),
    ("torch.autograd", "grad"),
    ("torch.autograd.functional", "jacobian"),
    ("torch.autograd.functional", "hessian"),
    ("torch.autograd.functional", "vjp"),
    ("torch.autograd.functional", "jvp"),
    ("torch.autograd.functional", "vhp"),
    ("torch.autograd.functional", "hvp"),
    ("torch.func", "grad"),
    ("torch.func", "grad_and_value"),
    ("torch.func", "vjp"),
    ("torch.func", "jvp"),
    ("torch.func", "jacrev"),
    ("torch.func", "jacfwd"),
    ("torch.func", "hessian"),
    ("torch.func", "linearize"),
)


_AUTOGRAD_NAMES = tuple(f"{module}.{attribute}" for module, attribute in _AUTOGRAD_ENTRY_POINTS)


def _autograd_names() -> tuple[str, ...]:
    """The autodiff code to watch for: torch's entry points and micrograd's engine, if loaded."""
    names = _AUTOGRAD_NAMES if "torch" in sys.modules else ()
    return names + (("micrograd.engine",) if "micrograd.engine" in sys.modules else ())


def _resolve(dotted: str) -> Any:
    """The object a dotted name refers to: a module, or an attribute path inside one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(f"cannot resolve {dotted!r}")


def _code_objects(dotted: str) -> dict[types.CodeType, str]:
    """Every code object that running ``dotted`` (function, class or module) would execute."""
    target = _resolve(dotted)
    found: dict[types.CodeType, str] = {}

    def add_function(function: Any, name: str) -> None:
        function = inspect.unwrap(function) if callable(function) else function
        code = getattr(function, "__code__", None)
        if isinstance(code, types.CodeType):
            found[code] = name

    def add_class(cls: type, name: str) -> None:
        for attribute, value in vars(cls).items():
            label = f"{name}.{attribute}"
            if isinstance(value, (staticmethod, classmethod)):
                add_function(value.__func__, label)
            elif isinstance(value, property):
                for accessor in (value.fget, value.fset, value.fdel):
                    if accessor is not None:
                        add_function(accessor, label)
            elif inspect.isfunction(value):
                add_function(value, label)

    if inspect.ismodule(target):
        for attribute, value in vars(target).items():
            if getattr(value, "__module__", None) != target.__name__:
                continue  # imported into the module, not defined there
            label = f"{target.__name__}.{attribute}"
            if inspect.isclass(value):
                add_class(value, label)
            elif inspect.isfunction(value):
                add_function(value, label)
    elif inspect.isclass(target):
        add_class(target, dotted)
    else:
        add_function(target, dotted)
    return found


def _loaded(forbid: tuple[str, ...]) -> tuple[str, ...]:
    """The forbidden names whose module is loaded.

    Code of a module nobody imported cannot run, so there is nothing to watch, and a
    numpy exercise need not import torch to forbid ``torch.optim``. An answer that imports
    one itself is watched by module name while it runs (see :func:`_pending`).
    """
    kept = []
    for dotted in forbid:
        parts = dotted.split(".")
        prefixes = {".".join(parts[:cut]) for cut in range(2, len(parts) + 1)} | {dotted}
        if any(prefix in sys.modules for prefix in prefixes):
            kept.append(dotted)
    return tuple(kept)


@functools.lru_cache(maxsize=64)
def _forbidden_codes(forbid: tuple[str, ...]) -> dict[types.CodeType, str]:
    codes: dict[types.CodeType, str] = {}
    for dotted in forbid:
        try:
            codes.update(_code_objects(dotted))
        except (ImportError, AttributeError):
            if not dotted.startswith("torch."):  # an optional torch entry point may be missing
                raise
    return codes


# ------------------------------------------------------------------ enforcement


class _Watch:
    """What the answer used that it must not (first use of each, in order)."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def hit(self, name: str) -> None:
        if name not in self.used:
            self.used.append(name)


def _tripwire(name: str, watch: _Watch, rule: str) -> Callable:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        watch.hit(name)
        raise RuleBroken(f"{rule}; the answer called {name}")

    forbidden.__name__ = name.rsplit(".", 1)[-1]
    return forbidden


# Automatic differentiation libraries an answer might import to avoid the work.
_AUTODIFF_PACKAGES = ("torch", "micrograd", "jax", "autograd")


class _BlockImports(importlib.abc.MetaPathFinder):
    """Refuses to import the autodiff packages that are not imported yet."""

    def __init__(self, packages: tuple[str, ...], watch: _Watch, rule: str) -> None:
        self.packages, self.watch, self.rule = packages, watch, rule

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = fullname.split(".", 1)[0]
        if top in self.packages:
            self.watch.hit(f"import {top}")
            raise RuleBroken(f"{self.rule}; the answer imported {top}")
        return None


@contextmanager
def _no_autograd(watch: _Watch, rule: str) -> Iterator[None]:
    """Autograd tripwired when torch is loaded; loading an autodiff package refused otherwise.

    A lesson that never imported torch does not pay for importing it (seconds in every
    grader kernel): an answer there could only use autograd by importing it, and that
    import is what gets refused.
    """
    blocked = tuple(p for p in _AUTODIFF_PACKAGES if p not in sys.modules)
    finder = _BlockImports(blocked, watch, rule)
    sys.meta_path.insert(0, finder)
    try:
        if "torch" in sys.modules:
            with _torch_tripwires(watch, rule):
                yield
        else:
            yield
    finally:
        sys.meta_path.remove(finder)


@contextmanager
def _torch_tripwires(watch: _Watch, rule: str) -> Iterator[None]:
    import torch

    with ExitStack() as stack:
        for module_path, attribute in _AUTOGRAD_ENTRY_POINTS:
            try:
                owner = _resolve(module_path)
                original = getattr(owner, attribute)
            except (ImportError, AttributeError):
                continue
            setattr(owner, attribute, _tripwire(f"{module_path}.{attribute}", watch, rule))
            stack.callback(setattr, owner, attribute, original)
        stack.enter_context(torch.no_grad())
        yield


def _pending(forbid: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """For forbidden names whose module is not loaded yet: module -> [(qualname, name)].

    ``"a.b.c"`` may be the module ``a.b.c`` (any function in it: qualname ``""``), or the
    function or class ``c`` of module ``a.b``; both are listed, and whichever gets
    imported during the answer's call is watched by module and qualified name.
    """
    pending: dict[str, list[tuple[str, str]]] = {}
    for dotted in forbid:
        parts = dotted.split(".")
        for cut in range(2, len(parts) + 1):
            module, qualname = ".".join(parts[:cut]), ".".join(parts[cut:])
            pending.setdefault(module, []).append((qualname, dotted))
    return pending


@contextmanager
def _watch_calls(
    codes: dict[types.CodeType, str],
    watch: _Watch,
    pending: dict[str, list[tuple[str, str]]] | None = None,
) -> Iterator[None]:
    """Note every call of forbidden code: known code objects, and functions of forbidden
    modules that the answer itself imports while it runs (``pending``)."""
    if not codes and not pending:
        yield
        return

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            name = codes.get(code)
            if name is None and pending:
                targets = pending.get(frame.f_globals.get("__name__", ""))
                qualname = getattr(code, "co_qualname", code.co_name)
                if targets and qualname != "<module>":  # running an import is not a use
                    for prefix, dotted in targets:
                        if not prefix or qualname == prefix or qualname.startswith(prefix + "."):
                            name = dotted
                            break
            if name is not None:
                watch.hit(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


@contextmanager
def enforce(
    *, autograd: bool = False, forbid: Iterable[str] = (), rule: str | None = None
) -> Iterator[None]:
    """Run the block under an exercise's rules; :class:`RuleBroken` at the end if one was broken.

    ``autograd=True`` forbids torch's autograd (and runs the block under
    ``torch.no_grad()``); ``forbid`` names package functions, classes or modules
    (``"backprop_course.optim.warmup_cosine"``, ``"backprop_course.autograd"``) whose
    code must not run. ``rule`` is the sentence the learner sees.
    """
    rule = rule or (BY_HAND if autograd else OWN_CODE)
    watch = _Watch()
    # autograd's entry points are watched by their code too: an alias bound before the
    # check (``from torch.autograd import grad``) escapes the tripwire, not the watch.
    loaded = _loaded(tuple(forbid))
    names = loaded + (_autograd_names() if autograd else ())
    codes = _forbidden_codes(names)
    # a forbidden module the answer imports itself (a lazy import inside it) is watched too
    pending = _pending(tuple(name for name in forbid if name not in loaded))
    with ExitStack() as stack:
        if autograd:
            stack.enter_context(_no_autograd(watch, rule))
        stack.enter_context(_watch_calls(codes, watch, pending))
        try:
            yield
        except RuleBroken:
            raise
        except Exception:
            if watch.used:  # the learner's code failed because it hit a tripwire
                raise RuleBroken(_broken(rule, watch)) from None
            raise
    if watch.used:
        raise RuleBroken(_broken(rule, watch))


def _broken(rule: str, watch: _Watch) -> str:
    return f"{rule}; the answer used {', '.join(watch.used[:3])}"


# ------------------------------------------------------------------ probes (run by the answer)


def probe_call(answer: Any, args: tuple, kwargs: dict, autograd: bool, forbid: tuple, rule):
    """``answer(*args, **kwargs)`` under the rules (a probe: it runs where the answer lives)."""
    with enforce(autograd=autograd, forbid=forbid, rule=rule):
        return answer(*args, **kwargs)


def probe_ruled(answer: Any, probe: Callable, args: tuple, autograd: bool, forbid: tuple, rule):
    """``probe(answer, *args)`` under the rules (itself a probe)."""
    with enforce(autograd=autograd, forbid=forbid, rule=rule):
        return probe(answer, *args)


def probe_identity(answer: Any, forbid: tuple) -> str | None:
    """The forbidden reference that ``answer`` is, subclasses or wraps; ``None`` if none."""
    references = {}
    for dotted in _loaded(tuple(forbid)):  # an answer can only be what is loaded
        target = _resolve(dotted)
        if inspect.ismodule(target):
            for attribute, value in vars(target).items():
                if getattr(value, "__module__", None) == target.__name__ and callable(value):
                    references[f"{dotted}.{attribute}"] = value
        else:
            references[dotted] = target
    seen = 0
    candidate = answer
    while candidate is not None and seen < 20:
        seen += 1
        for name, reference in references.items():
            if candidate is reference:
                return name
            both_classes = inspect.isclass(candidate) and inspect.isclass(reference)
            if both_classes and issubclass(candidate, reference):
                return name
            code = getattr(candidate, "__code__", None)
            if code is not None and code is getattr(reference, "__code__", None):
                return name
        if isinstance(candidate, functools.partial):
            candidate = candidate.func
        elif inspect.ismethod(candidate):
            candidate = candidate.__func__
        else:
            candidate = getattr(candidate, "__wrapped__", None)
    return None


# ------------------------------------------------------------------ what checks call


def _rule(rule: str | None, autograd: bool) -> str:
    return rule or (BY_HAND if autograd else OWN_CODE)


def call_under_rules(
    answer: Any,
    *args: Any,
    autograd: bool = False,
    forbid: Iterable[str] = (),
    rule: str | None = None,
    what: str | None = None,
    **kwargs: Any,
) -> Any:
    """``call(answer, *args, **kwargs)``, with the rules enforced around the answer.

    Raises :class:`~backprop_course.compare.Wrong` naming the rule when the answer
    uses what ``autograd``/``forbid`` forbid (see :func:`enforce`), and as
    :func:`~backprop_course.compare.call` does for crashes and stubs.
    """
    if is_stub(answer):
        return call(answer)  # NotAttempted
    what = what or answer_name("your function")
    if not callable(answer):
        return call(answer, what=what)  # Wrong: not a function
    return run_probe(
        probe_call,
        answer,
        args,
        kwargs,
        autograd,
        tuple(forbid),
        _rule(rule, autograd),
        what=what,
        shown=(getattr(answer, "__name__", None) or what, args, kwargs),
    )


def probe_under_rules(
    probe: Callable,
    answer: Any,
    *args: Any,
    autograd: bool = False,
    forbid: Iterable[str] = (),
    rule: str | None = None,
    what: str | None = None,
) -> Any:
    """``run_probe(probe, answer, *args)`` with the whole probe under the rules."""
    return run_probe(
        probe_ruled,
        answer,
        probe,
        args,
        autograd,
        tuple(forbid),
        _rule(rule, autograd),
        what=what,
        shown=(getattr(answer, "__name__", None) or what or answer_name(), args, {}),
    )


def refuse_reference(
    answer: Any, forbid: Iterable[str], rule: str | None = None, what: str | None = None
) -> None:
    """:class:`Wrong` if ``answer`` is, subclasses or wraps one of the forbidden references."""
    if is_stub(answer):
        return
    name = run_probe(probe_identity, answer, tuple(forbid), what=what)
    if name:
        raise Wrong(f"{rule or OWN_CODE}; the answer is {name} (or built on it)")
