"""backprop_course.distributed: DDP across processes, and the bytes that backward keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backprop_course import distributed
from backprop_course.distributed import SavedTensorMeter, WorkerError


def test_ddp_gradient_equals_the_combined_batch_gradient():
    """Two gloo workers end with the same gradient: the one of the whole batch in one process."""
    result = distributed.run_ddp(
        2, "gloo", batch_size=8, allreduce_numels=(256,), repeats=1, timeout=60
    )
    assert result.backend == "gloo" and result.shard_sizes == [4, 4]
    assert result.max_difference() < 1e-12
    for name, reference in result.reference_grads.items():
        local = [grads[name] for grads in result.local_grads]
        assert not np.allclose(local[0], local[1])  # each shard alone gives another gradient
        np.testing.assert_allclose((local[0] + local[1]) / 2, reference, atol=1e-12)
        np.testing.assert_array_equal(result.ddp_grads[0][name], result.ddp_grads[1][name])
    assert set(result.allreduce_seconds) == {1024} and result.allreduce_seconds[1024] > 0
    assert set(result.step_seconds) == {"sync", "no_sync"}


def test_a_failing_worker_raises_with_its_traceback():
    """A worker that raises ends the run with WorkerError naming the rank and the cause."""
    with pytest.raises(WorkerError, match=r"rank 1 of 2 failed(.|\n)*failed on purpose"):
        distributed.run_ddp(2, "gloo", allreduce_numels=(), repeats=1, fail_rank=1, timeout=60)


def test_a_run_that_overruns_its_timeout_stops():
    """The timeout bounds the run: TimeoutError, and no worker is left behind."""
    with pytest.raises(TimeoutError, match="timed out"):
        distributed.run_ddp(2, "gloo", allreduce_numels=(), repeats=1, timeout=0.2)


def test_bad_arguments_are_refused_before_starting_processes():
    """Too small a batch or an unknown dtype is a ValueError."""
    with pytest.raises(ValueError, match="no rows"):
        distributed.run_ddp(4, "gloo", batch_size=3)
    with pytest.raises(ValueError, match="dtype"):
        distributed.run_ddp(2, "gloo", dtype="float16")


@pytest.mark.parametrize(("batch", "world"), [(8, 2), (10, 4), (3, 3), (7, 1)])
def test_shard_rows_partition_the_batch_evenly(batch, world):
    """Shards are contiguous, cover every row once and differ in size by at most one."""
    rows = [distributed.shard_rows(batch, r, world) for r in range(world)]
    assert [r.start for r in rows[1:]] == [r.stop for r in rows[:-1]]
    assert rows[0].start == 0 and rows[-1].stop == batch
    sizes = [r.stop - r.start for r in rows]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_ring_allreduce_bytes():
    """2 (n - 1) / n of the buffer per worker; nothing for a single worker."""
    assert distributed.ring_allreduce_bytes(1000, 4) == 1500
    assert distributed.ring_allreduce_bytes(1000, 1) == 0


def test_meter_counts_a_known_graph_exactly():
    """tanh(x @ W) saves x and the output (W is excluded); a tensor saved twice counts once."""
    x = torch.randn(4, 3, requires_grad=True)
    W = torch.randn(3, 5, requires_grad=True)
    with SavedTensorMeter(exclude=[W]) as meter:
        torch.tanh(x @ W).sum()
    assert (meter.bytes, meter.count) == (4 * 3 * 4 + 4 * 5 * 4, 2)
    with SavedTensorMeter() as meter:
        (x * x).sum()
    assert (meter.bytes, meter.count) == (4 * 3 * 4, 1)


def test_checkpointing_keeps_one_activation_per_segment():
    """8 blocks keep 9 activations; checkpointed every 2, the 4 segment inputs and the output."""
    blocks = distributed.make_blocks(8, 16)
    x = torch.randn(4, 16)
    one = x.numel() * 4
    kept = {}
    for every in (None, 2, 4):
        with SavedTensorMeter(exclude=blocks.parameters()) as meter:
            loss = distributed.checkpointed_forward(blocks, x, every).pow(2).mean()
        loss.backward()
        kept[every] = meter.bytes // one
    assert kept == {None: 9, 2: 5, 4: 3}


def test_checkpointing_leaves_the_gradient_unchanged():
    """Recomputing activations in backward gives the same parameter gradients."""
    blocks = distributed.make_blocks(6, 8)
    x = torch.randn(5, 8)
    grads = []
    for every in (None, 3):
        blocks.zero_grad(set_to_none=True)
        distributed.checkpointed_forward(blocks, x, every).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in blocks.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)


def test_make_mlp_is_reproducible_and_leaves_the_global_seed_alone():
    """The same seed gives the same weights; the caller's random stream is untouched."""
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = distributed.make_mlp((3, 4, 1), seed=7)
    b = distributed.make_mlp((3, 4, 1), seed=7)
    assert torch.rand(1) == expected
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q) and p.dtype == torch.float64


def test_timing_restores_the_thread_count():
    """time_forward_backward times on one thread and gives the previous setting back."""
    threads = torch.get_num_threads()
    blocks = distributed.make_blocks(4, 8)
    seconds = distributed.time_forward_backward(blocks, torch.randn(2, 8), every=2, repeats=2)
    assert seconds > 0 and torch.get_num_threads() == threads
