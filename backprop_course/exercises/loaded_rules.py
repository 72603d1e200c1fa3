"""Refuse references that are expensive to import, but only where they are loaded.

Some forbidden references live in modules that take seconds to import (torch's
optimizers, ``backprop_course.gpt``, ``backprop_course.distributed``), and a check
whose exercise is plain numpy should not import them just to watch for them. An
answer can only run code of a module that is loaded, so watching the loaded ones is
enough, provided the test happens where the answer runs: in the learner's kernel
when the grader checks a submission. That is what :func:`probe_call_if_loaded`
does; an import inside the answer itself is caught from the check's next call on
(every check calls the answer several times).
"""

from __future__ import annotations

import sys
from typing import Any

from backprop_course.compare import answer_name, call, is_stub, run_probe
from backprop_course.rules import enforce

__all__ = ["call_refusing_loaded", "probe_call_if_loaded"]


def probe_call_if_loaded(answer: Any, args: tuple, forbid: tuple, rule: str | None) -> Any:
    """``answer(*args)`` with those of ``forbid`` whose module is loaded watched (a probe)."""
    loaded = tuple(name for name in forbid if _module_loaded(name))
    with enforce(forbid=loaded, rule=rule):
        return answer(*args)


def _module_loaded(dotted: str) -> bool:
    parts = dotted.split(".")
    return any(".".join(parts[:cut]) in sys.modules for cut in range(len(parts), 1, -1))


def call_refusing_loaded(answer: Any, *args: Any, forbid: tuple, rule: str | None = None) -> Any:
    """Like ``rules.call_under_rules(answer, *args, forbid=forbid)``, watching loaded modules only.

    A dotted name counts as loaded when its module is (``torch.optim.SGD`` once
    ``torch.optim`` is imported).
    """
    if is_stub(answer) or not callable(answer):
        return call(answer)  # NotAttempted, or Wrong: not a function
    name = answer_name("your function")
    return run_probe(
        probe_call_if_loaded, answer, args, tuple(forbid), rule, shown=(name, args, {})
    )
