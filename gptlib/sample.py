"""Chapter 08: making a trained GPT write. Temperature, top-k and top-p (nucleus)
sampling, a seed, streaming, and a KV cache that avoids recomputing the past.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def check_sampling(vocab_size: int, temperature: float = 1.0, top_k=None, top_p=None) -> None:
    """Raise ValueError, with a one-line message, for settings that cannot be sampled with."""
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be a number > 0, got {temperature}")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def check_window_shift(block_size: int, window_shift: int | None = None) -> int:
    """The window shift to use (default: half a block); ValueError if impossible."""
    shift = max(1, block_size // 2) if window_shift is None else window_shift
    if isinstance(shift, bool) or not isinstance(shift, int) or not 1 <= shift <= block_size:
        raise ValueError(f"window_shift must be a whole number from 1 to block_size "
                         f"({block_size}), got {window_shift!r}")
    return shift


def check_prompt_ids(idx: torch.Tensor, vocab_size: int) -> None:
    """Raise ValueError unless ``idx`` is a (B, T) tensor of at least one token id, each in the vocabulary."""
    if idx.dim() != 2 or idx.shape[1] == 0 or idx.is_floating_point() or idx.is_complex():
        raise ValueError(f"the prompt must be a (batch, time) tensor of token ids with at least one "
                         f"token, got {idx.dtype} of shape {tuple(idx.shape)}")
    low, high = idx.min().item(), idx.max().item()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"the prompt's token ids must be from 0 to {vocab_size - 1} (the model's "
                         f"vocabulary), got {low if low < 0 else high}")


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
    window_shift: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` new tokens, each of shape (B, 1), as they are drawn.

    The model reads a window of at most ``block_size`` tokens. When a new token
    would overflow it, the window moves on by ``window_shift`` tokens at once
    (default ``block_size // 2``); a prompt longer than the block starts it at
    the prompt's last ``block_size`` tokens.

    Without the cache, every step runs the model on the whole window. With it,
    the first step after the window starts or moves runs the model on the window
    and keeps every layer's keys and values; each later step feeds only the
    newest token. Both read the same tokens at the same positions, so they give
    the same logits and the same text. Why the window jumps instead of sliding by
    one: positions are absolute, so when the window moves every kept key and
    value changes and the cache must be rebuilt. ``window_shift=1`` is the
    classic sliding window, rebuilt at every step once the block is full (exact,
    and no faster than no cache); half a block rebuilds once per
    ``block_size // 2`` tokens.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_prompt_ids(idx, model.config.vocab_size)
    block_size = model.config.block_size
    shift = check_window_shift(block_size, window_shift)
    check_sampling(model.config.vocab_size, temperature, top_k, top_p)
    was_training = model.training
    model.eval()
    try:
        start = max(0, idx.shape[1] - block_size)  # where the window begins
        cache = None
        for _ in range(max_new_tokens):
            if idx.shape[1] - start > block_size:  # full: move the window on
                start += shift
                cache = None
            if not use_cache:
                logits, _ = model(idx[:, start:])
            elif cache is None:  # (re)build the cache from the whole window
                cache = model.new_cache()
                logits, _ = model(idx[:, start:], cache=cache)
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
    """Yield the text a model writes after ``prompt``, token by token (a character each for a
    character model)."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one character to start from")
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    if not hasattr(tokenizer, "token_bytes"):  # one character per token
        for token in stream(model, idx, max_new_tokens, **kwargs):
            yield tokenizer.decode(token[0].tolist())
        return
    # Byte-level tokens (chapter 11): a character's bytes may come in several tokens, so
    # the text is written as soon as its bytes are complete.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in stream(model, idx, max_new_tokens, **kwargs):
        text = decoder.decode(b"".join(tokenizer.token_bytes(token[0].tolist())))
        if text:
            yield text
    rest = decoder.decode(b"", final=True)
    if rest:
        yield rest


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, **kwargs) -> str:
    """``prompt`` followed by what the model writes."""
    return prompt + "".join(stream_text(model, tokenizer, prompt, max_new_tokens, **kwargs))
