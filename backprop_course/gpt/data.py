"""The data pipeline: bundled text -> characters -> integer tensors -> batches.

The corpus is tiny-shakespeare (1,115,394 characters, public domain), shipped
gzipped inside the package so nothing is downloaded. The split follows
nanoGPT's shakespeare-char so losses compare with published ones: the
vocabulary is every character of the whole text (65 of them), the first 90%
of the text is for training and the last 10% for validation.

A batch is ``batch_size`` windows of ``block_size + 1`` consecutive
characters at random offsets; the inputs are the first ``block_size`` of each
and the targets the last ``block_size``: position ``t`` learns to predict
character ``t + 1``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

__all__ = [
    "CharTokenizer",
    "TextSplits",
    "corpus_path",
    "get_batch",
    "load_shakespeare",
    "load_text",
    "val_windows",
]

TRAIN_FRACTION = 0.9


def corpus_path() -> Path:
    """Where the bundled, gzipped tiny-shakespeare text lives."""
    return Path(__file__).resolve().parents[1] / "data_files" / "tinyshakespeare.txt.gz"


@lru_cache(maxsize=1)
def load_text() -> str:
    """The whole tiny-shakespeare text (1,115,394 characters)."""
    with gzip.open(corpus_path(), "rt", encoding="utf-8", newline="") as handle:
        return handle.read()


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters seen."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Integer ids of ``text``; a character outside the vocabulary is an error."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as error:
            raise ValueError(
                f"character {error.args[0]!r} is not in the vocabulary of {self.vocab_size} "
                "characters"
            ) from None

    def decode(self, ids) -> str:
        """The text of a sequence of ids (a list or a 1-D tensor)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


@dataclass
class TextSplits:
    """The encoded text split in two: ``train`` and ``val`` are 1-D int64 tensors."""

    train: torch.Tensor
    val: torch.Tensor
    tokenizer: CharTokenizer

    @classmethod
    def from_text(
        cls, text: str, tokenizer: CharTokenizer | None = None, train_fraction=TRAIN_FRACTION
    ) -> TextSplits:
        """First ``train_fraction`` of the characters for training, the rest for validation."""
        tokenizer = tokenizer or CharTokenizer(text)
        data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        n = int(train_fraction * len(data))
        return cls(train=data[:n], val=data[n:], tokenizer=tokenizer)

    def check_block_size(self, block_size: int) -> None:
        """Raise if a context of ``block_size`` (plus its target) does not fit in both splits."""
        shortest = min(len(self.train), len(self.val))
        if block_size + 1 > shortest:
            raise ValueError(
                f"GPTConfig.block_size={block_size} is too long for this text: the validation "
                f"split has {len(self.val)} tokens, so block_size must be at most {shortest - 1}"
            )


@lru_cache(maxsize=1)
def _shakespeare() -> TextSplits:
    text = load_text()
    return TextSplits.from_text(text, CharTokenizer(text))


def load_shakespeare() -> TextSplits:
    """tiny-shakespeare, encoded and split 90/10 (train 1,003,854, val 111,540 tokens)."""
    return _shakespeare()


def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch ``(x, y)``, both ``(batch_size, block_size)``, ``y`` shifted by one.

    Offsets are drawn on the CPU with ``generator`` (seed it for repeatable
    batches) and the windows gathered where ``data`` lives, then moved to
    ``device``.
    """
    if block_size + 1 > len(data):
        raise ValueError(
            f"block_size={block_size} is too long: the data has only {len(data)} tokens"
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(block_size + 1)
    windows = data[offsets.to(data.device)]
    x, y = windows[:, :-1], windows[:, 1:]
    device = torch.device(device)
    if device.type == "cuda" and data.device.type == "cpu":
        return (
            x.pin_memory().to(device, non_blocking=True),
            y.pin_memory().to(device, non_blocking=True),
        )
    return x.to(device), y.to(device)


def val_windows(
    data: torch.Tensor, block_size: int, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive, non-overlapping windows of ``data``: ``(x, y)``, each ``(n, block_size)``.

    The deterministic way to measure a validation loss: every token of the
    text (except the last partial window) is predicted exactly once.
    ``limit`` keeps only the first ``limit`` windows.
    """
    n = (len(data) - 1) // block_size
    if limit is not None:
        n = min(n, limit)
    if n < 1:
        raise ValueError(f"block_size={block_size} is too long: the data has {len(data)} tokens")
    x = data[: n * block_size].view(n, block_size)
    y = data[1 : n * block_size + 1].view(n, block_size)
    return x, y
