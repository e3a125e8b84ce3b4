"""Chapter 02: the bigram language model, from counts and as a neural network.

A bigram model predicts the next character from the current one alone. Both
models here are ``nn.Module``s with the same interface as the GPT of later
chapters: ``forward(idx, targets=None) -> (logits, loss)``, so one
``generate`` function samples from either.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def bigram_counts(data: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``counts[a, b]`` = how often token ``b`` follows token ``a`` in ``data``."""
    pairs = data[:-1] * vocab_size + data[1:]
    return torch.bincount(pairs, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: ``logits`` (B, T, V), ``targets`` (B, T)."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.view(B * T, V), targets.view(B * T))


class CountBigramModel(nn.Module):
    """The bigram model by counting: P(b | a) = (count(a, b) + k) / sum_b' (count(a, b') + k).

    The smoothing ``k`` ("add-k") keeps unseen pairs possible, so no loss is infinite.
    There is nothing to train; its logits are the log-probabilities.
    """

    def __init__(self, counts: torch.Tensor, smoothing: float = 1.0):
        super().__init__()
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        probs = counts.float() + smoothing
        probs = probs / probs.sum(dim=1, keepdim=True)
        self.register_buffer("log_probs", probs.log())

    @classmethod
    def from_data(cls, data: torch.Tensor, vocab_size: int, smoothing: float = 1.0):
        return cls(bigram_counts(data, vocab_size), smoothing)

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.log_probs[idx]  # (B, T, V)
        loss = None if targets is None else language_model_loss(logits, targets)
        return logits, loss


class BigramLanguageModel(nn.Module):
    """The bigram model as a network: row ``a`` of an embedding table holds the logits of P(. | a)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)
        # Small weights make every next character about equally likely at the
        # start, so the first loss is close to ln(vocab_size).
        nn.init.normal_(self.token_embedding_table.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None if targets is None else language_model_loss(logits, targets)
        return logits, loss


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend each row of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens.

    Each step runs the model on everything so far, keeps the logits of the last
    position, turns them into probabilities and draws one token. A model with a
    ``block_size`` (attention, chapter 03 on; the GPT) reads only the last
    ``block_size`` tokens: it cannot take more.
    """
    block_size = getattr(model, "block_size", None)
    for _ in range(max_new_tokens):
        logits, _ = model(idx if block_size is None else idx[:, -block_size:])
        probs = F.softmax(logits[:, -1, :], dim=-1)  # (B, V)
        next_idx = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_idx], dim=1)
    return idx


@torch.no_grad()
def full_loss(model: nn.Module, data: torch.Tensor) -> float:
    """Mean loss of predicting every token of ``data`` from the one before it.

    A bigram model only looks one character back, so the whole split fits in
    one forward pass as a single long sequence.
    """
    _, loss = model(data[:-1].unsqueeze(0), data[1:].unsqueeze(0))
    return loss.item()
