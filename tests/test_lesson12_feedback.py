"""Lesson 12: a typical wrong answer to each exercise gets a specific reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback import assert_passes, lesson_feedback_tests


def shard_batch(X, rank, world_size):
    base, extra = divmod(len(X), world_size)
    start = rank * base + min(rank, extra)
    return X[start : start + base + (1 if rank < extra else 0)]


def lose_remainder(X, rank, world_size):
    base = len(X) // world_size
    return X[rank * base : (rank + 1) * base]


def remainder_to_last(X, rank, world_size):
    base = len(X) // world_size
    stop = len(X) if rank == world_size - 1 else (rank + 1) * base
    return X[rank * base : stop]


def overlapping(X, rank, world_size):
    size = math.ceil(len(X) / world_size)
    return X[rank * (size - 1) : rank * (size - 1) + size]


def best_every(n_layers):
    return min(range(1, n_layers + 1), key=lambda k: math.ceil(n_layers / k) + k - 1)


CORRECT_ANSWERS = {
    "12.shard_batch": shard_batch,
    "12.allreduce_mean": lambda grads: [np.mean(grads, axis=0)] * len(grads),
    "12.ddp_equivalence": lambda grads, sizes: (
        sum(n * g for n, g in zip(sizes, grads)) / sum(sizes)
    ),
    "12.ring_allreduce_cost": lambda n_bytes, world: 2 * (world - 1) / world * n_bytes,
    "12.checkpoint_memory": lambda n_layers, every: n_layers // every + every - 1,
    "12.best_segment": best_every,
}

OTHER_CORRECT_ANSWERS = [
    ("12.shard_batch", lambda X, rank, world: np.array_split(X, world)[rank]),
    ("12.best_segment", lambda n: round(math.sqrt(n))),
    ("12.best_segment", lambda n: math.ceil(math.sqrt(n))),
    ("12.allreduce_mean", lambda grads: tuple(sum(grads) / len(grads) for _ in grads)),
]

WRONG_ANSWERS = [
    ("12.shard_batch", lose_remainder, "rows were lost"),
    ("12.shard_batch", remainder_to_last, "the last rank got all"),
    ("12.shard_batch", lambda X, rank, world: X[rank::world], "strided"),
    ("12.shard_batch", overlapping, "went to two ranks"),
    ("12.shard_batch", lambda X, rank, world: X[rank], "shape"),
    ("12.allreduce_mean", lambda grads: [sum(grads)] * len(grads), "summed instead of averaged"),
    ("12.allreduce_mean", lambda grads: list(grads), "nothing was exchanged"),
    ("12.allreduce_mean", lambda grads: [grads[0]] * len(grads), "broadcast"),
    ("12.allreduce_mean", lambda grads: np.mean(grads, axis=0), "a list of"),
    ("12.ddp_equivalence", lambda grads, sizes: np.mean(grads, axis=0), "plain mean"),
    (
        "12.ddp_equivalence",
        lambda grads, sizes: sum(n * g for n, g in zip(sizes, grads)),
        "forgot to divide by the total",
    ),
    ("12.ddp_equivalence", lambda grads, sizes: sum(grads), "without weights"),
    ("12.ring_allreduce_cost", lambda n, w: (w - 1) / w * n, "forgot the factor 2"),
    ("12.ring_allreduce_cost", lambda n, w: 2.0 * n, "instead of world_size - 1"),
    ("12.ring_allreduce_cost", lambda n, w: 2 * (w - 1) * n, "one chunk"),
    ("12.ring_allreduce_cost", lambda n, w: (w - 1) * n, "naive all-to-all"),
    ("12.checkpoint_memory", lambda n, k: n // k, "forgot the segment rebuilt"),
    ("12.checkpoint_memory", lambda n, k: n // k + k, "counted the first input"),
    ("12.checkpoint_memory", lambda n, k: n, "no saving"),
    ("12.best_segment", lambda n: n, "no saving"),
    ("12.best_segment", lambda n: max(1, n // 2), "another segment length"),
    ("12.best_segment", lambda n: math.sqrt(n) + 0.5, "whole number"),
    ("12.best_segment", lambda n: 0, "from 1 to"),
]


def shard_by_the_package(X, rank, world_size):
    from backprop_course import distributed

    return X[distributed.shard_rows(len(X), rank, world_size)]


def ring_bytes_by_the_package(n_bytes, world_size):
    from backprop_course import distributed

    return float(distributed.ring_allreduce_bytes(n_bytes, world_size))


def peak_by_the_checker(n_layers, every):
    from backprop_course.exercises.lesson12 import _cost

    return _cost(n_layers, every)


def best_by_the_checker(n_layers):
    from backprop_course.exercises.lesson12 import _cost

    return min(range(1, n_layers + 1), key=lambda k: _cost(n_layers, k))


SHORTCUTS = [
    ("12.shard_batch", shard_by_the_package, "backprop_course.distributed.shard_rows"),
    ("12.ring_allreduce_cost", ring_bytes_by_the_package, "backprop_course.distributed"),
    ("12.checkpoint_memory", peak_by_the_checker, "backprop_course.exercises.lesson12"),
    ("12.best_segment", best_by_the_checker, "backprop_course.exercises.lesson12"),
]

NONE_RETURNS = [
    ("12.shard_batch", lambda X, rank, world: None, "is a `return` missing?"),
    ("12.allreduce_mean", lambda grads: None, "is a `return` missing?"),
    ("12.ddp_equivalence", lambda grads, sizes: None, "is a `return` missing?"),
    ("12.ring_allreduce_cost", lambda n, w: None, "is a `return` missing?"),
    ("12.checkpoint_memory", lambda n, k: None, "is a `return` missing?"),
    ("12.best_segment", lambda n: None, "is a `return` missing?"),
]

globals().update(
    lesson_feedback_tests(
        "12",
        CORRECT_ANSWERS,
        WRONG_ANSWERS + NONE_RETURNS,
        shortcuts=SHORTCUTS,
        # the package's backprop_course.distributed computes these two
        ruled=("12.shard_batch", "12.ring_allreduce_cost"),
    )
)


@pytest.mark.parametrize(
    ("exercise_id", "answer"),
    OTHER_CORRECT_ANSWERS,
    ids=[f"{w[0]}-{i}" for i, w in enumerate(OTHER_CORRECT_ANSWERS)],
)
def test_other_correct_answers_pass(exercise_id, answer, home):
    """Equivalent formulations (np.array_split, rounding sqrt(n), a tuple) pass too."""
    assert_passes(exercise_id, answer, seeds=20)
