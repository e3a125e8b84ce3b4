"""Chapter 08: making a trained GPT write. Temperature, top-k and top-p (nucleus)
sampling, a seed, streaming, and a KV cache that avoids recomputing the past.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def check_sampling(vocab_size: int, temperature: float = 1.0, top_k=None, top_p=None) -> None:
    """Raise ValueError, with a one-line message, for settings that cannot be sampled with."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k=None, top_p=None):
    """Reshape a distribution before drawing from it. ``logits``: (B, vocab_size).

    - temperature: divide the logits; below 1 sharpens, above 1 flattens;
    - top_k: keep only the k most likely tokens;
    - top_p: keep the smallest set of most likely tokens whose probabilities add up to p.

    Removed tokens get logit -inf, i.e. probability 0.
    """
    logits = logits / temperature
    if top_k is not None:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token if the tokens before it already reach top_p (the first always stays).
        drop_sorted = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None) -> torch.Tensor:
    """Draw one token per row from ``logits`` (B, vocab_size): returns (B, 1)."""
    probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def stream(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` new tokens, each of shape (B, 1), as they are drawn.

    Without the cache, every step runs the model on the whole context (its last
    ``block_size`` tokens). With it, the first step runs the model on the prompt
    and keeps every layer's keys and values; each later step feeds only the newest
    token. Both give the same logits. Once the context is longer than
    ``block_size``, the window moves by one at every step and, since positions are
    absolute, every kept key and value changes with it: the cache is rebuilt from
    the window at each step, which is exact but no faster than no cache.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    block_size = model.config.block_size
    check_sampling(model.config.vocab_size, temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    try:
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = model(idx[:, -block_size:])
            elif cache is None or cache[0]["k"].shape[2] == block_size:
                cache = [{} for _ in model.blocks]  # (re)build from the whole window
                logits, _ = model(idx[:, -block_size:], cache=cache)
            else:
                logits, _ = model(idx[:, -1:], cache=cache)  # only the newest token
            next_idx = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_idx], dim=1)
            yield next_idx
    finally:
        model.train(was_training)


def generate(model, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """``idx`` (B, T) followed by ``max_new_tokens`` sampled tokens: (B, T + max_new_tokens)."""
    new = list(stream(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx, *new], dim=1)


def stream_text(model, tokenizer, prompt: str, max_new_tokens: int, **kwargs) -> Iterator[str]:
    """Yield the characters a model writes after ``prompt``, one at a time."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character to start from")
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    for token in stream(model, idx, max_new_tokens, **kwargs):
        yield tokenizer.decode(token[0].tolist())


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, **kwargs) -> str:
    """``prompt`` followed by what the model writes."""
    return prompt + "".join(stream_text(model, tokenizer, prompt, max_new_tokens, **kwargs))
