"""Chapters 03-04: self-attention, from averaging the past to multi-head attention.

Every module here can return its attention weights (for the heatmaps). Without
that request it takes PyTorch's fused ``scaled_dot_product_attention``, which
computes the same numbers faster but does not return the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.positional import RotaryEmbedding, sinusoidal_encoding

# --- the averaging trick, three ways (chapter 03) ----------------------------


def average_loop(x: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = mean(x[b, 0..t])``, one position at a time."""
    B, T, C = x.shape
    out = torch.zeros_like(x)
    for b in range(B):
        for t in range(T):
            out[b, t] = x[b, : t + 1].mean(dim=0)
    return out


def average_matmul(x: torch.Tensor) -> torch.Tensor:
    """The same average as one matrix product with a row-normalised lower triangle."""
    T = x.shape[1]
    weights = torch.tril(torch.ones(T, T, device=x.device, dtype=x.dtype))
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights @ x  # (T, T) @ (B, T, C) -> (B, T, C)


def average_softmax(x: torch.Tensor) -> torch.Tensor:
    """The same again as a softmax over equal scores, with the future masked to -inf."""
    T = x.shape[1]
    scores = torch.zeros(T, T, device=x.device, dtype=x.dtype)
    weights = F.softmax(scores.masked_fill(~causal_mask(T, device=x.device), float("-inf")), dim=-1)
    return weights @ x


# --- attention weights from queries and keys ---------------------------------


def causal_mask(T: int, T_keys: int | None = None, device=None) -> torch.Tensor:
    """``(T, T_keys)`` booleans, True where a query may look at a key: the key is not later.

    Usually ``T_keys == T``: the lower triangle. With a KV cache the ``T`` queries are
    the last ``T`` of ``T_keys`` positions, so query ``i`` sits at ``T_keys - T + i``.
    """
    T_keys = T if T_keys is None else T_keys
    return torch.ones(T, T_keys, dtype=torch.bool, device=device).tril(diagonal=T_keys - T)


def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Scaled affinities ``q . k / sqrt(head_size)``, shape ``(..., T, T)``.

    Without the scale their variance grows with ``head_size`` and the softmax
    saturates towards one-hot (chapter 04).
    """
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def attention_weights(
    scores: torch.Tensor, causal: bool = True, temperature: float = 1.0
) -> torch.Tensor:
    """Softmax of ``scores / temperature`` over the keys, the future masked if ``causal``.

    Each row sums to 1: how much one query position takes from each key position.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scores = scores / temperature
    if causal:
        mask = causal_mask(scores.shape[-2], scores.shape[-1], device=scores.device)
        scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1)


def _check_length(T: int, block_size: int) -> None:
    if T > block_size:
        raise ValueError(f"sequence length {T} is longer than block_size {block_size}")


