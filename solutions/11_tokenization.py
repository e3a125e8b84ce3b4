"""Worked answers to the exercises of chapter 11 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/11_tokenization.py

Exercise 6 is run from the command line (about a minute on two cores):

    python -m gptlib train --preset cpu --tokenizer bpe-512 --out runs/bpe-512
    python -m gptlib eval --checkpoint runs/bpe-512
    python -m gptlib sample --checkpoint runs/bpe-512 --prompt "ROMEO:"
"""

import math
from collections import Counter

import regex

from gptlib.data import load_shakespeare
from gptlib.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, gpt2_tokenizer


def exercise_1(gpt2=None) -> tuple[int, int]:
    """UTF-8 bytes of "日本語" (three per character), and GPT-2's tokens for it."""
    gpt2 = gpt2 or gpt2_tokenizer()
    return len("日本語".encode("utf-8")), len(gpt2.encode("日本語"))


def exercise_2(small: str) -> int:
    """The first merge removes one token per occurrence of the most frequent pair."""
    ids = list(small.encode("utf-8"))
    return Counter(zip(ids, ids[1:])).most_common(1)[0][1]


def exercise_3(n_tokens: int = 1000, block_size: int = 32, stride: int = 16) -> int:
    """Each window reads block_size + 1 tokens; they start at 0, stride, 2 * stride, ..."""
    return (n_tokens - block_size - 1) // stride + 1


def exercise_4(nats_per_token: float, characters_per_token: float) -> float:
    """Bits per character: nats per token, spread over its characters, in bits."""
    return nats_per_token / characters_per_token / math.log(2)


def exercise_5(train_text: str, val_text: str, vocab_size: int = 1024) -> dict[str, float]:
    """Characters per validation token of a BPE trained with each pattern.

    GPT-4's pattern compresses Shakespeare better (2.44 characters per token against
    2.26 at 1,024 tokens): a run of punctuation keeps the line breaks after it as one
    chunk (``":\n"``, ``"?\n\n"``), and nearly every line of a play ends that way. It
    also cuts numbers into groups of at most three digits, which Shakespeare lacks.
    """
    result = {}
    for name, pattern in (("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)):
        tokenizer = BPETokenizer.train(train_text, vocab_size, pattern=pattern)
        result[name] = len(val_text) / len(tokenizer.encode(val_text))
    return result


if __name__ == "__main__":
    text = load_shakespeare()
    n = int(0.9 * len(text))
    print("1.", exercise_1())
    print("2.", exercise_2(text[:10_000]))
    print("3.", exercise_3())
    print("4.", exercise_4(3.0, 2.26))
    print("5.", exercise_5(text[:n], text[n:]))
    line = "ROMEO: 12345 times\n\n  farewell"
    print("   gpt2 chunks:", regex.findall(GPT2_PATTERN, line))
    print("   gpt4 chunks:", regex.findall(GPT4_PATTERN, line))
