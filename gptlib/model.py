"""Chapter 06: the GPT. Token and position embeddings, a stack of transformer blocks
(pre-LayerNorm multi-head attention and a feed-forward network, each with a residual
connection), a final LayerNorm, and a linear head to logits over the vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.attention import MultiHeadAttention
from gptlib.positional import LearnedPositionalEmbedding


@dataclass
class GPTConfig:
    """The shape of a GPT. The defaults are the course's full (``gpu`` preset) model."""

    vocab_size: int = field(default=65, metadata={"help": "number of distinct tokens"})
    block_size: int = field(default=256, metadata={"help": "the longest context the model reads"})
    n_layer: int = field(default=6, metadata={"help": "transformer blocks"})
    n_head: int = field(default=6, metadata={"help": "attention heads per block"})
    n_embd: int = field(default=384, metadata={"help": "width of the residual stream"})
    dropout: float = field(default=0.2, metadata={"help": "dropout probability in training"})
    # GPT-2's switches (chapter 12). The defaults are the course's GPT; GPT-2 turns on
    # the first two and uses tanh.
    qkv_bias: bool = field(default=False, metadata={
        "help": "biases on the query, key and value projections (GPT-2: yes)"})
    tied_head: bool = field(default=False, metadata={
        "help": "the output layer is the token embedding, reused, without bias (GPT-2: yes)"})
    head_bias: bool = field(default=True, metadata={
        "help": "a bias on the output layer (GPT-2: no; a tied head never has one)"})
    gelu: str = field(default="exact", metadata={
        "help": "GELU: exact (with erf) or tanh (GPT-2's approximation)"})
    layernorm_eps: float = field(default=1e-5, metadata={"help": "LayerNorm's epsilon"})

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
        if not 0.0 <= self.dropout < 1.0:  # also refuses NaN
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.gelu not in ("exact", "tanh"):
            raise ValueError(f"gelu must be exact or tanh, got {self.gelu!r}")
        if not 0.0 < self.layernorm_eps < 1.0:
            raise ValueError(f"layernorm_eps must be a small positive number, got {self.layernorm_eps!r}")

    def __repr__(self) -> str:
        """The shape, then only those of GPT-2's switches that are not at their default."""
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name in BASE_FIELDS or getattr(self, f.name) != f.default]
        return f"GPTConfig({', '.join(shown)})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {', '.join(unknown)}")
        return cls(**values)


BASE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout")


class FeedForward(nn.Module):
    """Per position, independently: widen to 4 x n_embd, GELU, narrow back. "Thinking" after "talking"."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """One transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, eps=config.layernorm_eps)
        self.attn = MultiHeadAttention(
            config.n_embd, config.n_head, config.block_size, dropout=config.dropout,
            qkv_bias=config.qkv_bias,
        )
        self.ln2 = nn.LayerNorm(config.n_embd, eps=config.layernorm_eps)
        self.ffwd = FeedForward(config)

    def forward(self, x: torch.Tensor, return_weights: bool = False,
                cache: KVCache | None = None, layer: int = 0):
        attended = self.attn(self.ln1(x), return_weights=return_weights, cache=cache, layer=layer)
        if return_weights:
            attended, weights = attended
        x = x + attended
        x = x + self.ffwd(self.ln2(x))
        return (x, weights) if return_weights else x


class KVCache:
    """The keys and values of every layer for the positions a model has already read.

    Generation (chapter 08) feeds the model one new token at a time; each attention
    layer appends the new position's key and value here and attends to all of them,
    so nothing already read is computed again. ``length`` positions are held, at most
    ``block_size``.
    """

    def __init__(self, n_layer: int, block_size: int):
        self.block_size = block_size
        self.keys: list[torch.Tensor | None] = [None] * n_layer    # each (B, n_head, length, head_size)
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        return self.length_of(0)

    def length_of(self, layer: int) -> int:
        """How many positions ``layer`` holds (a layer updated this step holds the new ones too)."""
        return 0 if self.keys[layer] is None else self.keys[layer].shape[2]

    def check_room(self, n_new: int, layer: int = 0) -> None:
        """Raise, changing nothing, if ``n_new`` more positions would not fit in ``layer``."""
        held = self.length_of(layer)
        if held + n_new > self.block_size:
            raise ValueError(f"the cache holds {held} positions: {n_new} more would pass "
                             f"block_size {self.block_size}")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append the new positions' keys and values of ``layer``; return all of that layer's."""
        self.check_room(k.shape[2], layer)
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = LearnedPositionalEmbedding(config.block_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layernorm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size,
                                 bias=config.head_bias and not config.tied_head)
        self.apply(self._init_weights)
        if config.tied_head:  # one matrix both reads tokens in and scores them out
            self.lm_head.weight = self.token_embedding.weight
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

    @classmethod
    def from_pretrained(cls, name: str, **kwargs) -> "GPT":
        """GPT-2 (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``) from the Hugging Face
        Hub, or a local GPT-2 folder: see :func:`gptlib.pretrained.from_pretrained` (chapter 12)."""
        from gptlib.pretrained import from_pretrained  # chapter 12 builds on this module

        return from_pretrained(name, **kwargs)

    def num_parameters(self, include_position_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_position_embedding:
            n -= self.position_embedding.table.weight.numel()
        return n

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None):
        """``idx`` (B, T) token ids -> ``(logits, loss)``; logits are (B, T, vocab_size).

        ``loss`` is the mean cross-entropy against ``targets`` (B, T), or None; a target
        of -100 is left out of the mean (chapter 13 masks a prompt's positions that way).
        ``cache`` (generation with a KV cache, chapter 08): ``idx`` holds only the
        tokens that follow the ``cache.length`` positions already read.
        """
        if cache is not None:
            cache.check_room(idx.shape[1])
        elif idx.shape[1] > self.config.block_size:
            raise ValueError(f"sequence length {idx.shape[1]} is longer than "
                             f"block_size {self.config.block_size}")
        logits = self.lm_head(self.hidden_states(idx, cache=cache))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """What the head reads: the residual stream after the last block and ``ln_f``, (B, T, n_embd).

        Chapter 13 puts a classifier on these instead of the language-model head.
        """
        offset = 0 if cache is None else cache.length
        x = self.dropout(self.position_embedding(self.token_embedding(idx), offset=offset))
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache, layer=i)
        return self.ln_f(x)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.block_size)

    @torch.no_grad()
    def attention_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights: ``(n_layer, B, n_head, T, T)``; each row sums to 1."""
        x = self.position_embedding(self.token_embedding(idx))
        weights = []
        for block in self.blocks:
            x, w = block(x, return_weights=True)
            weights.append(w)
        return torch.stack(weights)

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
