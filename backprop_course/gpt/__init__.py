"""A character-level GPT on tiny-shakespeare: lesson 11's reference implementation.

Each part is its own module, readable alone:

| module | holds |
| --- | --- |
| ``config`` | ``GPTConfig``, ``TrainConfig``, the ``test``/``cpu``/``gpu`` presets |
| ``data`` | the bundled text, ``CharTokenizer``, the 90/10 split, ``get_batch`` |
| ``model`` | ``GPT`` (blocks of causal self-attention and MLP), AdamW set-up, ``generate`` |
| ``meter`` | FLOPs per token, peak FLOP/s, ``ThroughputMeter`` (tokens/s, MFU) |
| ``health`` | ``HealthMonitor``: loss, per-layer gradient norms, update ratios, NaN stop |
| ``precision`` | ``autocast_context`` (bf16/fp16 autocast), ``grad_scaler`` (fp16 loss scaling) |
| ``evaluate`` | ``evaluate`` (the whole validation text), ``estimate_loss`` (a few batches) |
| ``budget`` | ``TimeBudget``: stop by steps or seconds; the schedule follows the nearer |
| ``result`` | ``TrainResult``: the model, per-step histories, the headline figures |
| ``train`` | ``train(model_config, train_config) -> TrainResult``: the loop |
| ``sample`` | ``sample(model, tokenizer, prompt, ...)``: text with temperature and top-k |

Quick start::

    from backprop_course.gpt import preset, train, sample

    model_config, train_config = preset("cpu")
    result = train(model_config, train_config)
    print(result.val_loss)
    print(sample(result.model, result.tokenizer, "ROMEO:", 200, temperature=0.8, top_k=20))
"""

from backprop_course.device import resolve_device
from backprop_course.gpt.budget import TimeBudget
from backprop_course.gpt.config import PRESETS, GPTConfig, TrainConfig, preset
from backprop_course.gpt.data import (
    CharTokenizer,
    TextSplits,
    get_batch,
    load_shakespeare,
    load_text,
)
from backprop_course.gpt.evaluate import evaluate
from backprop_course.gpt.health import HealthMonitor, NonFiniteError
from backprop_course.gpt.meter import ThroughputMeter, flops_per_token, peak_flops
from backprop_course.gpt.model import GPT, MLP, Block, CausalSelfAttention
from backprop_course.gpt.sample import sample
from backprop_course.gpt.train import TrainResult, train

__all__ = [
    "GPT",
    "MLP",
    "PRESETS",
    "Block",
    "CausalSelfAttention",
    "CharTokenizer",
    "GPTConfig",
    "HealthMonitor",
    "NonFiniteError",
    "TextSplits",
    "ThroughputMeter",
    "TimeBudget",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "flops_per_token",
    "get_batch",
    "load_shakespeare",
    "load_text",
    "peak_flops",
    "preset",
    "resolve_device",
    "sample",
    "train",
]
