"""Worked answers to the exercises of chapter 12 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/12_pretrained_weights.py
"""

import json
import struct
from pathlib import Path

import torch

from gptlib.model import GPT, GPTConfig

ASSET = Path(__file__).resolve().parents[1] / "assets" / "hf-gpt2-shakespeare"


def exercise_1() -> int:
    """GPT-2 medium: GPT-2's switches at 24 layers of 1,024 channels (shapes only: meta device)."""
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024,
                              dropout=0.0, qkv_bias=True, tied_head=True, gelu="tanh"))
    return model.num_parameters()


def exercise_2(n_embd: int = 192) -> tuple[int, int]:
    """c_attn's columns are the queries, then the keys, then the values, n_embd each."""
    return 2 * n_embd, 3 * n_embd


def exercise_3(folder: Path = ASSET) -> int:
    """The header: what is left of the file after the 8-byte length and the float16 weights."""
    size = (folder / "model.safetensors").stat().st_size
    header_and_rest = (folder / "model.safetensors").read_bytes()
    header = json.loads(header_and_rest[8 : 8 + struct.unpack("<Q", header_and_rest[:8])[0]])
    numbers = sum(torch.Size(entry["shape"]).numel() for name, entry in header.items()
                  if name != "__metadata__")
    return size - 8 - 2 * numbers


def exercise_4() -> bool:
    """c_fc is (C, 4C) in the file and (4C, C) in ours: untransposed, its shape does not fit."""
    return False


if __name__ == "__main__":
    print("1.", f"{exercise_1():,}")
    print("2.", exercise_2())
    print("3.", exercise_3())
    print("4.", exercise_4())
