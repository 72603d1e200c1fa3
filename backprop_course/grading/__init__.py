"""Headless grading of submitted notebooks into a gradebook (``backprop-course grade``).

Python cannot be sandboxed inside one process, so judgement never happens
where learner code runs:

- each submission is graded by its own process (forked from a server that
  imported every exercise check before any submission ran);
- that process runs the notebook in a kernel inside a bubblewrap sandbox
  (:mod:`.sandbox`): its own PID, network, IPC and mount namespaces, another
  uid, nothing of the file system but the Python environment, the package
  (without solutions) and a private tmpfs, caps for the sandbox as a whole,
  and wall-clock limits enforced from outside (see :mod:`.kernel`);
- then it runs every exercise's check itself, with hidden inputs, on remote
  proxies of the learner's answers (:mod:`.remote`); only strict JSON comes
  back from the kernel (:mod:`.codec`).

:func:`grade` does a whole batch: it reads every notebook once, up front
(what is graded is what was there when the batch started), refuses links and
grades one notebook per lesson per learner (the others are ``duplicate``),
runs ``--workers`` submissions at a time with a progress bar, checks every
result against its job (a result that does not fit becomes an ``error`` row
for that notebook, never an exception for the batch), and writes the
gradebook (:mod:`.gradebook`), its metadata and feedback files, holding a
lock on the output folder. The hidden inputs derive from a secret drawn
afresh for each run (never in argv or in any kernel's environment) and
recorded in ``gradebook.meta.json``; passing it back (``--secret-file``)
reproduces a run byte for byte.
"""

# Lazy: a sandboxed kernel imports ``backprop_course.grading.agent`` (and only its
# codec) to answer the grader's requests; importing the batch machinery there
# (nbformat, every exercise check, torch) would cost seconds per graded notebook.
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GradeResult",
    "GradebookLocked",
    "Options",
    "SandboxUnavailable",
    "grade",
    "read_secret",
    "released_notebooks",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("backprop_course.grading.batch"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
