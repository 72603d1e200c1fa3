"""The training loop: nanoGPT's, with every switch of lesson 11.

``train`` reads top to bottom as one step after another::

    lr      = schedule(step)                     # linear warmup, cosine decay
    x, y    = get_batch(train, ...)              # random windows of the text
    loss    = model(x, y)    under autocast      # bf16/fp16 matmuls, fp32 elsewhere
    scaler.scale(loss).backward()                # fp16 only: scale up so small grads survive
    scaler.unscale_(optimizer); clip_grad_norm_  # true gradients; cap their global norm
    scaler.step(optimizer); scaler.update()      # AdamW (skipped if fp16 grads overflowed)

Everything around the step lives elsewhere: the device (``backprop_course.device``),
mixed precision (``precision``), the validation loss (``evaluate``), the health
monitor (``health``), tokens/s and MFU (``meter``), the time budget
(``budget``); :class:`_Run` below builds them and keeps the records, so the
loop holds only the step and its logging. ``torch.compile`` compiles before
the clock starts (its time reported apart). The final validation loss is
measured after the clock stops, on consecutive windows covering the
validation text.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch

from backprop_course.device import device_name, resolve_device, synchronize, torch_threads
from backprop_course.gpt.budget import TimeBudget
from backprop_course.gpt.config import GPTConfig, TrainConfig
from backprop_course.gpt.data import TextSplits, get_batch, load_shakespeare
from backprop_course.gpt.evaluate import estimate_loss, evaluate
from backprop_course.gpt.health import HealthMonitor
from backprop_course.gpt.meter import ThroughputMeter, flops_per_token, peak_flops
from backprop_course.gpt.model import GPT
from backprop_course.gpt.precision import autocast_context, grad_scaler
from backprop_course.gpt.result import TrainResult
from backprop_course.optim import warmup_cosine

__all__ = [
    "TrainResult",
    "autocast_context",
    "estimate_loss",
    "evaluate",
    "resolve_device",
    "train",
]


def train(
    model_config: GPTConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
    callback: Callable[[dict], bool | None] | None = None,
    splits: TextSplits | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train a fresh GPT on tiny-shakespeare (or ``splits``) and return a :class:`TrainResult`.

    ``progress`` shows a tqdm bar (steps, time left, tokens/s; when tqdm is
    installed) and prints which device is used. ``callback(info)`` is called at
    every log interval with a dict (``step``, ``loss``, ``lr``, ``tokens_per_s``,
    ``mfu``, ``monitor``); if it returns True, training stops there. ``log``
    receives the one-line messages (default: ``print`` when ``progress`` is on).
    ``clock`` times the run and its budget (tests pass a fake one).
    """
    cfg = train_config
    with torch_threads(cfg.threads):
        run = _Run(model_config, cfg, splits, log, clock, progress, callback)
        model, optimizer, scaler, ctx = run.model, run.optimizer, run.scaler, run.ctx
        budget, monitor = run.budget, run.monitor
        run.meter.start()
        try:
            for step in range(cfg.max_iters):
                if budget.out_of_time(step, run.meter.elapsed()):
                    run.out_of_time(step)
                    break
                lr = run.schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = run.get_batch()
                with ctx:
                    _, loss = run.forward(x, y)
                monitored = monitor.should_record(step)
                if monitored:
                    monitor.check_loss(step, loss.item(), run.rerun(x, y))
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
                run.record(step, lr, loss)
                last = step == cfg.max_iters - 1
                evaluating = cfg.eval_interval and (step + 1) % cfg.eval_interval == 0 and not last
                logging = last or evaluating or (step + 1) % cfg.log_interval == 0
                if logging and run.log_step(step):
                    break  # the callback asked to stop
                if evaluating:
                    run.estimate_val_loss(step)
        finally:
            run.close_bar()
        return run.finish()


