"""Worked answers to the exercises of chapter 09 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/09_evaluation.py
"""

import math

import torch

from gptlib.checkpoint import load_checkpoint
from gptlib.data import load_dataset
from gptlib.evaluate import metrics_from_losses, token_losses, unigram_losses


def exercise_1() -> float:
    """Bits per character of a sub-word model: 3.30 nats x 1,000 tokens over 4,100 characters."""
    total_nats = 3.30 * 1000
    return total_nats / 4100 / math.log(2)  # 1.161: per character, far better than 2.18


def exercise_2(train_data: torch.Tensor, val_data: torch.Tensor, vocab_size: int) -> float:
    """The unigram's perplexity: exp of its mean loss."""
    return metrics_from_losses(unigram_losses(train_data, val_data, vocab_size)).perplexity


def exercise_3() -> str:
    """One character of context is the bigram's situation."""
    return "bigram (counts)"


def exercise_4(text: str, losses: torch.Tensor, val_start: int, k: int = 10) -> list[str]:
    """The k hardest validation characters, each after the 30 characters before it.

    losses[i] predicts the character at val_start + i + 1 of the file.
    """
    found = []
    for i in losses.topk(k).indices.tolist():
        at = val_start + i + 1
        found.append(f"{text[at - 30 : at]!r} -> {text[at]!r} ({losses[i]:.1f} nats)")
    return found


if __name__ == "__main__":
    text, tokenizer, train_data, val_data = load_dataset()
    print(f"1. {exercise_1():.4f} bits per character")
    print(f"2. unigram perplexity {exercise_2(train_data, val_data, tokenizer.vocab_size):.2f}")
    print(f"3. {exercise_3()}")
    model = load_checkpoint("assets/shakespeare-laptop").model
    print("4.", *exercise_4(text, token_losses(model, val_data), len(train_data)), sep="\n   ")
