"""What a training run returns: :class:`TrainResult`, the model with its histories and figures."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from backprop_course.gpt.config import GPTConfig, TrainConfig
from backprop_course.gpt.health import HealthMonitor
from backprop_course.gpt.model import GPT

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What a run produced: the model, its histories and the headline figures.

    ``steps``/``losses``/``lrs`` have one entry per step (training loss of that
    step's batch); ``log_steps``/``tokens_per_s_history``/``mfu_history`` one
    per log interval; ``eval_steps``/``eval_losses`` one per evaluation during
    training. ``seconds`` is the training wall time (no compilation, no
    evaluation); ``compile_seconds`` the time of the compiling warm-up step;
    ``eval_seconds`` the time of the final validation. ``stopped_early``: the
    callback stopped the run; ``out_of_time``: ``TrainConfig.max_seconds`` did.
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
    eval_seconds: float = 0.0
    tokens: int = 0
    tokens_per_s: float | None = None
    mfu: float | None = None
    flops_per_token: int = 0
    peak_flops: float | None = None
    health: HealthMonitor | None = None
    stopped_early: bool = False
    out_of_time: bool = False
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
            "eval_seconds": round(self.eval_seconds, 2),
            "steps": len(self.steps),
            "out_of_time": self.out_of_time,
            "tokens": self.tokens,
            "tokens_per_s": None if self.tokens_per_s is None else round(self.tokens_per_s),
            "mfu": None if self.mfu is None else round(self.mfu, 4),
            "flops_per_token": self.flops_per_token,
            "peak_flops": self.peak_flops,
            "model": dataclasses.asdict(self.model_config),
            "train": dataclasses.asdict(self.train_config),
            "notes": list(self.notes),
        }
