"""A character-level GPT, the decoder-only transformer of GPT-2, in plain PyTorch modules.

    tokens (B, T) -> token + position embeddings (B, T, C)
                  -> n_layer x Block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
                  -> final layer norm -> lm_head (weights tied to the token embedding)
                  -> logits (B, T, vocab_size)

Attention runs either fused, through ``torch.nn.functional.scaled_dot_product_attention``
(flash attention on a GPU: the (T, T) score matrix is never stored), or explicitly,
through ``backprop_course.transformer.causal_attention`` from lesson 10. Both compute
the same function; the fused one is faster and lighter on memory.

Initialisation follows GPT-2: normal(0, 0.02) weights, zero biases, and the
projections that write into the residual stream scaled down by sqrt(2 * n_layer)
so the residual's variance does not grow with depth.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from backprop_course.gpt.config import GPTConfig
from backprop_course.gpt.sample import next_token_probs
from backprop_course.transformer import causal_attention, merge_heads, split_heads

__all__ = ["GPT", "MLP", "Block", "CausalSelfAttention"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and the past."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.fused = config.fused_attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # (B, H, T, d)
        if self.fused:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # Lesson 10's explicit version (it has no dropout on the attention weights).
            y = causal_attention(q, k, v)
        return self.resid_dropout(self.c_proj(merge_heads(y)))


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """One pre-norm transformer block: attention then MLP, each added to the residual."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The whole model. ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embedding
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix, two uses
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # writes into the residual stream
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` leaves out the position embedding.

        The token embedding stays in: it is tied to ``lm_head``, a real matmul
        of every step (as nanoGPT counts).
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab)`` and, given ``targets`` ``(B, T)``, the mean cross-entropy."""
        B, T = idx.shape
        if self.config.block_size < T:
            raise ValueError(
                f"sequence of length {T} is longer than GPTConfig.block_size="
                f"{self.config.block_size}"
            )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1).float(), targets.reshape(B * T))
        return logits, loss

    def configure_optimizer(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.99),
        device_type: str = "cpu",
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (>= 2-D: linear weights, embeddings) only.

        Biases and layer-norm gains are left undecayed: shrinking them towards
        zero does not regularise anything useful. The fused AdamW kernel (one
        pass over all parameters instead of several small ops per tensor) is
        used where this torch has it for the device; else the default one.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if (
            device_type in ("cuda", "cpu")
            and "fused" in inspect.signature(torch.optim.AdamW).parameters
        ):
            try:
                return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True)
            except (RuntimeError, ValueError):  # older torch: no fused kernel for this device
                pass
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` sampled tokens, one at a time.

        Each step looks at the last ``block_size`` tokens, divides the final
        logits by ``temperature`` (below 1: bolder favourites; 0: always the
        most likely token), keeps only the ``top_k`` most likely tokens when
        given, and samples from the softmax. ``generator`` makes it repeatable.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits, _ = self(context)
            logits = logits[:, -1, :].float()
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = next_token_probs(logits, temperature, top_k)
                if generator is not None and generator.device != probs.device:
                    probs = probs.to(generator.device)
                next_token = torch.multinomial(probs, 1, generator=generator).to(idx.device)
            idx = torch.cat((idx, next_token), dim=1)
        return idx
