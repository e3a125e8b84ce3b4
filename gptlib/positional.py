"""Chapter 05: telling attention where each token is.

Attention by itself ignores order: shuffle the tokens and its outputs shuffle the
same way. Three ways to give it positions:

- ``LearnedPositionalEmbedding``: a trained vector per position, added to the token
  embedding (GPT-2, and this course's GPT).
- ``SinusoidalPositionalEncoding``: fixed sines and cosines of geometrically spaced
  frequencies, added to the token embedding (the original Transformer).
- ``RotaryEmbedding`` (RoPE): rotate each pair of query and key dimensions by an
  angle proportional to the position, so that query . key depends only on the
  relative offset (Llama and most recent models).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _check_length(T: int, block_size: int) -> None:
    if T > block_size:
        raise ValueError(f"sequence length {T} is longer than block_size {block_size}")


class LearnedPositionalEmbedding(nn.Module):
    """One trainable vector per position ``0 .. block_size - 1``, added to the input."""

    def __init__(self, block_size: int, n_embd: int):
        super().__init__()
        self.block_size = block_size
        self.table = nn.Embedding(block_size, n_embd)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x`` (B, T, n_embd) -> ``x`` plus the vectors of positions ``offset .. offset+T-1``."""
        T = x.shape[1]
        _check_length(offset + T, self.block_size)
        return x + self.table(torch.arange(offset, offset + T, device=x.device))


def sinusoidal_encoding(T: int, n_embd: int, base: float = 10000.0) -> torch.Tensor:
    """``(T, n_embd)``: ``PE[t, 2i] = sin(t w_i)``, ``PE[t, 2i+1] = cos(t w_i)``.

    The frequencies fall geometrically: ``w_i = base^(-2i/n_embd)``.
    """
    if n_embd % 2 != 0:
        raise ValueError(f"sinusoidal encoding needs an even n_embd, got {n_embd}")
    positions = torch.arange(T, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    frequencies = base ** (-torch.arange(0, n_embd, 2, dtype=torch.float32) / n_embd)  # (n_embd/2,)
    angles = positions * frequencies  # (T, n_embd/2)
    pe = torch.zeros(T, n_embd)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """The fixed encoding of "Attention Is All You Need", added to the input. Nothing to train."""

    def __init__(self, block_size: int, n_embd: int, base: float = 10000.0):
        super().__init__()
        self.block_size = block_size
        self.register_buffer("pe", sinusoidal_encoding(block_size, n_embd, base), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        _check_length(T, self.block_size)
        return x + self.pe[:T]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, applied to queries and keys (not added to the input).

    Dimensions ``(2i, 2i+1)`` of a vector at position ``t`` are rotated by the angle
    ``t * theta_i``, with ``theta_i = base^(-2i/head_size)``. A rotation by ``m`` and one
    by ``n`` leave a dot product that depends only on ``m - n``.
    """

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0):
        super().__init__()
        if head_size % 2 != 0:
            raise ValueError(f"rotary embedding needs an even head_size, got {head_size}")
        self.block_size = block_size
        theta = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        angles = torch.arange(block_size, dtype=torch.float32).unsqueeze(1) * theta  # (block, hs/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` (..., T, head_size) as if its first position were ``offset``."""
        T = x.shape[-2]
        _check_length(offset + T, self.block_size)
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
        return rotated.flatten(-2)  # interleave back: (..., T, hs/2, 2) -> (..., T, hs)
