"""The hand-written GPT (backprop_course.gpt.manual) against autograd and lesson 11's model."""

from __future__ import annotations

import pytest
import torch

from backprop_course.device import torch_threads
from backprop_course.gpt import GPT, GPTConfig, manual


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one torch thread is fastest on a busy machine."""
    with torch_threads(1):
        yield


CONFIG = GPTConfig(vocab_size=9, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=True)


def _batch(seed=0, B=3, T=6, V=9):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (B, T), generator=g)
    idx[-1, -1] = idx[0, 0]  # a repeated token
    return idx, torch.randint(0, V, (B, T), generator=g), g


def _scaled_params(seed=0):
    params = manual.init_params(CONFIG, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    return {
        n: p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()
    }


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_backward_matches_autograd_in_float64(dropout):
    """Every parameter's hand-written gradient equals autograd's to 1e-10 (with dropout too)."""
    params = _scaled_params()
    idx, targets, g = _batch()
    keep = manual.dropout_mask((3, 6, 8), dropout, g) if dropout else None
    loss, cache = manual.gpt_forward(params, idx, targets, 2, dropout=dropout, keep=keep)
    grads = manual.gpt_backward(cache)
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    ref = manual.autograd_loss(leaves, idx, targets, 2, dropout=dropout, keep=keep)
    want = dict(zip(leaves, torch.autograd.grad(ref, list(leaves.values()))))
    assert set(grads) == set(params) == set(manual.backward_order(2))
    assert abs(float(loss) - float(ref.detach())) < 1e-12
    for name in params:
        scale = float(want[name].abs().max())
        assert float((grads[name] - want[name]).abs().max()) <= 1e-10 * scale, name


def test_functional_loss_is_lesson_11_model():
    """autograd_loss on init_params is the loss of GPT(config) built under the same seed."""
    params = manual.init_params(CONFIG, seed=3, dtype=torch.float32)
    idx, targets, _ = _batch(1)
    torch.manual_seed(3)
    model = GPT(CONFIG)
    _, loss = model(idx, targets)
    assert torch.allclose(manual.autograd_loss(params, idx, targets, 2), loss, atol=1e-6)
    assert list(params) == manual.parameter_names(2)


def test_embedding_backward_accumulates_repeated_tokens():
    """A token used twice collects both gradients; positions sum over the batch."""
    idx = torch.tensor([[1, 1, 2]])
    dx = torch.arange(6.0).reshape(1, 3, 2)
    dwte, dwpe = manual.embedding_backward(idx, dx, 4, 5)
    assert dwte[1].tolist() == [2.0, 4.0] and dwte[0].tolist() == [0.0, 0.0]
    assert dwpe.shape == (5, 2) and dwpe[3:].abs().sum() == 0


def test_adamw_matches_torch():
    """Three steps of manual.AdamW equal torch's AdamW update (decay on matrices only)."""
    from torch.optim.adamw import adamw  # the functional form of torch.optim.AdamW's step

    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    theirs = {n: p.clone() for n, p in params.items()}
    state = {
        n: (torch.zeros_like(p), torch.zeros_like(p), torch.tensor(0.0)) for n, p in params.items()
    }
    ours = manual.AdamW(params, 0.01, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(3):
        grads = {n: torch.randn(p.shape, generator=g) for n, p in params.items()}
        for n, p in theirs.items():
            m, v, step = state[n]
            adamw(
                [p], [grads[n]], [m], [v], [], [step],
                foreach=False, capturable=False, differentiable=False, fused=None,
                grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
                beta1=0.9, beta2=0.99, lr=0.01, weight_decay=0.1 if p.dim() >= 2 else 0.0,
                eps=1e-8, maximize=False,
            )  # fmt: skip
        ours.step(grads)
    for n, p in params.items():
        torch.testing.assert_close(theirs[n], p, rtol=1e-5, atol=1e-6)


def test_generate_extends_and_is_seeded():
    """generate adds the asked number of tokens, the same ones for the same generator seed."""
    params = manual.init_params(CONFIG, seed=0)
    start = torch.zeros(1, 1, dtype=torch.long)
    a = manual.generate(params, start, 10, 2, generator=torch.Generator().manual_seed(5))
    b = manual.generate(params, start, 10, 2, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1, 11) and torch.equal(a, b)


def test_cache_bytes_counts_activations_not_parameters():
    """cache_bytes grows with the batch and leaves the parameters out."""
    params = manual.init_params(CONFIG, seed=0)
    small = manual.gpt_forward(params, *_batch(B=1)[:2], 2)[1]
    large = manual.gpt_forward(params, *_batch(B=4)[:2], 2)[1]
    assert 0 < manual.cache_bytes(small) < manual.cache_bytes(large)


def test_init_params_needs_biases():
    """The hand-written GPT refuses a config without biases, saying so."""
    with pytest.raises(ValueError, match="bias=True"):
        manual.init_params(GPTConfig(n_layer=1, n_head=1, n_embd=4, bias=False))
