"""Text from a trained GPT: encode a prompt, sample characters, decode.

``temperature`` rescales the logits before the softmax: 1 samples from the
model's own distribution, lower values sharpen it towards the favourite
characters (0 always takes the most likely one), higher values flatten it.
``top_k`` keeps only the k most likely characters at each step (``top_k=1`` is
greedy decoding). The same ``seed`` gives the same text.
"""

from __future__ import annotations

import torch

from backprop_course.gpt.data import CharTokenizer

__all__ = ["next_token_probs", "sample"]


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """Probabilities ``(B, V)`` of the next token from last-position ``logits`` ``(B, V)``:
    divided by ``temperature`` (> 0), all but the ``top_k`` largest set to -inf, softmax."""
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def sample(
    model,
    tokenizer: CharTokenizer,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> str:
    """``prompt`` followed by ``max_new_tokens`` characters sampled from ``model``.

    An empty prompt starts from a newline (not included in the result).
    """
    start = prompt or "\n"
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(start)], dtype=torch.long, device=device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(idx, max_new_tokens, temperature, top_k, generator=generator)
    finally:
        model.train(was_training)
    text = tokenizer.decode(out[0].tolist())
    return text if prompt else text[len(start) :]
