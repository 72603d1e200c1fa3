"""Lesson 14's package code: the memory and compute formulas, and running real ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from backprop_course import scale
from backprop_course.distributed import SavedTensorMeter
from backprop_course.gpt import GPT, GPTConfig
from backprop_course.ranks import RankFailed, run_ranks


def test_state_bytes_counts_sixteen_bytes_per_parameter_for_adam():
    """fp32 Adam: 4 bytes of weights, 4 of gradients, 8 of moments per parameter."""
    got = scale.state_bytes(1000, "adam")
    assert got == {"weights": 4000.0, "gradients": 4000.0, "optimizer": 8000.0}
    assert scale.state_bytes(10, "sgd")["optimizer"] == 0
    with pytest.raises(ValueError, match="optimizer"):
        scale.state_bytes(10, "lion")


def test_gpt_param_count_matches_the_lesson_11_model():
    """The closed form counts exactly the parameters of lesson 11's GPT."""
    config = GPTConfig(vocab_size=65, block_size=24, n_layer=3, n_head=3, n_embd=48)
    model = GPT(config)
    assert scale.gpt_param_count(65, 24, 3, 48) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("L", "C", "H", "T", "B"), [(1, 32, 2, 16, 4), (3, 48, 3, 24, 3)])
def test_gpt_activation_bytes_equals_what_autograd_saves(L, C, H, T, B):
    """The activation formula equals the saved-tensor measurement, byte for byte."""
    config = GPTConfig(
        vocab_size=65, block_size=T, n_layer=L, n_head=H, n_embd=C, fused_attention=False
    )
    torch.manual_seed(0)
    model = GPT(config)
    idx, targets = torch.randint(0, 65, (B, T)), torch.randint(0, 65, (B, T))
    with SavedTensorMeter(exclude=list(model.parameters())) as meter:
        model(idx, targets)
    assert meter.bytes == scale.gpt_activation_bytes(B, T, L, C, H, 65)


def test_layer_activation_bytes_is_the_main_part_of_the_exact_count():
    """One layer's estimate: the exact per-block count without its small per-token terms."""
    B, T, L, C, H, V = 3, 24, 2, 48, 3, 65
    exact_block = scale.gpt_activation_bytes(B, T, L, C, H, V) - scale.gpt_activation_bytes(
        B, T, L - 1, C, H, V
    )
    small = 4 * (2 * B * H * T + 4 * B * T) + T * T
    assert scale.layer_activation_bytes(T, B, C, H, bytes_per_value=4) == exact_block - small
    fused = scale.layer_activation_bytes(T, B, C, H, fused=True)
    assert scale.layer_activation_bytes(T, B, C, H) - fused == 2 * 3 * H * T * T * B


def test_train_time_is_six_n_d_over_cluster_throughput():
    """6 N D FLOPs, divided by GPUs x peak x MFU."""
    assert scale.train_flops(1e9, 1e12) == 6e21
    assert scale.train_seconds(1e9, 1e12, 100, 1e15, 0.5) == pytest.approx(6e21 / 5e16)


def test_model_sizes_have_active_parameters_no_larger_than_total():
    """The size table: a mixture of experts activates a part of its parameters per token."""
    for size in scale.MODEL_SIZES:
        assert 0 < size.n_active <= size.n_params
    assert any(size.n_active < size.n_params for size in scale.MODEL_SIZES)


def _sum_of_ranks(rank, world_size, offset):
    t = torch.tensor([float(rank + offset)])
    dist.all_reduce(t)
    print("hello")
    return t.item()


def _fails_on_rank_1(rank, world_size):
    if rank == 1:
        raise ValueError("rank one says no")
    t = torch.zeros(1)
    dist.all_reduce(t)  # rank 0 waits here for a peer that is gone
    return 0


def test_run_ranks_runs_a_real_all_reduce_on_every_rank(capsys):
    """Each forked rank joins one gloo group; all_reduce sums over them; prints come back."""
    assert run_ranks(_sum_of_ranks, 3, (1,)) == [6.0, 6.0, 6.0]
    assert "[rank 2] hello" in capsys.readouterr().out


def test_run_ranks_reports_the_failing_rank_and_ends_the_others():
    """An exception in one rank surfaces with its rank and message; nothing hangs."""
    with pytest.raises(RankFailed, match="rank 1 of 2") as failure:
        run_ranks(_fails_on_rank_1, 2, timeout=60)
    assert failure.value.rank == 1
    assert failure.value.error == "ValueError: rank one says no"
