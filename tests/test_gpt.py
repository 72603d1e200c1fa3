"""The char GPT package: config, data, model, optimizer, training, meter, health, sampling."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from backprop_course.cli import main
from backprop_course.device import torch_threads
from backprop_course.gpt import (
    GPT,
    CharTokenizer,
    GPTConfig,
    HealthMonitor,
    NonFiniteError,
    TextSplits,
    ThroughputMeter,
    TimeBudget,
    TrainConfig,
    flops_per_token,
    get_batch,
    load_shakespeare,
    load_text,
    peak_flops,
    preset,
    resolve_device,
    sample,
    train,
)
from backprop_course.gpt.data import val_windows
from backprop_course.gpt.health import first_nonfinite_module
from conftest import ROOT

TINY = GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16)

# Tests that need a CUDA GPU: `pytest -m gpu` selects them (benchmarks/gpu/run.sh does).
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_train(**changes) -> TrainConfig:
    _, train_config = preset("test")
    return dataclasses.replace(train_config, **changes)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest, and steadiest on a busy machine, on one thread."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: GPTConfig(n_embd=100, n_head=3), "n_embd"),
        (lambda: GPTConfig(n_layer=0), "n_layer"),
        (lambda: GPTConfig(dropout=1.0), "dropout"),
        (lambda: GPTConfig(block_size=2.5), "block_size"),
        (lambda: TrainConfig(precision="fp8"), "precision"),
        (lambda: TrainConfig(max_iters=10, warmup_iters=20), "warmup_iters"),
        (lambda: TrainConfig(batch_size=0), "batch_size"),
        (lambda: TrainConfig(min_lr=1.0, learning_rate=1e-3), "min_lr"),
        (lambda: TrainConfig(device="tpu"), "device"),
    ],
)
def test_bad_config_names_the_field(make, field):
    """A config that cannot work fails when made, naming the field."""
    with pytest.raises(ValueError, match=field):
        make()


def test_block_size_longer_than_validation_text_fails_before_training():
    """A context longer than the validation text fails before any training step."""
    too_long = GPTConfig(block_size=len(load_shakespeare().val) + 10, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(ValueError, match=r"block_size=\d+ is too long.*validation split"):
        train(too_long, tiny_train(), progress=False)


def test_presets_are_fresh_copies():
    """preset() returns copies (changing one leaves the table alone); an unknown name is refused."""
    _, train_config = preset("cpu")
    train_config.max_iters = 1
    assert preset("cpu")[1].max_iters != 1
    with pytest.raises(ValueError, match="unknown preset"):
        preset("tpu")


def test_asking_for_cuda_without_a_gpu_names_the_device_found():
    """Asking for CUDA without a GPU raises, naming the device that is there."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"'cuda' was asked for.*found is '(cpu|mps)'"):
        resolve_device("cuda")
    assert resolve_device(None).type in ("cpu", "mps")


# ---------------------------------------------------------------- data


def test_corpus_split_and_vocabulary_follow_nanogpt():
    """The bundled text, its 65 characters and the 90/10 split match nanoGPT's shakespeare-char."""
    text = load_text()
    splits = load_shakespeare()
    assert len(text) == 1_115_394
    assert splits.tokenizer.vocab_size == 65
    assert (len(splits.train), len(splits.val)) == (1_003_854, 111_540)
    assert splits.tokenizer.decode(splits.val[:20]) == text[1_003_854 : 1_003_854 + 20]


def test_tokenizer_round_trip_and_unknown_character():
    """encode/decode round-trip; a character outside the vocabulary is named."""
    tokenizer = CharTokenizer("hello world")
    assert tokenizer.decode(tokenizer.encode("low")) == "low"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        tokenizer.encode("z")


def test_get_batch_shapes_and_targets_shifted_by_one():
    """Batches are (B, T) windows, targets shifted by one, repeatable by seed."""
    data = torch.arange(1000)
    generator = torch.Generator().manual_seed(0)
    x, y = get_batch(data, 8, 32, generator)
    assert x.shape == y.shape == (8, 32)
    assert torch.equal(y, x + 1)  # data[i] = i: the target is the next position
    again = get_batch(data, 8, 32, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x)


