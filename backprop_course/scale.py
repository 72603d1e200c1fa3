"""Backprop at LLM scale, by formula: the memory of training, the compute, real model sizes.

Used by lesson 14 beside the measurements it makes.

**Memory.** Training keeps four things per parameter or per token:

| what | bytes | when |
| --- | --- | --- |
| weights | 4 (fp32) | always |
| gradients | 4 | from backward to the optimizer step |
| optimizer state | 8 for Adam (two moments), 4 for SGD with momentum, 0 for plain SGD | always |
| activations | per token, grows with depth and width | from forward to backward |

:func:`state_bytes` counts the first three for an fp32 model;
:func:`layer_activation_bytes` estimates one layer's activations for any transformer size;
:func:`gpt_activation_bytes` the activations that lesson 11's GPT saves for backward.

**Compute.** A dense model does about ``2 N`` FLOPs per token forward (one
multiply and one add per parameter) and ``4 N`` backward (a gradient for the
input *and* one for the weights of every matmul): :func:`train_flops` is
``6 N D`` for ``D`` tokens; :func:`train_seconds` turns it into time at a given
model FLOPs utilisation (MFU).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GB",
    "MODEL_SIZES",
    "OPTIMIZER_STATE_BYTES",
    "ModelSize",
    "gpt_activation_bytes",
    "gpt_param_count",
    "layer_activation_bytes",
    "state_bytes",
    "train_flops",
    "train_seconds",
]

GB = 1e9  # memory figures in decimal gigabytes, as GPU makers quote them (an "80 GB" H100)

# fp32 bytes of optimizer state per parameter
OPTIMIZER_STATE_BYTES = {"sgd": 0, "momentum": 4, "adam": 8}


@dataclass(frozen=True)
class ModelSize:
    """A published model's size: total parameters, those active per token, and its shape."""

    name: str
    n_params: float
    n_active: float  # parameters a token goes through (all of them, for a dense model)
    n_layer: int
    d_model: int
    n_head: int
    context: int
    note: str


MODEL_SIZES = (
    ModelSize("GPT-2 small", 124_439_808, 124_439_808, 12, 768, 12, 1024, "dense, OpenAI 2019"),
    ModelSize("7B dense", 6_738_415_616, 6_738_415_616, 32, 4096, 32, 4096, "Llama-2-7B's shape"),
    ModelSize(
        "314B mixture of experts",
        314e9,
        0.25 * 314e9,
        64,
        6144,
        48,
        8192,
        "Grok-1 as released: 8 experts, 2 per token, about 25% of weights active",
    ),
)


def state_bytes(n_params: float, optimizer: str = "adam") -> dict[str, float]:
    """Bytes of fp32 weights, gradients and optimizer state for ``n_params`` parameters."""
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATE_BYTES)}")
    return {
        "weights": 4.0 * n_params,
        "gradients": 4.0 * n_params,
        "optimizer": float(OPTIMIZER_STATE_BYTES[optimizer]) * n_params,
    }


def gpt_param_count(vocab_size: int, block_size: int, n_layer: int, n_embd: int) -> int:
    """Parameters of lesson 11's GPT (biases on, tied head): embeddings, blocks, final norm.

    Each block: two layer norms (2 x 2C), attention (C x 3C + 3C, C x C + C), MLP
    (C x 4C + 4C, 4C x C + C): ``12 C^2 + 13 C``.
    """
    C = n_embd
    return vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def gpt_activation_bytes(
    batch: int, T: int, n_layer: int, n_embd: int, n_head: int, vocab_size: int
) -> int:
    """Bytes lesson 11's GPT saves for backward: fp32, explicit attention, no dropout.

    Counted tensor by tensor, each storage once (as ``SavedTensorMeter`` counts). Per
    block, in floats: ``16 B T C`` (the block's input, layer norm 1's output, copies of
    q, k and v for the batched matmuls, the heads merged back, layer norm 2's input and
    output: 8 of ``B T C``; the MLP's hidden layer before and after GELU: 2 of ``4 B T
    C``), ``3 B H T T`` (the attention weights: softmax's exponentials, its output and a
    copy for the matmul with v), ``2 B H T`` (softmax's row sums) and ``4 B T`` (the two
    layer norms' means and 1/std); and the causal mask, ``T T`` booleans. Outside the
    blocks: the final layer norm (``2 B T C + 2 B T``), the logits (``B T V``) and the
    loss; the token ids, the targets (int64) and the positions.
    """
    B, C, H, V = batch, n_embd, n_head, vocab_size
    per_block = 4 * (16 * B * T * C + 3 * B * H * T * T + 2 * B * H * T + 4 * B * T) + T * T
    outside = 4 * (2 * B * T * C + 2 * B * T + B * T * V + 1) + 8 * (2 * B * T + T)
    return n_layer * per_block + outside


def layer_activation_bytes(
    seq: int, batch: int, d_model: int, n_head: int, *, bytes_per_value: int = 2, fused=False
) -> float:
    """Activation bytes one transformer layer saves, by :func:`gpt_activation_bytes`' count.

    ``16 s b d`` values for the matmul inputs, norms and MLP, plus ``3 a s^2 b`` for the
    attention weights unless the attention is fused (flash attention recomputes them).
    The small per-token terms are left out.
    """
    values = 16 * seq * batch * d_model + (0 if fused else 3 * n_head * seq * seq * batch)
    return float(bytes_per_value * values)


def train_flops(n_params: float, n_tokens: float) -> float:
    """FLOPs to train a dense model of ``n_params`` on ``n_tokens``: ``6 N D``."""
    return 6.0 * n_params * n_tokens


def train_seconds(
    n_params: float, n_tokens: float, n_gpus: int, peak_flops: float, mfu: float
) -> float:
    """Wall-clock seconds for :func:`train_flops` on ``n_gpus`` at ``mfu`` of ``peak_flops``."""
    return train_flops(n_params, n_tokens) / (n_gpus * peak_flops * mfu)
