"""Chapter 09: how good is a model? The loss of every prediction, and what to make of it.

Any model of the course (``forward(idx) -> (logits, loss)`` with a ``block_size``)
reads a text in non-overlapping windows of ``block_size`` tokens, as chapter 07's
``full_loss`` does, and every token after the first is predicted exactly once.
From those per-token losses come:

- the cross-entropy in **nats** per token (the mean; chapter 07's full loss),
- **bits per character**: the total over the text's characters, divided by ln 2.
  It compares models whose tokens differ (characters here, sub-words in chapter 11):
  the total information a model needs to spell out the text is the same quantity
  whatever pieces it is cut into;
- **perplexity**, ``exp(nats)``: the number of equally likely tokens the model is,
  on average, as unsure as;
- the loss **by position** in the window (how much each extra token of context
  helps), by character of a passage (what the model finds hard), and by play.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptlib.train import model_block_size


@dataclass(frozen=True)
class Metrics:
    """A model's quality over a text. ``tokens`` predictions covering ``characters`` characters."""

    nats: float  # mean cross-entropy per token, natural log
    bits_per_char: float  # total cross-entropy in bits over the characters
    perplexity: float  # exp(nats)
    tokens: int
    characters: int

    def __str__(self) -> str:
        return (f"loss {self.nats:.4f} nats per token, {self.bits_per_char:.4f} bits per "
                f"character, perplexity {self.perplexity:.2f} ({self.tokens:,} predictions)")


def metrics_from_losses(losses: torch.Tensor, characters: int | None = None) -> Metrics:
    """:class:`Metrics` from per-token losses in nats; ``characters`` defaults to one per token."""
    if len(losses) == 0:
        raise ValueError("no predictions to score: the text needs at least 2 tokens")
    total = losses.double().sum().item()  # nats, summed in float64
    tokens = len(losses)
    characters = tokens if characters is None else characters
    if characters <= 0:
        raise ValueError(f"characters must be positive, got {characters}")
    nats = total / tokens
    return Metrics(nats=nats, bits_per_char=total / characters / math.log(2),
                   perplexity=math.exp(nats), tokens=tokens, characters=characters)


@torch.no_grad()
def token_losses(model, data: torch.Tensor, batch_size: int = 64,
                 block_size: int | None = None) -> torch.Tensor:
    """The loss in nats of every prediction over ``data``: shape ``(len(data) - 1,)``.

    ``losses[i]`` is the loss of predicting ``data[i + 1]``. The text is cut into
    non-overlapping windows of ``block_size`` tokens (the last one shorter), and
    inside a window position t sees positions 0..t of that window only: so
    ``losses[i]`` was predicted with ``i % block_size + 1`` tokens of context.
    Their mean is chapter 07's ``full_loss``. ``block_size`` is the model's unless
    given (a model that reads no context, such as the bigram, has none).
    """
    if len(data) < 2:
        raise ValueError("no predictions to score: the text needs at least 2 tokens")
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    T = block_size or model_block_size(model)
    inputs, targets = data[:-1], data[1:]
    n_full = len(inputs) // T
    windows = [(inputs[: n_full * T].view(n_full, T), targets[: n_full * T].view(n_full, T))]
    if len(inputs) % T:  # the shorter last window
        windows.append((inputs[n_full * T:].unsqueeze(0), targets[n_full * T:].unsqueeze(0)))
    losses = []
    for x_all, y_all in windows:
        for b in range(0, len(x_all), batch_size):
            x, y = x_all[b : b + batch_size].to(device), y_all[b : b + batch_size].to(device)
            logits, _ = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
            losses.append(loss.cpu())
    model.train(was_training)
    return torch.cat(losses)


def evaluate(model, data: torch.Tensor, characters: int | None = None, batch_size: int = 64,
             block_size: int | None = None) -> Metrics:
    """Nats, bits per character and perplexity of ``model`` over ``data`` (a whole split).

    ``characters``: how many characters the predicted tokens spell (by default one
    per token, as for the course's character-level models; pass the decoded length
    for a sub-word tokenizer).
    """
    return metrics_from_losses(token_losses(model, data, batch_size, block_size), characters)


def loss_by_position(losses: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean loss at each position of the window, ``(block_size,)``, from :func:`token_losses`.

    Position t is predicted from t + 1 tokens of context; only whole windows count.
    """
    n_full = len(losses) // block_size
    if n_full == 0:
        raise ValueError(f"need at least one whole window of {block_size} predictions, "
                         f"got {len(losses)}")
    return losses[: n_full * block_size].view(n_full, block_size).double().mean(0)


def loss_by_span(losses: torch.Tensor, spans, offset: int = 0) -> dict[str, float]:
    """Mean loss of the predictions whose target lies in each ``(name, start, end)`` span.

    ``losses[i]`` predicts the token at ``offset + i + 1`` (``offset``: where the
    scored text starts in the file the spans count in); spans are half-open.
    """
    targets = torch.arange(len(losses)) + offset + 1
    means = {}
    for name, start, end in spans:
        inside = (targets >= start) & (targets < end)
        if inside.any():
            means[name] = losses[inside].double().mean().item()
    return means


def unigram_losses(train_data: torch.Tensor, data: torch.Tensor, vocab_size: int,
                   smoothing: float = 1.0) -> torch.Tensor:
    """The losses of a model that ignores context: each token with its frequency in
    ``train_data`` (plus ``smoothing``), for every prediction over ``data``."""
    counts = torch.bincount(train_data, minlength=vocab_size).double() + smoothing
    log_probs = torch.log(counts / counts.sum())
    return -log_probs[data[1:]]
