"""Chapter 06: the GPT. Token and position embeddings, a stack of transformer blocks
(pre-LayerNorm multi-head attention and a feed-forward network, each with a residual
connection), a final LayerNorm, and a linear head to logits over the vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.attention import MultiHeadAttention
from gptlib.positional import LearnedPositionalEmbedding


@dataclass
class GPTConfig:
    """The shape of a GPT. The defaults are the course's full (``gpu`` preset) model."""

    vocab_size: int = 65
    block_size: int = 256  # the longest context the model can read
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2

    def __post_init__(self):
        for f in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f} must be a positive whole number, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {', '.join(unknown)}")
        return cls(**values)


class FeedForward(nn.Module):
    """Per position, independently: widen to 4 x n_embd, GELU, narrow back. "Thinking" after "talking"."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """One transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = MultiHeadAttention(
            config.n_embd, config.n_head, config.block_size, dropout=config.dropout
        )
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.ffwd = FeedForward(config)

    def forward(self, x: torch.Tensor, return_weights: bool = False, cache: dict | None = None):
        attended = self.attn(self.ln1(x), return_weights=return_weights, cache=cache)
        if return_weights:
            attended, weights = attended
        x = x + attended
        x = x + self.ffwd(self.ln2(x))
        return (x, weights) if return_weights else x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = LearnedPositionalEmbedding(config.block_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.apply(self._init_weights)
        # GPT-2: the layers that write into the residual stream start smaller, by
        # 1/sqrt(2 * n_layer), so that the stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("ffwd.proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, include_position_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_position_embedding:
            n -= self.position_embedding.table.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        return_attention: bool = False,
        cache: list[dict] | None = None,
    ):
        """``idx`` (B, T) token ids -> ``(logits, loss)``; logits are (B, T, vocab_size).

        ``loss`` is the mean cross-entropy against ``targets`` (B, T), or None.
        With ``return_attention`` a third item is the list of every layer's
        attention weights, each (B, n_head, T, T). ``cache`` is a list of one dict
        per layer for generation with a KV cache (``gptlib.sample``): ``idx`` then
        holds only the new tokens.
        """
        B, T = idx.shape
        offset = 0 if not cache or "k" not in cache[0] else cache[0]["k"].shape[2]
        if offset + T > self.config.block_size:
            raise ValueError(
                f"sequence length {offset + T} is longer than block_size {self.config.block_size}"
            )
        x = self.position_embedding(self.token_embedding(idx), offset=offset)
        x = self.dropout(x)
        attention = []
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache[i]
            x = block(x, return_weights=return_attention, cache=layer_cache)
            if return_attention:
                x, weights = x
                attention.append(weights)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return (logits, loss, attention) if return_attention else (logits, loss)

    @torch.no_grad()
    def attention_scores(self, idx: torch.Tensor) -> torch.Tensor:
        """Every layer's and head's scores before mask and softmax: ``(n_layer, n_head, T, T)``.

        For one sequence ``idx`` of shape (1, T); this is what the attention explorer draws.
        """
        x = self.position_embedding(self.token_embedding(idx))
        scores = []
        for block in self.blocks:
            scores.append(block.attn.scores(block.ln1(x))[0])
            x = block(x)
        return torch.stack(scores)
