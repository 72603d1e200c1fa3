"""Lesson 12, scaling out: sharding a batch, the all-reduce, its cost, activation checkpointing.

Every check passes plain data (numbers, numpy arrays, lists of arrays) in and out,
so it runs the same inside a notebook and from the grader; none starts processes.
"""

from __future__ import annotations

import math

import numpy as np

from backprop_course.compare import Wrong, as_array, assert_close
from backprop_course.exercises import exercise
from backprop_course.rules import call_under_rules

# The package's data-parallel helpers (shard_rows, ring_allreduce_bytes,
# combined_batch_gradient...) and this module's references answer these exercises.
FORBIDDEN = ("backprop_course.distributed", "backprop_course.exercises.lesson12")


def call(answer, *args):
    """The learner's function, with the package's own answers refused."""
    # watched where loaded: backprop_course.distributed imports torch
    return call_under_rules(answer, *args, forbid=FORBIDDEN)


def _as_list(got, count: int, what: str, where: str) -> list:
    if got is None:
        raise Wrong(f"{what} returned None {where}: is a `return` missing?")
    if not isinstance(got, (list, tuple)) or len(got) != count:
        size = f" of length {len(got)}" if isinstance(got, (list, tuple)) else ""
        raise Wrong(
            f"{what} should return a list of {count} arrays (one per worker), got a "
            f"{type(got).__name__}{size} {where}"
        )
    return list(got)


# ---------------------------------------------------------------- 12.shard_batch


def _shard_cases(rng):
    """(batch_size, world_size) pairs; the first always leaves a remainder of 2 or more."""
    world = int(rng.integers(3, 7))
    yield world * int(rng.integers(1, 6)) + int(rng.integers(2, world)), world
    for _ in range(4):
        world = int(rng.integers(1, 7))
        yield int(rng.integers(world, 41)), world


def _diagnose_shards(shards, X, world, where):
    """Name the mistake behind shards that are not the expected contiguous blocks."""
    batch = len(X)
    base, extra = divmod(batch, world)
    sizes = [len(s) for s in shards]
    ids = np.concatenate([s[:, 0] for s in shards])
    if sum(sizes) < batch and all(n == base for n in sizes):
        raise Wrong(
            f"rows were lost {where}: every rank took B // world_size = {base} rows, so "
            f"the last {extra} row(s) are on no worker"
        )
    if len(np.unique(ids)) < len(ids):
        raise Wrong(f"some rows went to two ranks {where}: the shards must not overlap")
    if sizes == [base] * (world - 1) + [base + extra] and extra > 1:
        raise Wrong(
            f"unbalanced {where}: the last rank got all {extra} leftover rows; give one "
            "each to the first ranks, so no worker waits for a slower one"
        )
    strided = [X[r::world] for r in range(world)]
    if all(s.shape == t.shape and np.array_equal(s, t) for s, t in zip(shards, strided)):
        raise Wrong(
            f"the shards are strided (rank r took rows r, r + W, ...) {where}; this "
            "exercise asks for contiguous blocks of rows, in rank order"
        )


@exercise(
    "12.shard_batch",
    title="Split a batch across workers",
    points=2,
    answer="shard_batch",
    hints=(
        "Each rank takes one contiguous block of rows; the blocks, in rank order, are the batch.",
        "With B rows and W workers, every rank gets B // W rows, and the first B % W ranks "
        "one more. divmod(B, W) gives both numbers.",
        "Rank r starts at r * (B // W) + min(r, B % W).",
    ),
)
def _shard_batch(answer, rng):
    for batch, world in _shard_cases(rng):
        # Column 0 numbers the rows, so a shard says which rows it holds.
        X = np.column_stack([np.arange(batch), rng.normal(size=(batch, int(rng.integers(1, 4))))])
        base, extra = divmod(batch, world)
        starts = np.cumsum([0] + [base + (1 if r < extra else 0) for r in range(world)])
        expected = [X[starts[r] : starts[r + 1]] for r in range(world)]
        where = f"for a batch of {batch} rows on world_size={world}"
        shards = []
        for rank in range(world):
            got = as_array(call(answer, X.copy(), rank, world), "shard_batch(X, rank, world_size)")
            if got.ndim != 2 or got.shape[1] != X.shape[1]:
                raise Wrong(
                    f"shard_batch should return rows of X, shape (rows, {X.shape[1]}), got "
                    f"shape {got.shape} for rank {rank} {where}"
                )
            shards.append(got)
        if all(s.shape == e.shape and np.array_equal(s, e) for s, e in zip(shards, expected)):
            continue
        _diagnose_shards(shards, X, world, where)
        for rank, got in enumerate(shards):
            assert_close(
                got,
                expected[rank],
                name=f"the shard of rank {rank}",
                rtol=0,
                atol=0,
                context=where,
            )