def test_val_windows_cover_the_text_once():
    """Validation windows are consecutive and cover the text once."""
    data = torch.arange(101)
    x, y = val_windows(data, 10)
    assert x.shape == (10, 10) and torch.equal(x.flatten(), data[:100])
    assert torch.equal(y, x + 1)


# ---------------------------------------------------------------- model


def test_forward_shapes_and_initial_loss_near_uniform():
    """Logits are (B, T, vocab), the untrained loss is near ln 65, too long an input fails."""
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(65, (3, 16))
    logits, loss = model(idx, torch.randint(65, (3, 16)))
    assert logits.shape == (3, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.1
    assert model(idx)[1] is None
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_fused_and_explicit_attention_agree():
    """Fused and explicit attention give the same outputs and gradients."""
    torch.manual_seed(0)
    fused = GPT(TINY)
    explicit = GPT(dataclasses.replace(TINY, fused_attention=False))
    explicit.load_state_dict(fused.state_dict())
    idx, targets = torch.randint(65, (2, 16)), torch.randint(65, (2, 16))
    for model in (fused, explicit):
        model(idx, targets)[1].backward()
    torch.testing.assert_close(fused(idx)[0], explicit(idx)[0], atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(fused.named_parameters(), explicit.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_optimizer_decays_matrices_only():
    """AdamW decays the >= 2-D tensors only; the tied output layer is counted once."""
    model = GPT(TINY)
    optimizer = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert model.lm_head.weight is model.wte.weight  # tied: counted once
    assert model.num_params() == model.num_params(non_embedding=False) - 16 * 16


def test_training_steps_decrease_the_loss_on_a_repeated_batch():
    """A few AdamW steps on one batch lower its loss."""
    torch.manual_seed(0)
    model = GPT(TINY)
    optimizer = model.configure_optimizer(0.0, 3e-3, (0.9, 0.99), "cpu")
    x, y = get_batch(load_shakespeare().train, 4, 16, torch.Generator().manual_seed(1))
    losses = []
    for _ in range(5):
        _, loss = model(x, y)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] - 0.1


# ---------------------------------------------------------------- training


def test_train_test_preset_learns_and_reports():
    """The test preset learns, reports its figures and schedule, and keeps its pinned loss."""
    model_config, train_config = preset("test")
    train_config.eval_interval = 20
    result = train(model_config, train_config, progress=False)
    assert result.device == "cpu" and result.mfu is None
    assert result.eval_steps == [19] and result.eval_losses[0] < math.log(65)
    assert len(result.losses) == len(result.lrs) == train_config.max_iters
    assert result.val_loss < math.log(65) - 0.5
    # Pinned from the run before gpt.train was restructured (3.144254779815674 on the
    # CPU): a change of the step's order, the schedule or the batches moves it far more.
    assert result.val_loss == pytest.approx(3.1442548, abs=2e-4)
    assert result.tokens == train_config.max_iters * train_config.batch_size * 32
    assert result.tokens_per_s > 0 and result.seconds > 0
    # warmup then cosine down to min_lr
    assert result.lrs[0] == pytest.approx(train_config.learning_rate / train_config.warmup_iters)
    assert max(result.lrs) == pytest.approx(train_config.learning_rate)
    assert result.lrs[-1] < 2 * train_config.min_lr
    assert len(result.health.history) == train_config.max_iters
    steps, norms = result.health.series("grad_norms")
    assert steps[:2] == [0, 1] and set(norms) == set(result.health.layer_names)
    text = sample(result.model, result.tokenizer, "ROMEO:", 20, seed=0)
    assert text.startswith("ROMEO:") and len(text) == 26


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_path_trains(precision):
    """The GPU code path (autocast; fp16 with a gradient scaler) runs on the CPU too."""
    result = train(TINY, tiny_train(max_iters=6, precision=precision), progress=False)
    assert math.isfinite(result.val_loss) and result.precision == precision


def test_callback_sees_progress_and_can_stop():
    """The callback sees each log interval and stops the run by returning True."""
    seen = []

    def callback(info):
        seen.append((info["step"], info["loss"], info["lr"]))
        return info["step"] >= 9

    result = train(TINY, tiny_train(), progress=False, callback=callback)
    assert [s for s, _, _ in seen] == [4, 9] and result.stopped_early
    assert len(result.steps) == 10


class FakeClock:
    """A clock that moves on by ``tick`` seconds each time it is read: training looks
    slow or fast at will, whatever the machine's real speed."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_stops_within_ten_percent_and_ends_the_schedule():
    """A run slower than planned stops inside max_seconds (within 10%), its cosine at min_lr."""
    config = tiny_train(max_iters=2000, max_seconds=1.0, val_windows=50, monitor_interval=50)
    result = train(TINY, config, progress=False, clock=FakeClock(0.008))
    assert result.out_of_time and not result.stopped_early
    assert 20 < len(result.steps) < config.max_iters
    assert 0.9 * config.max_seconds <= result.seconds <= config.max_seconds
    assert len(result.losses) == len(result.steps)  # the last partial interval is logged
    span = config.learning_rate - config.min_lr
    assert result.lrs[-1] < config.min_lr + 0.05 * span  # the cosine ended with the time
    assert max(result.lrs) == pytest.approx(config.learning_rate, rel=0.05)  # warmup then peak


def test_time_budget_that_is_not_reached_changes_nothing():
    """A budget the run fits into gives the same run, bit for bit, as no budget."""
    plain = train(TINY, tiny_train(max_iters=12), progress=False)
    budget = train(TINY, tiny_train(max_iters=12, max_seconds=1e6), progress=False)
    assert not budget.out_of_time
    assert budget.lrs == plain.lrs and budget.losses == plain.losses
    assert budget.val_loss == plain.val_loss


def test_time_budget_schedule_follows_the_nearer_limit():
    """The schedule reads the step, or the share of the time spent when that is further."""
    budget = TimeBudget(max_iters=100, max_seconds=10.0, warmup_iters=10)
    assert budget.schedule_step(5, elapsed=9.0) == 5  # warmup always runs on steps
    assert budget.schedule_step(50, elapsed=2.0) == 50  # ahead of time: steps rule
    assert budget.schedule_step(20, elapsed=5.0) == 50  # behind: half the time, half the cosine
    assert budget.schedule_step(20, elapsed=20.0) == 99
    assert not budget.out_of_time(steps_done=10, elapsed=8.9)
    assert budget.out_of_time(steps_done=10, elapsed=9.5)  # one more step (~0.95 s) overruns
    assert budget.planned_steps(steps_done=10, elapsed=4.0) == 25
    # Two steps' worth kept for the final validation: at 0.79 s a step, 1.58 s.
    reserving = TimeBudget(max_iters=100, max_seconds=10.0, warmup_iters=10, reserve_steps=2)
    assert reserving.out_of_time(steps_done=10, elapsed=7.9)
    assert not budget.out_of_time(steps_done=10, elapsed=7.9)
    assert reserving.planned_steps(steps_done=10, elapsed=4.0) == 23  # 10 * (10 - 0.8) / 4
    assert TimeBudget(100).schedule_step(20, elapsed=1e9) == 20
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(max_seconds=0)


# ---------------------------------------------------------------- health


def test_nan_in_a_weight_stops_training_naming_step_and_layer():
    """A NaN planted in a weight stops training, naming the step and that weight."""

    def poison(info):
        if info["step"] == 4:
            with torch.no_grad():
                dict(info["monitor"].named)["blocks.1.mlp.c_fc.weight"][0, 0] = float("nan")

    with pytest.raises(NonFiniteError, match=r"step 5.*'blocks\.1\.mlp\.c_fc\.weight'") as caught:
        train(TINY, tiny_train(), progress=False, callback=poison)
    assert caught.value.step == 5 and caught.value.layer == "blocks.1.mlp.c_fc.weight"


def test_nan_activation_is_traced_to_the_first_module():
    """A non-finite loss is traced to the first module whose output went NaN/inf."""
    torch.manual_seed(0)
    model = GPT(TINY)
    model.blocks[0].attn.c_proj.register_forward_hook(lambda m, i, out: out * float("inf"))
    x = torch.randint(65, (2, 16))
    assert first_nonfinite_module(model, lambda: model(x)) == "blocks.0.attn.c_proj"
    monitor = HealthMonitor(model)
    loss = model(x, x)[1].item()
    with pytest.raises(NonFiniteError, match=r"step 7.*'blocks\.0\.attn\.c_proj'"):
        monitor.check_loss(7, loss, lambda: model(x, x))


def test_nan_gradient_names_the_layer_nearest_the_output():
    """A NaN gradient names the layer nearest the output; fp16 mode records a skip instead."""
    torch.manual_seed(0)
    model = GPT(TINY)
    model.blocks[1].attn.c_attn.weight.register_hook(lambda g: g * float("nan"))
    x = torch.randint(65, (2, 16))
    model(x, x)[1].backward()
    monitor = HealthMonitor(model)
    with pytest.raises(NonFiniteError, match=r"step 3.*'blocks\.1\.attn\.c_attn\.weight'"):
        monitor.record_gradients(3)
    tolerant = HealthMonitor(model, allow_nonfinite_grads=True)  # fp16: the scaler skips
    tolerant.record_gradients(3)
    assert tolerant.skipped_steps == [3]


# ---------------------------------------------------------------- meter


def test_flops_and_mfu_on_known_numbers():
    """6N + 12LHQT FLOPs per token; MFU against the named GPU's bf16 peak, None when unknown."""
    # nanoGPT's shakespeare-char model: N = 10.65M, 6 layers, 6 heads of 64, T = 256
    fpt = flops_per_token(10_650_000, 6, 6, 64, 256)
    assert fpt == 6 * 10_650_000 + 12 * 6 * 6 * 64 * 256
    meter = ThroughputMeter(fpt, 989e12)
    assert meter.mfu(1_000_000) == pytest.approx(1e6 * fpt / 989e12)
    assert ThroughputMeter(fpt, None).mfu(1_000_000) is None
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops("Some Future GPU") is None
    assert peak_flops("cpu") is None


def test_peak_flops_follow_the_precision_of_the_matmuls():
    """bf16 and fp16 share a peak; fp32 runs as TF32 on tensor cores, half of it."""
    name = "NVIDIA H100 80GB HBM3"
    assert peak_flops(name, "bf16") == peak_flops(name, "fp16") == 989e12
    assert peak_flops(name, "fp32") == pytest.approx(494.5e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 156e12
    with pytest.raises(ValueError, match="precision"):
        peak_flops(name, "fp8")


def test_meter_counts_tokens_over_laps():
    """The meter adds tokens and time over laps, not while paused."""
    meter = ThroughputMeter()
    meter.start()
    assert meter.lap(100) > 0
    meter.pause()
    meter.start()
    meter.lap(50)
    assert meter.tokens == 150 and meter.tokens_per_s > 0 and meter.mfu() is None


# ---------------------------------------------------------------- sampling


def test_sampling_is_repeatable_and_top_k_one_is_greedy():
    """Sampling repeats by seed, top_k=1 and temperature 0 are greedy, an empty prompt works."""
    torch.manual_seed(0)
    model = GPT(TINY)
    tokenizer = load_shakespeare().tokenizer
    first = sample(model, tokenizer, "KING:", 30, temperature=1.0, seed=3)
    assert first == sample(model, tokenizer, "KING:", 30, temperature=1.0, seed=3)
    assert first != sample(model, tokenizer, "KING:", 30, temperature=1.0, seed=4)
    greedy = sample(model, tokenizer, "KING:", 30, temperature=0.0)
    assert sample(model, tokenizer, "KING:", 30, top_k=1, seed=5) == greedy
    assert sample(model, tokenizer, "KING:", 30, top_k=1, temperature=2.0, seed=6) == greedy
    assert len(sample(model, tokenizer, "", 12)) == 12


def test_custom_text_splits():
    """TextSplits.from_text builds the vocabulary and the 90/10 split of any text."""
    splits = TextSplits.from_text("abcabcabc" * 20)
    assert splits.tokenizer.vocab_size == 3
    assert len(splits.train) == 162 and len(splits.val) == 18


# ---------------------------------------------------------------- bench


REQUIRED_KEYS = {
    "preset",
    "device",
    "params",
    "val_loss",
    "seconds",
    "compile_seconds",
    "tokens",
    "tokens_per_s",
    "mfu",
}


def test_bench_gpt_prints_one_json_object(capsys):
    """bench gpt --json prints one JSON object with the contract's fields."""
    assert main(["bench", "gpt", "--preset", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= REQUIRED_KEYS
    assert result["preset"] == "test" and result["device"] == "cpu" and result["mfu"] is None


def test_bench_gpt_on_a_missing_device_is_a_usage_error(capsys):
    """bench gpt on a missing device is a usage error (exit 2) naming it."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "gpt", "--preset", "test", "--device", "cuda"]) == 2
    assert "'cuda' was asked for" in capsys.readouterr().err


BLOCKED = (
    "jupyter",
    "jupyter_client",
    "jupyter_core",
    "jupyterlab",
    "ipykernel",
    "IPython",
    "ipywidgets",
    "matplotlib",
    "nbformat",
    "nbclient",
    "tqdm",
)


def test_bench_gpt_needs_only_torch_and_numpy():
    """The GPU machine has torch and numpy only: the bench must import and run there."""
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        "from backprop_course.cli import main\n"
        "sys.exit(main(['bench', 'gpt', '--preset', 'test', '--json']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) >= REQUIRED_KEYS


# ---------------------------------------------------------------- on a CUDA GPU (pytest -m gpu)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bf16_compiled_run_reports_tokens_and_mfu():
    """On CUDA: bf16 autocast and torch.compile train, and MFU uses the GPU's bf16 peak."""
    config = tiny_train(max_iters=30, precision="bf16", compile=True, device="cuda")
    result = train(TINY, config, progress=False)
    assert result.device == "cuda" and result.compiled, result.notes
    assert math.isfinite(result.val_loss) and result.val_loss < math.log(65)
    assert result.device_name == torch.cuda.get_device_name(0)
    assert result.peak_flops == peak_flops("cuda", "bf16")
    if result.peak_flops is not None:
        assert 0 < result.mfu < 1


@pytest.mark.gpu
@needs_cuda
def test_cuda_fp16_with_loss_scaling_trains():
    """On CUDA: fp16 autocast with the gradient scaler switched on trains to a finite loss."""
    result = train(TINY, tiny_train(max_iters=30, precision="fp16", device="cuda"), progress=False)
    assert math.isfinite(result.val_loss) and result.val_loss < math.log(65)


@pytest.mark.gpu
@needs_cuda
def test_cuda_fused_attention_agrees_with_explicit_in_bf16():
    """On CUDA: the fused attention kernel matches lesson 10's explicit one under bf16."""
    torch.manual_seed(0)
    config = GPTConfig(block_size=256, n_layer=2, n_head=4, n_embd=128)
    fused = GPT(config).cuda()
    explicit = GPT(dataclasses.replace(config, fused_attention=False)).cuda()
    explicit.load_state_dict(fused.state_dict())
    idx = torch.randint(65, (4, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = fused(idx)[0].float(), explicit(idx)[0].float()
    torch.testing.assert_close(a, b, atol=0.1, rtol=0.05)


@pytest.mark.gpu
@needs_cuda
def test_cuda_uses_the_fused_adamw_kernel():
    """On CUDA: configure_optimizer asks for fused AdamW (one kernel for all tensors)."""
    optimizer = GPT(TINY).cuda().configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cuda")
    assert optimizer.defaults.get("fused") is True