class _Run:
    """One run's set-up and bookkeeping: device, model, optimizer, precision, compile,
    meter, monitor, budget, progress bar and the records that become a TrainResult."""

    def __init__(self, model_config, cfg, splits, log, clock, progress, callback):
        self.model_config, self.cfg, self.callback = model_config, cfg, callback
        self.log = log if log is not None else (print if progress else (lambda message: None))
        self.splits = splits if splits is not None else load_shakespeare()
        vocab = self.splits.tokenizer.vocab_size
        if model_config.vocab_size < vocab:
            raise ValueError(
                f"GPTConfig.vocab_size={model_config.vocab_size} is smaller than the text's "
                f"{vocab} characters"
            )
        self.splits.check_block_size(model_config.block_size)
        self.device = device = resolve_device(cfg.device)
        self.ctx = autocast_context(device, cfg.precision)
        name = device_name(device)
        self.log(f"training on {device.type} ({name}), precision {cfg.precision}")

        torch.manual_seed(cfg.seed)
        self.batch_generator = torch.Generator().manual_seed(cfg.seed)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        self.model = model = GPT(model_config).to(device)
        model.train()
        self.optimizer = model.configure_optimizer(
            cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device.type
        )
        self.scaler = grad_scaler(device, cfg.precision)
        self.train_data = self.splits.train.to(device)
        params = model.num_params()
        fpt = flops_per_token(
            params,
            model_config.n_layer,
            model_config.n_head,
            model_config.head_dim,
            model_config.block_size,
        )
        peak = peak_flops(device, cfg.precision)
        self.meter = ThroughputMeter(fpt, peak, clock=clock)
        self.monitor = HealthMonitor(
            model, every=cfg.monitor_interval, allow_nonfinite_grads=cfg.precision == "fp16"
        )
        self.tokens_per_step = cfg.batch_size * model_config.block_size
        windows = (len(self.splits.val) - 1) // model_config.block_size
        val_tokens = min(windows, cfg.val_windows or windows) * model_config.block_size
        # Keep time for the final validation. A forward pass is a third of a step's FLOPs; on
        # one CPU thread a validation token took 1/2.7 of a training token's time (1/2 to 1/2.8
        # on a busy machine, lesson 11 in full mode): keep room for 1/2.5.
        self.budget = TimeBudget(
            cfg.max_iters,
            cfg.max_seconds,
            cfg.warmup_iters,
            reserve_steps=val_tokens / 2.5 / self.tokens_per_step,
        )
        self.pending: list[torch.Tensor] = []
        self.result = TrainResult(
            model=model,
            tokenizer=self.splits.tokenizer,
            model_config=model_config,
            train_config=cfg,
            device=device.type,
            device_name=name,
            precision=cfg.precision,
            compiled=False,
            params=params,
            flops_per_token=fpt,
            peak_flops=peak,
            health=self.monitor,
        )
        self.forward = model
        if cfg.compile:
            self._compile(clock)
        self.bar = _progress_bar(cfg.max_iters, progress)

    # ------------------------------------------------------------ set-up

    def _compile(self, clock) -> None:
        """Compile before the clock starts: a forward and backward on a batch from a separate
        generator (the weights do not change, the training batches stay the same)."""
        result = self.result
        if not hasattr(torch, "compile"):
            result.notes.append("torch.compile is not available in this torch; ran eagerly")
            return
        self.forward, result.compiled = torch.compile(self.model), True
        start = clock()
        warm = torch.Generator().manual_seed(self.cfg.seed + 1)
        block = self.model_config.block_size
        x, y = get_batch(self.train_data, self.cfg.batch_size, block, warm, self.device)
        try:
            with self.ctx:
                _, loss = self.forward(x, y)
            self.scaler.scale(loss).backward()
        except Exception as error:  # e.g. no C++ compiler for the CPU backend
            result.compiled = False
            self.forward = self.model
            result.notes.append(f"torch.compile failed, ran eagerly: {type(error).__name__}")
            warnings.warn(f"torch.compile failed ({error}); training eagerly", stacklevel=3)
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        result.compile_seconds = clock() - start
        self.log(f"compiled in {result.compile_seconds:.1f} s")

    # ------------------------------------------------------------ the step's helpers

    def schedule(self, step: int) -> float:
        """This step's learning rate: warmup, then cosine over the run (see ``budget``)."""
        cfg = self.cfg
        at = self.budget.schedule_step(step, self.meter.elapsed())
        return warmup_cosine(at, cfg.max_iters, cfg.warmup_iters, cfg.learning_rate, cfg.min_lr)

    def get_batch(self):
        block = self.model_config.block_size
        self.batch = get_batch(
            self.train_data, self.cfg.batch_size, block, self.batch_generator, self.device
        )
        return self.batch

    def rerun(self, x, y) -> Callable[[], None]:
        """The forward pass again, eagerly, for the health monitor's diagnosis of a NaN."""

        def run():
            with self.ctx:
                self.model(x, y)

        return run

    def record(self, step: int, lr: float, loss: torch.Tensor) -> None:
        self.pending.append(loss.detach())  # turned into floats at the next log: no sync here
        self.result.steps.append(step)
        self.result.lrs.append(lr)
        if self.bar is not None:  # every step, so a slow run shows its pace and time left
            self.bar.total = self.budget.planned_steps(step + 1, self.meter.elapsed())
            self.bar.update(1)

    def log_step(self, step: int) -> bool:
        """Turn the pending losses into floats, lap the meter, report. True: the callback
        asked to stop."""
        result = self.result
        if not self.pending:
            return False
        values = torch.stack(self.pending).float().tolist()  # one device sync per interval
        first = step - len(values) + 1
        self.pending.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                self.monitor.check_loss(first + offset, value, self.rerun(*self.batch))
        synchronize(self.device)
        rate = self.meter.lap(len(values) * self.tokens_per_step)
        result.losses.extend(values)
        result.log_steps.append(step)
        result.tokens_per_s_history.append(rate)
        result.mfu_history.append(self.meter.mfu(rate))
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values[-1]:.3f}", tok_s=f"{rate:,.0f}")
        info = {
            "step": step,
            "loss": values[-1],
            "lr": result.lrs[-1],
            "tokens_per_s": rate,
            "mfu": self.meter.mfu(rate),
            "monitor": self.monitor,
        }
        stop = bool(self.callback(info)) if self.callback is not None else False
        result.stopped_early = stop
        return stop

    def estimate_val_loss(self, step: int) -> None:
        """nanoGPT's quick estimate during training, off the clock."""
        cfg = self.cfg
        self.meter.pause()
        self.result.eval_steps.append(step)
        self.result.eval_losses.append(
            estimate_loss(
                self.model,  # eager: a compiled model would recompile for eval mode
                self.splits.val,
                cfg.batch_size,
                self.model_config.block_size,
                cfg.eval_iters,
                precision=cfg.precision,
                generator=torch.Generator().manual_seed(cfg.seed + 2),
            )
        )
        self.meter.start()

    def out_of_time(self, step: int) -> None:
        """The time budget ends the run before ``step``: log what was pending."""
        if self.pending:
            self.log_step(step - 1)
        self.result.out_of_time = True
        if self.bar is not None:
            self.bar.total = step  # the bar ends full: the run is complete, on time
            self.bar.refresh()
        self.log(
            f"time budget of {self.cfg.max_seconds:g} s reached after {step} of "
            f"{self.cfg.max_iters} steps"
        )

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ------------------------------------------------------------ the end

    def finish(self) -> TrainResult:
        result, cfg, meter = self.result, self.cfg, self.meter
        result.seconds = meter.seconds
        result.tokens = meter.tokens
        result.tokens_per_s = meter.tokens_per_s
        result.mfu = meter.mfu()
        tail = result.losses[-cfg.log_interval :]
        result.train_loss = sum(tail) / len(tail) if tail else math.nan
        # Eagerly, on the plain model: a compiled model would recompile for eval mode.
        start = meter.clock()
        result.val_loss, result.val_tokens = evaluate(
            self.model,
            self.splits.val,
            self.model_config.block_size,
            precision=cfg.precision,
            limit=cfg.val_windows,
            batch_size=max(cfg.batch_size, 64),
        )
        result.eval_seconds = meter.clock() - start
        self.log(
            f"val loss {result.val_loss:.4f} after {len(result.steps)} steps, "
            f"{result.seconds:.1f} s, {result.tokens_per_s or 0:,.0f} tokens/s"
            + (f", MFU {result.mfu:.1%}" if result.mfu is not None else "")
        )
        return result


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar (steps, time left, and tokens/s as a postfix) when tqdm is installed and
    wanted, else None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training", unit="step")