# ---------------------------------------------------------------- 12.allreduce_mean


@exercise(
    "12.allreduce_mean",
    title="What DDP leaves on each worker",
    points=1,
    answer="allreduce_mean",
    hints=(
        "After the all-reduce every worker holds the same gradient.",
        "DDP averages: it sums the workers' gradients, then divides by world_size.",
        "Compute the mean of the list once, and return world_size copies of it.",
    ),
)
def _allreduce_mean(answer, rng):
    for _ in range(4):
        world = int(rng.integers(2, 6))
        shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 3))))
        grads = [rng.normal(size=shape) for _ in range(world)]
        mean = np.mean(grads, axis=0)
        where = f"for {world} workers with gradients of shape {shape}"
        got = _as_list(
            call(answer, [g.copy() for g in grads]),
            world,
            "allreduce_mean",
            where,
        )
        # Last rank first: on rank 0 a broadcast of rank 0 and no exchange look alike.
        for rank, value in reversed(list(enumerate(got))):
            assert_close(
                value,
                mean,
                name=f"the gradient left on rank {rank}",
                rtol=1e-9,
                context=where,
                mistakes={
                    "summed instead of averaged: DDP divides the sum by world_size": sum(grads),
                    "each worker kept its own gradient: nothing was exchanged": grads[rank],
                    "every worker got rank 0's gradient: that is a broadcast, not an "
                    "all-reduce": grads[0],
                },
            )


# ---------------------------------------------------------------- 12.ddp_equivalence


@exercise(
    "12.ddp_equivalence",
    title="The whole-batch gradient from shards of unequal size",
    points=2,
    answer="combine_shard_gradients",
    hints=(
        "The whole-batch loss is a mean over all B examples; each shard's gradient is a mean "
        "over its own n_r examples.",
        "n_r times a shard's gradient is that shard's *sum* of per-example gradients.",
        "Return sum_r n_r * g_r / sum_r n_r.",
    ),
)
def _ddp_equivalence(answer, rng):
    for _ in range(4):
        world = int(rng.integers(2, 6))
        sizes = [int(n) for n in rng.integers(1, 20, size=world)]
        while len(set(sizes)) == 1:
            sizes[0] += 1
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        grads = [rng.normal(size=shape) for _ in range(world)]
        weighted = sum(n * g for n, g in zip(sizes, grads))
        where = f"for shard sizes {sizes}"
        got = call(answer, [g.copy() for g in grads], list(sizes))
        assert_close(
            got,
            weighted / sum(sizes),
            name="the combined gradient",
            rtol=1e-9,
            context=where,
            mistakes={
                "a plain mean of the shard gradients: with unequal shards, weight each by "
                "its size": np.mean(grads, axis=0),
                "forgot to divide by the total batch size": weighted,
                "summed the shard gradients without weights": sum(grads),
                "divided by the number of shards instead of the number of examples": weighted
                / world,
            },
        )


# ---------------------------------------------------------------- 12.ring_allreduce_cost


