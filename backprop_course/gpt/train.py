"""The training loop, with every switch of lesson 11 in one readable function.

One step::

    lr      = warmup_cosine(step, ...)           # linear warmup, cosine decay
    x, y    = get_batch(train, ...)              # random windows of the text
    loss    = model(x, y)    under autocast      # bf16/fp16 matmuls, fp32 elsewhere
    scaler.scale(loss).backward()                # fp16 only: scale up so small grads survive
    scaler.unscale_(optimizer); clip_grad_norm_  # cap the global gradient norm
    scaler.step(optimizer); scaler.update()      # AdamW (skipped if fp16 grads overflowed)

around it: the device choice (CUDA, then MPS, then CPU), ``torch.compile``
(compiled before the clock starts, its time reported apart), the throughput
meter (tokens/s, MFU) and the health monitor (NaN/inf stops the run naming
step and layer). The final validation loss is measured after the clock stops,
on consecutive windows covering the validation text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from backprop_course.device import torch_threads
from backprop_course.gpt.config import GPTConfig, TrainConfig
from backprop_course.gpt.data import TextSplits, get_batch, load_shakespeare, val_windows
from backprop_course.gpt.health import HealthMonitor
from backprop_course.gpt.meter import ThroughputMeter, flops_per_token, peak_flops
from backprop_course.gpt.model import GPT
from backprop_course.optim import warmup_cosine

__all__ = [
    "TrainResult",
    "autocast_context",
    "estimate_loss",
    "evaluate",
    "resolve_device",
    "train",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str | None = None) -> torch.device:
    """``None``: the best device there is (CUDA, then MPS, then CPU). Otherwise the one
    asked for; asking for one that is not there raises, naming the device found."""
    from backprop_course.device import pick_device

    if requested is None:
        return torch.device(pick_device())
    device = torch.device(requested)
    pick_device(device.type)  # raises RuntimeError naming the device found
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise RuntimeError(
            f"device {requested!r} was asked for but only "
            f"{torch.cuda.device_count()} CUDA device(s) are present"
        )
    return device


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU model, or the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def autocast_context(device: torch.device, precision: str):
    """The context for forward passes: nothing for fp32, autocast to bf16/fp16 otherwise.

    Raises a ValueError naming ``TrainConfig.precision`` when this device (and
    torch build) cannot autocast to it.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = _DTYPES[precision]
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"TrainConfig.precision='bf16' is not supported by {device_name(device)}; "
            "use 'fp16' (with loss scaling) or 'fp32'"
        )
    try:
        with torch.autocast(device_type=device.type, dtype=dtype):
            probe = torch.nn.functional.linear(
                torch.ones(2, 2, device=device), torch.ones(2, 2, device=device)
            )
        if probe.dtype != dtype:
            raise RuntimeError(f"autocast produced {probe.dtype}")
    except Exception as error:  # torch builds differ in what each device can autocast
        raise ValueError(
            f"TrainConfig.precision={precision!r} is not supported on {device.type} by this "
            f"torch {torch.__version__} ({error}); use 'bf16' or 'fp32'"
        ) from None
    return torch.autocast(device_type=device.type, dtype=dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: torch.Tensor,
    block_size: int,
    *,
    precision: str = "fp32",
    limit: int | None = None,
    batch_size: int = 64,
) -> tuple[float, int]:
    """Mean cross-entropy over consecutive ``block_size`` windows of ``data``.

    Every token (up to the last partial window, or the first ``limit``
    windows) is predicted once, so the figure does not depend on a seed.
    Returns ``(loss, tokens)``.
    """
    device = next(model.parameters()).device
    x_all, y_all = val_windows(data, block_size, limit)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with autocast_context(device, precision):
            for i in range(0, len(x_all), batch_size):
                x = x_all[i : i + batch_size].to(device)
                y = y_all[i : i + batch_size].to(device)
                _, loss = model(x, y)
                total += loss.item() * y.numel()
                count += y.numel()
    finally:
        model.train(was_training)
    return total / count, count


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    iters: int,
    *,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
) -> float:
    """nanoGPT's estimate: the mean loss of ``iters`` random batches (quick, a little noisy)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    try:
        with autocast_context(device, precision):
            for _ in range(iters):
                x, y = get_batch(data, batch_size, block_size, generator, device)
                losses.append(model(x, y)[1].float())
    finally:
        model.train(was_training)
    return torch.stack(losses).mean().item()


@dataclass
class TrainResult:
    """What a run produced: the model, its histories and the headline figures.

    ``steps``/``losses``/``lrs`` have one entry per step (training loss of that
    step's batch); ``log_steps``/``tokens_per_s_history``/``mfu_history`` one
    per log interval; ``eval_steps``/``eval_losses`` one per evaluation during
    training. ``seconds`` is the training wall time (no compilation, no
    evaluation); ``compile_seconds`` the time of the compiling warm-up step.
    """

    model: GPT
    tokenizer: object
    model_config: GPTConfig
    train_config: TrainConfig
    device: str
    device_name: str
    precision: str
    compiled: bool
    params: int
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    log_steps: list[int] = field(default_factory=list)
    tokens_per_s_history: list[float] = field(default_factory=list)
    mfu_history: list[float | None] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    val_loss: float = math.nan
    val_tokens: int = 0
    train_loss: float = math.nan
    seconds: float = 0.0
    compile_seconds: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    mfu: float | None = None
    flops_per_token: int = 0
    peak_flops: float | None = None
    health: HealthMonitor | None = None
    stopped_early: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The headline figures as JSON-ready data (no model, no per-step histories)."""
        return {
            "device": self.device,
            "device_name": self.device_name,
            "precision": self.precision,
            "compiled": self.compiled,
            "params": self.params,
            "val_loss": round(self.val_loss, 4),
            "val_tokens": self.val_tokens,
            "train_loss": round(self.train_loss, 4),
            "seconds": round(self.seconds, 2),
            "compile_seconds": None
            if self.compile_seconds is None
            else round(self.compile_seconds, 2),
            "steps": len(self.steps),
            "tokens": self.tokens,
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s),
            "mfu": None if self.mfu is None else round(self.mfu, 4),
            "flops_per_token": self.flops_per_token,
            "peak_flops": self.peak_flops,
            "model": dataclasses.asdict(self.model_config),
            "train": dataclasses.asdict(self.train_config),
            "notes": list(self.notes),
        }


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar when tqdm is installed and wanted, else None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training", unit="step")


