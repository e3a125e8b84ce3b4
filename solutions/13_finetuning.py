"""Worked answers to the exercises of chapter 13 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/13_finetuning.py
"""

import copy
from pathlib import Path

import torch

from gptlib import finetune as ft
from gptlib.checkpoint import load_checkpoint
from gptlib.data import load_shakespeare

BASE = Path(__file__).resolve().parents[1] / "assets" / "shakespeare-laptop"


def exercise_1() -> int:
    """LoRA of rank 2 on query and value, in each of the 4 blocks: built and counted."""
    model = copy.deepcopy(load_checkpoint(BASE).model)
    wrapped = ft.add_lora(model, rank=2, alpha=4.0, targets=("query", "value"))
    return sum(layer.A.numel() + layer.B.numel() for layer in wrapped)


def exercise_2(lora: ft.LoRALinear) -> torch.Tensor:
    """W + (alpha / rank) B A, from the layer's parts."""
    return lora.base.weight + (lora.alpha / lora.rank) * lora.B @ lora.A


def exercise_3(example: ft.ReplyExample) -> int:
    """The targets that count: those that are not -100."""
    _, y = ft.collate_replies([example], load_checkpoint(BASE).tokenizer)
    return int((y != ft.IGNORE).sum())


def exercise_4() -> float:
    """Always Coriolanus (play 0), scored on the validation speeches."""
    val = ft.play_splits(ft.speeches(load_shakespeare()))["val"]
    return sum(s.play == 0 for s in val) / len(val)


def exercise_5() -> int:
    """The classifier reads lengths - 1: the last real character of each row (the end mark's)."""
    _, lengths = ft.collate_speeches(["Go.", "What say you, my lord?"], load_checkpoint(BASE).tokenizer, 128)
    return int(lengths[0]) - 1


if __name__ == "__main__":
    torch.manual_seed(0)
    layer = ft.LoRALinear(torch.nn.Linear(256, 256), rank=8, alpha=16.0)
    torch.nn.init.normal_(layer.B, std=0.02)
    example = ft.ReplyExample("A said:\nhi\nB replies:\n", "Yes, my lord.\n\n", 0)
    print("1.", f"{exercise_1():,}")
    print("2.", torch.allclose(exercise_2(layer), layer.merged().weight, atol=1e-6))
    print("3.", exercise_3(example))
    print("4.", f"{exercise_4():.4f}")
    print("5.", exercise_5())