@exercise(
    "12.ring_allreduce_cost",
    title="Bytes each worker sends in a ring all-reduce",
    points=2,
    answer="ring_allreduce_bytes",
    hints=(
        "The buffer is cut into world_size chunks of n_bytes / world_size bytes each.",
        "The reduce-scatter phase takes world_size - 1 steps, each sending one chunk; the "
        "all-gather phase takes as many again.",
        "2 * (world_size - 1) / world_size * n_bytes.",
    ),
)
def _ring_cost(answer, rng):
    worlds = [1, int(rng.integers(3, 9)), int(rng.integers(9, 257)), int(rng.integers(2, 257))]
    for world in worlds:
        n_bytes = float(4 * rng.integers(1_000, 100_000_000))
        expected = 2 * (world - 1) / world * n_bytes
        got = call(answer, n_bytes, world)
        assert_close(
            got,
            expected,
            name="the bytes sent per worker",
            rtol=1e-9,
            context=f"for n_bytes={n_bytes:.0f}, world_size={world}",
            mistakes={
                "forgot the factor 2: the all-gather sends as much as the reduce-scatter": (
                    expected / 2
                ),
                "world_size steps per phase instead of world_size - 1": 2 * n_bytes,
                "each step sends a whole buffer; it sends one chunk of n_bytes / world_size": (
                    2 * (world - 1) * n_bytes
                ),
                "the naive all-to-all, every worker sending its buffer to every other one": (
                    (world - 1) * n_bytes
                ),
            },
        )


# ---------------------------------------------------------------- 12.checkpoint_memory


@exercise(
    "12.checkpoint_memory",
    title="Peak activation memory with checkpointing",
    points=2,
    answer="checkpoint_peak",
    hints=(
        "Two things are alive at the peak: what the forward pass stored, and the segment "
        "being rebuilt during backward.",
        "The forward pass stores one input per segment: n_layers / every of them.",
        "Rebuilding a segment of `every` layers adds the inputs of all its layers but the "
        "first, which is already stored: every - 1 more.",
    ),
)
def _checkpoint_memory(answer, rng):
    cases = [(1, int(rng.integers(2, 9)))]
    cases += [(int(rng.integers(2, 17)), int(rng.integers(2, 17))) for _ in range(5)]
    for every, segments in cases:
        n_layers = every * segments
        got = call(answer, n_layers, every)
        assert_close(
            got,
            segments + every - 1,
            name="the peak number of stored activations",
            rtol=0,
            atol=1e-9,
            context=f"for n_layers={n_layers}, every={every}",
            mistakes={
                "forgot the segment rebuilt during backward": segments,
                "counted the first input of the rebuilt segment twice (it is stored "
                "already)": segments + every,
                "no saving at all: that is the peak without checkpointing": n_layers,
            },
        )


# ---------------------------------------------------------------- 12.best_segment


def _cost(n_layers: int, every: int) -> int:
    return math.ceil(n_layers / every) + every - 1


@exercise(
    "12.best_segment",
    title="The best segment length: sqrt(n) checkpointing",
    points=1,
    answer="best_every",
    hints=(
        "You may simply try every k from 1 to n_layers and keep the cheapest.",
        "The cost n/k + k - 1 has a stored part that falls with k and a rebuilt part that "
        "grows with k; it is smallest where the two balance.",
        "n/k = k at k = sqrt(n): round(sqrt(n_layers)) is optimal.",
    ),
)
def _best_segment(answer, rng):
    for n_layers in [int(rng.integers(20, 50)), int(rng.integers(50, 1000)), 1, 2]:
        got = call(answer, n_layers)
        if got is None:
            raise Wrong("best_every returned None: is a `return` missing?")
        try:
            every = int(got)
            integral = every == float(got)
        except (TypeError, ValueError, OverflowError) as error:
            raise Wrong(f"best_every should return a whole number, got {got!r}") from error
        if not integral or not 1 <= every <= n_layers:
            raise Wrong(
                f"best_every({n_layers}) should be a whole number of layers from 1 to "
                f"{n_layers}, got {got!r}"
            )
        best = min(_cost(n_layers, k) for k in range(1, n_layers + 1))
        cost = _cost(n_layers, every)
        if cost == best:
            continue
        why = ""
        if every == 1:
            why = ": a segment of 1 layer stores every layer's input, no saving"
        elif every == n_layers:
            why = ": one segment of all layers rebuilds every activation at once, no saving"
        raise Wrong(
            f"best_every({n_layers}) = {every} gives a peak of {cost} activations, but "
            f"another segment length gets it down to {best}{why}"
        )
