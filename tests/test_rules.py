"""backprop_course.rules: an exercise's rules are enforced where the answer runs."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
from torch.autograd import grad as aliased_grad

from backprop_course.autograd import Value
from backprop_course.compare import NotAttempted, Wrong
from backprop_course.optim import warmup_cosine
from backprop_course.rules import (
    BY_HAND,
    OWN_CODE,
    RuleBroken,
    call_under_rules,
    enforce,
    probe_under_rules,
    refuse_reference,
)

X = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def by_hand(x):
    return 2 * x


def with_grad(x):
    x = x.clone().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad((x**2).sum(), x)[0]


def with_alias(x):
    x = x.clone().requires_grad_()
    with torch.enable_grad():
        return aliased_grad((x**2).sum(), x)[0]


def with_backward(x):
    x = x.clone().requires_grad_()
    with torch.enable_grad():
        (x**2).sum().backward()
    return x.grad


def catching(x):
    try:
        return with_grad(x)
    except Exception:
        return 2 * x


def with_functional(x):
    return torch.autograd.functional.jacobian(lambda t: (t**2).sum(), x)


def with_func(x):
    return torch.func.grad(lambda t: (t**2).sum())(x)


def test_honest_answer_runs_under_the_rules():
    """Code that computes the gradient by hand is called normally and its result returned."""
    assert torch.equal(call_under_rules(by_hand, X, autograd=True), 2 * X)


@pytest.mark.parametrize(
    ("answer", "used"),
    [
        (with_grad, "torch.autograd.grad"),
        (with_alias, "torch.autograd.grad"),
        (with_backward, "torch.Tensor.backward"),
        (catching, "torch.autograd.grad"),
        (with_functional, "torch.autograd.functional.jacobian"),
        (with_func, "torch.func.grad"),
    ],
)
def test_autograd_is_refused_naming_the_rule(answer, used):
    """Every route to autograd (aliases and caught errors included) fails, naming rule and call."""
    with pytest.raises(Wrong) as error:
        call_under_rules(answer, X, autograd=True)
    assert BY_HAND in str(error.value) and used in str(error.value)


def test_autograd_state_is_restored_after_the_check():
    """After a refused answer, torch's autograd works again and grad mode is back on."""
    with pytest.raises(Wrong):
        call_under_rules(with_backward, X, autograd=True)
    assert torch.is_grad_enabled()
    assert torch.equal(with_backward(X), 2 * X)


def test_references_are_refused_by_identity_subclass_and_wrapper():
    """The package's reference, a subclass and a functools wrapper are all refused."""

    class Mine(Value):
        pass

    for answer in (warmup_cosine, functools.partial(warmup_cosine), Value, Mine):
        with pytest.raises(Wrong, match="your own code"):
            refuse_reference(answer, ("backprop_course.optim", "backprop_course.autograd"))
    refuse_reference(by_hand, ("backprop_course.optim",))  # an answer of one's own passes


def test_a_reference_is_refused_by_behaviour():
    """A lambda that forwards to the reference is caught by what it runs."""

    def schedule(step):
        return warmup_cosine(step, 100, 10, 1.0)

    with pytest.raises(Wrong) as error:
        call_under_rules(schedule, 5, forbid=("backprop_course.optim",))
    assert OWN_CODE in str(error.value) and "warmup_cosine" in str(error.value)


def build_product(cls):
    """A probe: a small expression built with the learner's class, its value."""
    return (cls(2.0) * cls(3.0) + 1.0).data


def test_probe_under_rules_watches_a_whole_scenario():
    """A class built on the reference engine is caught while a probe drives it."""

    class Mine(Value):
        pass

    with pytest.raises(Wrong, match=r"backprop_course\.autograd"):
        probe_under_rules(build_product, Mine, forbid=("backprop_course.autograd",))


def test_stub_is_not_attempted_under_rules():
    """The release stub stays 'not attempted' when a check applies rules."""
    with pytest.raises(NotAttempted):
        call_under_rules(..., X, autograd=True)


def test_enforce_lets_other_errors_through():
    """An ordinary bug in the answer is reported as that bug, not as a broken rule."""

    def broken(x):
        return np.ones(3) @ np.ones((4, 4))

    with pytest.raises(Wrong) as error:
        call_under_rules(broken, X, autograd=True)
    assert "ValueError" in str(error.value) and BY_HAND not in str(error.value)
    with enforce():
        pass  # nothing forbidden: nothing happens


def test_modules_are_watched_only_once_loaded():
    """A forbidden module nobody loaded is not imported to watch it; a loaded one is watched."""
    from backprop_course import distributed

    assert call_under_rules(lambda: 1, forbid=("backprop_course.no_such_module.f",)) == 1
    with pytest.raises(Wrong, match=r"backprop_course\.distributed\.shard_rows"):
        call_under_rules(
            lambda: distributed.shard_rows(4, 0, 2), forbid=("backprop_course.distributed",)
        )


def test_importing_torch_inside_the_answer_is_refused_when_torch_is_not_loaded():
    """In a process without torch, an answer that imports it to differentiate breaks the rule."""
    import subprocess
    import sys

    code = (
        "from backprop_course.rules import call_under_rules\n"
        "from backprop_course.compare import Wrong\n"
        "def sneaky(x):\n"
        "    import torch\n"
        "    return x\n"
        "try:\n"
        "    call_under_rules(sneaky, 1.0, autograd=True)\n"
        "except Wrong as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "the answer imported torch" in done.stdout, done.stdout + done.stderr


def test_a_forbidden_module_the_answer_imports_itself_is_watched(tmp_path, monkeypatch):
    """A forbidden function in a module nobody had loaded, imported inside the answer (a
    lazy import), is caught by module and name while the answer runs; importing it alone
    is not a use."""
    package = tmp_path / "lazy_reference_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tools.py").write_text("def solve():\n    return 42\n\ndef other():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_reference_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "lazy_reference_pkg.tools", raising=False)

    def answer(name):
        import lazy_reference_pkg.tools as tools

        return getattr(tools, name)()

    forbid = ("lazy_reference_pkg.tools.solve",)
    with (
        pytest.raises(RuleBroken, match=r"used lazy_reference_pkg\.tools\.solve"),
        enforce(forbid=forbid),
    ):
        answer("solve")
    with enforce(forbid=forbid):
        assert answer("other") == 1
