"""What to build and how to train it: two dataclasses and three presets.

``GPTConfig`` describes the model, ``TrainConfig`` the optimisation. Both check
themselves when they are made, so a config that cannot work fails at once with
a message that names the field, instead of deep inside a matrix multiply.

Presets (``preset(name)`` returns a fresh pair you may change):

| name | for | model |
| --- | --- | --- |
| ``test`` | unit tests, the notebook in test mode: seconds | 2 layers, 32 wide, block 32 |
| ``cpu`` | ``bench gpt --preset cpu``: 2 CPU cores, under a minute | 4 layers, 128 wide, block 64 |
| ``gpu`` | ``bench gpt --preset gpu``: one H100, aim < 1 min | 6 layers, 384 wide, block 256 |

The ``gpu`` preset is nanoGPT's shakespeare-char recipe (10.65M parameters, not
counting the position embeddings; 5000 steps of 64 x 256 characters, dropout 0.2,
AdamW lr 1e-3 decaying to 1e-4),
run with bf16 autocast, fused attention, fused AdamW and ``torch.compile``.
Its time has not been measured yet (``benchmarks/gpu/`` holds the script that
measures it). No preset sets ``max_seconds``: a benchmark trains its full
step count, so its loss does not depend on how busy the machine is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["PRECISIONS", "PRESETS", "GPTConfig", "TrainConfig", "preset"]

PRECISIONS = ("fp32", "bf16", "fp16")


def _positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _number_in(owner: str, name: str, value, low: float, high: float, *, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    too_high = value >= high if high_open else value > high
    if not low <= value or too_high:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{owner}.{name} must be in [{low}, {high}{bracket}, got {value!r}")


@dataclass
class GPTConfig:
    """The shape of a GPT: sizes, dropout, biases and which attention kernel to use.

    ``block_size`` is the context length in characters; ``n_embd`` must split
    evenly into ``n_head`` heads. ``fused_attention=True`` uses PyTorch's
    ``scaled_dot_product_attention`` (flash attention on a GPU); ``False`` uses
    the explicit softmax(q k^T / sqrt(d)) v of lesson 10.
    """

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True
    fused_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _positive_int("GPTConfig", name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} is not divisible by "
                f"GPTConfig.n_head={self.n_head}: each head gets n_embd / n_head channels"
            )
        _number_in("GPTConfig", "dropout", self.dropout, 0.0, 1.0, high_open=True)

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.n_embd // self.n_head


@dataclass
class TrainConfig:
    """How to train: batch, steps, AdamW, the schedule, precision, compile, device.

    The learning rate warms up linearly over ``warmup_iters`` steps to
    ``learning_rate`` and then follows a cosine down to ``min_lr`` at
    ``max_iters``. ``weight_decay`` applies to matrices only. ``grad_clip`` caps
    the global gradient norm (0 turns clipping off). ``eval_interval`` > 0
    estimates the validation loss every so many steps on ``eval_iters`` random
    batches; the final validation loss always covers ``val_windows``
    consecutive windows of the validation text (None: all of it).
    ``monitor_interval`` is how often the health monitor measures per-layer
    gradient norms and update ratios and checks for NaN/inf (1: every step).
    ``max_seconds`` caps the run's time as well (None: no cap): training stops
    before a step that would end past it, keeping time for the final
    validation, and the cosine then ends at ``min_lr`` when the time does (see
    ``backprop_course.gpt.budget``). Set-up, compilation and evaluations during
    training are not counted. ``device=None`` picks CUDA, then MPS, then the CPU. ``threads`` sets
    torch's CPU thread count for the run (None: torch's choice); tiny models
    run faster on one thread, since spreading a small matmul over several
    costs more than it saves.
    """

    batch_size: int = 64
    max_iters: int = 5000
    max_seconds: float | None = None
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 0
    eval_iters: int = 20
    val_windows: int | None = None
    log_interval: int = 10
    monitor_interval: int = 1
    precision: str = "fp32"
    compile: bool = False
    seed: int = 1337
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            _positive_int("TrainConfig", "threads", self.threads)
        for name in ("batch_size", "max_iters", "eval_iters", "log_interval", "monitor_interval"):
            _positive_int("TrainConfig", name, getattr(self, name))
        if self.val_windows is not None:
            _positive_int("TrainConfig", "val_windows", self.val_windows)
        for name in ("warmup_iters", "eval_interval", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        if self.warmup_iters > self.max_iters:
            raise ValueError(
                f"TrainConfig.warmup_iters={self.warmup_iters} is longer than "
                f"TrainConfig.max_iters={self.max_iters}"
            )
        _number_in("TrainConfig", "learning_rate", self.learning_rate, 0.0, 10.0)
        if self.learning_rate == 0:
            raise ValueError("TrainConfig.learning_rate must be > 0, got 0")
        _number_in("TrainConfig", "min_lr", self.min_lr, 0.0, self.learning_rate)
        _number_in("TrainConfig", "weight_decay", self.weight_decay, 0.0, 10.0)
        _number_in("TrainConfig", "beta1", self.beta1, 0.0, 1.0, high_open=True)
        _number_in("TrainConfig", "beta2", self.beta2, 0.0, 1.0, high_open=True)
        _number_in("TrainConfig", "grad_clip", self.grad_clip, 0.0, float("inf"))
        if self.max_seconds is not None:
            _number_in("TrainConfig", "max_seconds", self.max_seconds, 0.0, float("inf"))
            if self.max_seconds == 0:
                raise ValueError("TrainConfig.max_seconds must be > 0 (or None: no limit), got 0")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.device is not None and self.device.split(":")[0] not in ("cuda", "mps", "cpu"):
            raise ValueError(
                f"TrainConfig.device must be 'cuda', 'mps', 'cpu' or None (pick the best), "
                f"got {self.device!r}"
            )


PRESETS: dict[str, tuple[GPTConfig, TrainConfig]] = {
    # Seconds on any CPU: enough steps to see the loss fall below ln(65) = 4.17.
    "test": (
        GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32),
        TrainConfig(
            batch_size=16,
            max_iters=40,
            learning_rate=1e-2,
            min_lr=1e-3,
            warmup_iters=5,
            weight_decay=0.0,
            val_windows=200,
            log_interval=5,
            threads=1,
        ),
    ),
    # About 50 s on 2 quiet CPU cores: nanoGPT's CPU recipe (4 x 128, block 64,
    # batch 12, no dropout) with a 4x larger learning rate and 1300 steps instead of
    # 2000. Tuning runs (val loss): lr 2e-3 x 1500 steps 1.870; 4e-3 x 1000: 1.920;
    # 4e-3 x 1300: 1.857; 4e-3 x 1500: 1.825; block 128 x batch 6 was worse.
    "cpu": (
        GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
        TrainConfig(
            batch_size=12,
            max_iters=1300,
            learning_rate=4e-3,
            min_lr=4e-4,
            warmup_iters=50,
            weight_decay=0.1,
            beta2=0.99,
            log_interval=50,
            monitor_interval=50,
        ),
    ),
    # nanoGPT's shakespeare-char recipe, on one GPU with every speed-up switched on.
    "gpu": (
        GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
        TrainConfig(
            batch_size=64,
            max_iters=5000,
            learning_rate=1e-3,
            min_lr=1e-4,
            warmup_iters=100,
            weight_decay=0.1,
            beta2=0.99,
            log_interval=100,
            monitor_interval=100,
            precision="bf16",
            compile=True,
        ),
    ),
}


def preset(name: str) -> tuple[GPTConfig, TrainConfig]:
    """Fresh copies of a preset's ``(GPTConfig, TrainConfig)``: ``test``, ``cpu`` or ``gpu``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    model_config, train_config = PRESETS[name]
    return dataclasses.replace(model_config), dataclasses.replace(train_config)