def _grad_scaler(device: torch.device, enabled: bool):
    """Loss scaling for fp16: multiply the loss so small gradients do not underflow to 0,
    divide the gradients back before the step, skip steps whose gradients overflowed."""
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3, any device
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


def _compile(model: GPT, notes: list[str]):
    if not hasattr(torch, "compile"):
        notes.append("torch.compile is not available in this torch; ran eagerly")
        return model, False
    return torch.compile(model), True


def train(
    model_config: GPTConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
    callback: Callable[[dict], bool | None] | None = None,
    splits: TextSplits | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a fresh GPT on tiny-shakespeare (or ``splits``) and return a :class:`TrainResult`.

    ``progress`` shows a tqdm bar (when tqdm is installed) and prints which
    device is used. ``callback(info)`` is called at every log interval with a
    dict (``step``, ``loss``, ``lr``, ``tokens_per_s``, ``mfu``, ``monitor``); if
    it returns True, training stops there. ``log`` receives the one-line
    messages (default: ``print`` when ``progress`` is on).
    """
    with torch_threads(train_config.threads):
        return _train(model_config, train_config, progress, callback, splits, log)


def _train(model_config, train_config, progress, callback, splits, log) -> TrainResult:
    cfg = train_config
    if log is None:
        log = print if progress else (lambda message: None)
    splits = splits if splits is not None else load_shakespeare()
    vocab = splits.tokenizer.vocab_size
    if model_config.vocab_size < vocab:
        raise ValueError(
            f"GPTConfig.vocab_size={model_config.vocab_size} is smaller than the text's "
            f"{vocab} characters"
        )
    splits.check_block_size(model_config.block_size)
    device = resolve_device(cfg.device)
    ctx = autocast_context(device, cfg.precision)
    name = device_name(device)
    log(f"training on {device.type} ({name}), precision {cfg.precision}")

    torch.manual_seed(cfg.seed)
    batch_generator = torch.Generator().manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(model_config).to(device)
    model.train()
    optimizer = model.configure_optimizer(
        cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type
    )
    fp16 = cfg.precision == "fp16"
    scaler = _grad_scaler(device, fp16)
    train_data = splits.train.to(device)
    params = model.num_params()
    fpt = flops_per_token(
        params,
        model_config.n_layer,
        model_config.n_head,
        model_config.head_dim,
        model_config.block_size,
    )
    peak = peak_flops(device)
    meter = ThroughputMeter(fpt, peak)
    monitor = HealthMonitor(model, every=cfg.monitor_interval, allow_nonfinite_grads=fp16)
    result = TrainResult(
        model=model,
        tokenizer=splits.tokenizer,
        model_config=model_config,
        train_config=cfg,
        device=device.type,
        device_name=name,
        precision=cfg.precision,
        compiled=False,
        params=params,
        flops_per_token=fpt,
        peak_flops=peak,
        health=monitor,
    )

    forward = model
    if cfg.compile:
        forward, result.compiled = _compile(model, result.notes)
    if result.compiled:
        # Compile before the clock starts: a forward and backward on a batch from a
        # separate generator (the weights do not change, the training batches stay the same).
        start = time.perf_counter()
        warm = torch.Generator().manual_seed(cfg.seed + 1)
        x, y = get_batch(train_data, cfg.batch_size, model_config.block_size, warm, device)
        try:
            with ctx:
                _, loss = forward(x, y)
            scaler.scale(loss).backward()
        except Exception as error:  # e.g. no C++ compiler for the CPU backend
            result.compiled = False
            forward = model
            result.notes.append(f"torch.compile failed, ran eagerly: {type(error).__name__}")
            warnings.warn(f"torch.compile failed ({error}); training eagerly", stacklevel=2)
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        result.compile_seconds = time.perf_counter() - start
        log(f"compiled in {result.compile_seconds:.1f} s")

    tokens_per_step = cfg.batch_size * model_config.block_size
    pending: list[torch.Tensor] = []
    bar = _progress_bar(cfg.max_iters, progress)

    def rerun(x, y):  # the forward pass again, eagerly, for the health monitor's diagnosis
        def run():
            with ctx:
                model(x, y)

        return run

    def flush(step: int, x, y) -> bool:
        """Turn the pending losses into floats, lap the meter, report. True: stop."""
        if not pending:
            return False
        values = torch.stack(pending).float().tolist()  # one device sync per interval
        first = step - len(values) + 1
        pending.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                monitor.check_loss(first + offset, value, rerun(x, y))
        _synchronize(device)
        rate = meter.lap(len(values) * tokens_per_step)
        result.losses.extend(values)
        result.log_steps.append(step)
        result.tokens_per_s_history.append(rate)
        result.mfu_history.append(meter.mfu(rate))
        info = {
            "step": step,
            "loss": values[-1],
            "lr": result.lrs[-1],
            "tokens_per_s": rate,
            "mfu": meter.mfu(rate),
            "monitor": monitor,
        }
        if bar is not None:
            bar.update(len(values))
            bar.set_postfix(loss=f"{values[-1]:.3f}", tok_s=f"{rate:,.0f}")
        return bool(callback(info)) if callback is not None else False

    meter.start()
    try:
        for step in range(cfg.max_iters):
            lr = warmup_cosine(step, cfg.max_iters, cfg.warmup_iters, cfg.learning_rate, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(
                train_data, cfg.batch_size, model_config.block_size, batch_generator, device
            )
            with ctx:
                _, loss = forward(x, y)
            monitored = monitor.should_record(step)
            if monitored:
                monitor.check_loss(step, loss.item(), rerun(x, y))
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0 or monitored:
                scaler.unscale_(optimizer)  # true gradients, for clipping and monitoring
            if monitored:
                monitor.record_gradients(step)
                monitor.snapshot()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if monitored:
                monitor.record_updates(step)
            optimizer.zero_grad(set_to_none=True)
            pending.append(loss.detach())
            result.steps.append(step)
            result.lrs.append(lr)
            last = step == cfg.max_iters - 1
            evaluating = cfg.eval_interval and (step + 1) % cfg.eval_interval == 0 and not last
            logging = last or evaluating or (step + 1) % cfg.log_interval == 0
            if logging and flush(step, x, y):
                result.stopped_early = True
                break
            if evaluating:
                meter.pause()
                result.eval_steps.append(step)
                result.eval_losses.append(
                    estimate_loss(
                        model,  # eager: a compiled model would recompile for eval mode
                        splits.val,
                        cfg.batch_size,
                        model_config.block_size,
                        cfg.eval_iters,
                        precision=cfg.precision,
                        generator=torch.Generator().manual_seed(cfg.seed + 2),
                    )
                )
                meter.start()
    finally:
        if bar is not None:
            bar.close()
    result.seconds = meter.seconds
    result.tokens = meter.tokens
    result.tokens_per_s = meter.tokens_per_s
    result.mfu = meter.mfu()
    tail = result.losses[-cfg.log_interval :]
    result.train_loss = sum(tail) / len(tail) if tail else math.nan
    # Eagerly, on the plain model: a compiled model would recompile for eval mode.
    result.val_loss, result.val_tokens = evaluate(
        model,
        splits.val,
        model_config.block_size,
        precision=cfg.precision,
        limit=cfg.val_windows,
        batch_size=max(cfg.batch_size, 64),
    )
    log(
        f"val loss {result.val_loss:.4f} after {len(result.steps)} steps, "
        f"{result.seconds:.1f} s, {result.tokens_per_s or 0:,.0f} tokens/s"
        + (f", MFU {result.mfu:.1%}" if result.mfu is not None else "")
    )
    return result
