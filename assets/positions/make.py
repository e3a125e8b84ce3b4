"""Train chapter 3's attention model again with other positions, at the same budget.

    python assets/positions/make.py             # the three files chapter 5 loads
    python assets/positions/make.py --seeds 3   # and the spread over other seeds (saves nothing more)

Chapter 5 compares four ways of telling attention where each character is. The
learned table is chapter 3's model itself (`assets/attention-lm`); this script
trains the other three, `none`, `sinusoidal` and `rotary`, with exactly its shape,
its training settings and its batches (the same 1,000 steps of 32 windows of 32
characters, drawn from the same seed), and saves each next to this file. The files
hold the weights and, as JSON in their metadata, the shape, the positions and the
training settings.
"""

import argparse
import importlib.util
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from gptlib.attention import AttentionLM
from gptlib.data import load_dataset, write_atomically
from gptlib.train import full_loss, train

HERE = Path(__file__).parent
spec = importlib.util.spec_from_file_location("attention_lm_make", HERE.parent / "attention-lm" / "make.py")
attention_lm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(attention_lm)
SHAPE, CONFIG = attention_lm.SHAPE, attention_lm.CONFIG  # chapter 3's, unchanged
POSITIONS = ("none", "sinusoidal", "rotary")


def train_one(positions: str, seed: int, tokenizer, train_data, val_data):
    """Seed 0 is chapter 3's: its initial weights from torch seed 0, its batches from CONFIG.seed."""
    torch.manual_seed(seed)
    model = AttentionLM(tokenizer.vocab_size, **SHAPE, positions=positions)
    start = time.perf_counter()
    train(model, train_data, val_data, replace(CONFIG, seed=CONFIG.seed + seed), progress=False)
    return model, time.perf_counter() - start


def main(positions, seeds: int):
    text, tokenizer, train_data, val_data = load_dataset()
    for name in positions:
        model, seconds = train_one(name, 0, tokenizer, train_data, val_data)
        out = HERE / f"{name}.safetensors"
        metadata = {"shape": json.dumps(SHAPE), "positions": name,
                    "train_config": json.dumps(CONFIG.to_dict()), "vocab": json.dumps(tokenizer.vocab)}
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        write_atomically(out, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        print(f"{name:>10}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{seconds:.0f} s, full validation loss {full_loss(model, val_data):.4f} -> {out.name}")
    if seeds > 1:  # the learned table too: seed 0 of it is assets/attention-lm
        print(f"full validation loss over seeds 0..{seeds - 1} (initial weights and batches):")
        for name in ("learned", *POSITIONS):
            losses = [full_loss(train_one(name, seed, tokenizer, train_data, val_data)[0], val_data)
                      for seed in range(seeds)]
            print(f"{name:>10}: " + "  ".join(f"{loss:.4f}" for loss in losses)
                  + f"   mean {statistics.mean(losses):.4f}, spread {max(losses) - min(losses):.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("positions", nargs="*", help=f"which to train: {', '.join(POSITIONS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="also train this many seeds of all four")
    args = parser.parse_args()
    for name in args.positions:
        if name not in POSITIONS:
            parser.error(f"unknown positions {name!r}: choose from {', '.join(POSITIONS)}")
    main(args.positions or POSITIONS, args.seeds)