class Head(nn.Module):
    """One head of self-attention.

    Each position emits a query ("what am I looking for?"), a key ("what do I
    contain?") and a value ("what do I give if you attend to me?"). A position's
    output is the average of the values, weighted by the softmax of its query's
    scaled dot products with the keys.
    """

    def __init__(
        self,
        n_embd: int,
        head_size: int,
        block_size: int,
        dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.block_size = block_size
        self.causal = causal

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled query-key affinities before mask and softmax: ``(B, T, T)``."""
        return attention_scores(self.query(x), self.key(x))

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """``x`` (B, T, n_embd) -> (B, T, head_size); with ``return_weights``, also (B, T, T)."""
        _check_length(x.shape[1], self.block_size)
        q, k, v = self.query(x), self.key(x), self.value(x)
        if not return_weights:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout.p if self.training else 0.0, is_causal=self.causal
            )
        weights = attention_weights(attention_scores(q, k), causal=self.causal)
        out = self.dropout(weights) @ v
        return out, weights


class MultiHeadAttention(nn.Module):
    """``n_head`` heads side by side, their outputs concatenated and projected.

    Head ``h`` owns rows ``h * head_size : (h + 1) * head_size`` of the query, key
    and value projections, so all heads are computed by three matrix products
    instead of ``3 * n_head`` small ones; the result is the same as running
    separate :class:`Head` modules and concatenating (chapter 03 checks it).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        dropout: float = 0.0,
        causal: bool = True,
        qkv_bias: bool = False,
        rotary: bool = False,
    ):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.head_size = n_embd // n_head
        # RoPE (chapter 05): rotate each head's queries and keys by their positions.
        self.rope = RotaryEmbedding(self.head_size, block_size) if rotary else None
        self.key = nn.Linear(n_embd, n_embd, bias=qkv_bias)  # GPT-2 has biases here (chapter 12)
        self.query = nn.Linear(n_embd, n_embd, bias=qkv_bias)
        self.value = nn.Linear(n_embd, n_embd, bias=qkv_bias)
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.block_size = block_size
        self.causal = causal

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, n_embd) -> (B, n_head, T, head_size)
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)

    def _queries_and_keys(self, x: torch.Tensor, offset: int = 0):
        q, k = self._split_heads(self.query(x)), self._split_heads(self.key(x))
        if self.rope is not None:  # the first position of x is position `offset` of the text
            q, k = self.rope(q, offset), self.rope(k, offset)
        return q, k

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled query-key affinities of every head before mask and softmax: ``(B, n_head, T, T)``."""
        return attention_scores(*self._queries_and_keys(x))

    def forward(self, x: torch.Tensor, return_weights: bool = False, cache=None, layer: int = 0):
        """``x`` (B, T, n_embd) -> (B, T, n_embd); with ``return_weights``, also (B, n_head, T, T).

        ``cache`` (generation, chapter 08): a :class:`gptlib.model.KVCache` that keeps
        the keys and values of the positions already seen, this module's under index
        ``layer``. ``x`` then holds only the new positions, and they attend to the
        cached ones too, so nothing is recomputed.
        """
        B, T, C = x.shape
        q, k = self._queries_and_keys(x, offset=0 if cache is None else cache.length_of(layer))
        v = self._split_heads(self.value(x))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        T_keys = k.shape[2]
        _check_length(T_keys, self.block_size)
        if return_weights:
            weights = attention_weights(attention_scores(q, k), causal=self.causal)
            out = self.attn_dropout(weights) @ v
        else:
            weights = None
            # The fused kernel's is_causal assumes queries and keys start together;
            # with cached keys the new queries sit at the end, so pass the mask.
            mask = None
            if self.causal and T > 1 and T_keys > T:
                mask = causal_mask(T, T_keys, device=x.device)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_dropout.p if self.training else 0.0,
                is_causal=self.causal and mask is None and T > 1,
            )
        out = out.transpose(1, 2).reshape(B, T, C)  # concatenate the heads
        out = self.resid_dropout(self.proj(out))
        return (out, weights) if return_weights else out


class AttentionLM(nn.Module):
    """The smallest language model with attention: chapter 02's bigram plus one attention layer.

    Each token's embedding plus a learned vector for its position (chapter 05 says
    why attention needs one) goes through one layer of multi-head attention; what a
    position gathers is added to what it was (a residual connection), and a linear
    layer turns the result into logits over the vocabulary. Chapter 03 trains it to
    look at real attention weights; chapter 04 trains it without the causal mask to
    watch it cheat; chapter 05 compares ``positions``: ``"learned"`` (a trained table,
    the default), ``"none"``, ``"sinusoidal"`` (fixed waves added to the input) and
    ``"rotary"`` (RoPE on the queries and keys).
    """

    POSITIONS = ("learned", "none", "sinusoidal", "rotary")

    def __init__(
        self,
        vocab_size: int,
        n_embd: int = 32,
        n_head: int = 4,
        block_size: int = 32,
        causal: bool = True,
        positions: str = "learned",
    ):
        super().__init__()
        if positions not in self.POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(self.POSITIONS)}, got {positions!r}")
        self.block_size = block_size
        self.positions = positions
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        if positions == "learned":
            self.position_embedding = nn.Embedding(block_size, n_embd)
        elif positions == "sinusoidal":  # fixed, so a buffer, not saved with the weights
            self.register_buffer("sinusoids", sinusoidal_encoding(block_size, n_embd), persistent=False)
        self.attention = MultiHeadAttention(n_embd, n_head, block_size, causal=causal,
                                            rotary=positions == "rotary")
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        _check_length(T, self.block_size)
        x = self.token_embedding(idx)
        if self.positions == "learned":
            x = x + self.position_embedding(torch.arange(T, device=idx.device))
        elif self.positions == "sinusoidal":
            x = x + self.sinusoids[:T]
        return x  # "none" adds nothing; "rotary" acts inside the attention layer

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.embed(idx)
        x = x + self.attention(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def scores(self, idx: torch.Tensor) -> torch.Tensor:
        """The attention scores of every head before mask and softmax: ``(B, n_head, T, T)``."""
        return self.attention.scores(self.embed(idx))
