"""Worked answers to the exercises of chapter 01 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/01_data.py
"""

import torch

from gptlib.data import get_batch, load_dataset


def exercise_1(text: str) -> int:
    """Distinct words, cut on whitespace."""
    return len(set(text.split()))


def exercise_2(text: str) -> set:
    """Characters of the first 90% that the last 10% never uses."""
    n = int(0.9 * len(text))
    return set(text[:n]) - set(text[n:])


def exercise_3(val_data: torch.Tensor) -> int:
    """The largest block_size: a chunk is block_size inputs and one more token for the last target."""
    try:
        get_batch(val_data, 4, len(val_data))
    except ValueError as error:
        print("get_batch says:", error)
    block_size = len(val_data) - 1
    get_batch(val_data, 4, block_size)  # accepted
    return block_size


def exercise_4(train_data: torch.Tensor, block_size: int = 8) -> int:
    """One chunk per start position; torch.randint(len(data) - block_size) draws them."""
    return len(train_data) - block_size


def exercise_5(train_data: torch.Tensor) -> bool:
    """The same seed draws the same batch; another seed another one."""
    x_a, _ = get_batch(train_data, 32, 8, generator=torch.Generator().manual_seed(7))
    x_b, _ = get_batch(train_data, 32, 8, generator=torch.Generator().manual_seed(7))
    x_c, _ = get_batch(train_data, 32, 8, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(x_a, x_c)
    return torch.equal(x_a, x_b)


if __name__ == "__main__":
    text, tokenizer, train_data, val_data = load_dataset()
    print("1.", f"{exercise_1(text):,}")
    print("2.", sorted(exercise_2(text)))
    print("3.", exercise_3(val_data))
    print("4.", f"{exercise_4(train_data):,}", f"(about {len(train_data) / (32 * 8):,.0f} batches of 32)")
    print("5.", exercise_5(train_data))
