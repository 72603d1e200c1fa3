"""Checks that run a learner's function inside real ``torch.distributed`` processes.

A check calls :func:`ranks`; it runs :func:`probe_ranks` where the answer lives (the
notebook's kernel, or the grader's sandboxed kernel), which forks the ranks with
:func:`backprop_course.ranks.run_ranks`. Each rank runs a module-level ``body(rank,
world_size, answer, case, rules)`` of the lesson's module: it sets up its part of the
problem, calls the learner's function through :func:`under_rules` and returns plain data.
The check computes every expected value itself and compares: no rank is taken at its word.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Mapping

import numpy as np

from backprop_course.compare import NotAttempted, Wrong, answer_name, as_array, is_stub, run_probe
from backprop_course.rules import RuleBroken, enforce

__all__ = ["STUB", "AnswerFailed", "as_dict", "probe_ranks", "ranks", "under_rules"]


def _learner_line(tb) -> str:
    """``cell line N: source`` of the innermost frame outside torch and the package."""
    for frame in reversed(traceback.extract_tb(tb)):
        name = frame.filename
        if "site-packages" in name or "backprop_course" in name or "/torch/" in name:
            continue
        return f" (at {frame.name}, line {frame.lineno}: {(frame.line or '').strip()[:120]})"
    return ""


class AnswerFailed(Exception):
    """The learner's code raised or broke a rule inside a rank; the message says which."""


def under_rules(rules: tuple, function, *args):
    """``function(*args)`` under the exercise's rules, inside one rank."""
    autograd, forbid, rule = rules
    try:
        with enforce(autograd=autograd, forbid=forbid, rule=rule):
            result = function(*args)
    except RuleBroken as error:
        raise AnswerFailed(str(error)) from None
    except Exception as error:
        text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise AnswerFailed(f"{text[:200]}{_learner_line(error.__traceback__)}") from None
    if is_stub(result):  # what release leaves in place of the answer
        raise AnswerFailed(STUB)
    return result


STUB = "not attempted yet"


def probe_ranks(answer, body, world_size: int, case: dict, rules: tuple, warm: tuple = ()) -> dict:
    """Fork ``world_size`` ranks running ``body(rank, world_size, answer, case, rules)``.

    ``rules`` is ``(autograd, forbid, rule)`` for :func:`under_rules`; ``warm`` names
    modules to import before forking. Returns ``{"ranks": [what each rank returned]}``, or
    ``{"error": message}`` when the learner's code raised (or broke a rule) in a rank, or
    ``{"stub": True}`` for the release stub.
    """
    from backprop_course.ranks import RankFailed, run_ranks

    if is_stub(answer):
        return {"stub": True}
    for module in warm:
        # e.g. DDP imports ~800 modules (torch._dynamo) when first built: import them once
        # here, before forking, not in every rank
        importlib.import_module(module)
    try:
        results = run_ranks(body, world_size, (answer, case, rules), timeout=60.0, echo=False)
    except RankFailed as failure:
        message = failure.error
        if message == f"AnswerFailed: {STUB}":
            return {"stub": True}
        if message.startswith("AnswerFailed: "):
            message = message.removeprefix("AnswerFailed: ")
            if "gloo" in message or "Connection reset" in message or "Connection closed" in message:
                message += (
                    "; a collective failed: every rank must call the same collectives, on "
                    "tensors of the same shape, in the same order"
                )
            return {"error": f"on rank {failure.rank}: {message}"}
        return {"error": f"rank {failure.rank} failed: {message}"}
    except (TimeoutError, RuntimeError) as failure:
        return {"error": f"{type(failure).__name__}: {str(failure)[:300]}"}
    except (ValueError, OSError) as failure:  # no fork on this system (Windows), no sockets
        return {"error": f"the check could not start processes here: {failure}"}
    return {"ranks": results}


def ranks(
    answer, body, world_size: int, case: dict, rules: tuple, where: str, warm: tuple = ()
) -> list:
    """What ``body`` returned on each rank (via :func:`probe_ranks`, where the answer lives).

    :class:`NotAttempted` for the stub, :class:`Wrong` saying where for a learner's error.
    """
    result = run_probe(probe_ranks, answer, body, world_size, case, rules, warm)
    if not isinstance(result, Mapping):
        raise Wrong(f"the check could not run {answer_name()} in {world_size} processes")
    if result.get("stub"):
        raise NotAttempted
    if "error" in result:
        raise Wrong(f"{answer_name()} failed {where}, {result['error']}")
    per_rank = result.get("ranks")
    if not isinstance(per_rank, list) or len(per_rank) != world_size:
        raise Wrong(f"the check got no result from every rank {where}")
    return per_rank


def as_dict(value, names, what, where) -> dict[str, np.ndarray]:
    if not isinstance(value, Mapping) or set(value) != set(names):
        raise Wrong(f"the check could not read {what} {where}")
    return {name: as_array(value[name], f"{what} {name}") for name in names}
