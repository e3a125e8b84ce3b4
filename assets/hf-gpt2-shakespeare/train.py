"""Train a small GPT-2 on Tiny Shakespeare with Hugging Face transformers' own model code.

    OMP_NUM_THREADS=1 .venv/bin/python assets/hf-gpt2-shakespeare/train.py --minutes 25

Chapter 12 loads this model into the course's GPT: weights that another library trained,
in another library's format. The model is ``transformers.GPT2LMHeadModel`` (GPT-2's
architecture: fused query/key/value with biases, Conv1D layers, tanh GELU, tied head) at a
small size; the tokens are chapter 11's byte-level BPE of 1,024 tokens, trained on the
training split. The loop is a plain PyTorch one (AdamW, warmup and cosine, clipping); the
number of steps is what fits in ``--minutes`` at the step time measured first.

Writes, into this folder, atomically and again at every evaluation (an interrupted run
keeps its last good model): ``config.json`` + ``model.safetensors`` (16-bit weights, as
``save_pretrained`` writes them), ``tokenizer.bpe`` (``BPETokenizer.save``) and
``training.json`` (the command, the settings, the losses).
"""

import argparse
import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from gptlib.data import get_batch
from gptlib.tokenizers import tokenize_dataset

HERE = Path(__file__).resolve().parent


def save(model, tokenizer, record: dict) -> None:
    """Write the model (16-bit), the tokenizer and the record; replace the old files only
    once the new ones are whole."""
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        copy.deepcopy(model).half().save_pretrained(tmp)
        tokenizer.save(Path(tmp) / "tokenizer.bpe")
        (Path(tmp) / "training.json").write_text(json.dumps(record, indent=1) + "\n")
        for name in ("config.json", "model.safetensors", "tokenizer.bpe", "training.json"):
            os.chmod(Path(tmp) / name, 0o644)
            (Path(tmp) / name).replace(HERE / name)  # a rename within one folder: atomic


@torch.no_grad()
def estimate(model, data, batch_size: int, block: int, iters: int = 20) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(iters):
        x, y = get_batch(data, batch_size, block, generator=generator)
        losses.append(F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = tokenize_dataset("bpe-1024")
    config = GPT2Config(vocab_size=data.tokenizer.vocab_size, n_positions=128, n_embd=192,
                        n_layer=4, n_head=4, activation_function="gelu_new", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(1337)
    model = GPT2LMHeadModel(config).train()
    batch, block, lr, min_lr, warmup = 16, 128, 2e-3, 2e-4, 100
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(1337)

    def step(i: int, steps: int) -> float:
        progress = min(1.0, max(0.0, (i - warmup) / max(1, steps - warmup)))
        rate = lr * (i + 1) / warmup if i < warmup else \
            min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr)
        for group in optimizer.param_groups:
            group["lr"] = rate
        x, y = get_batch(data.train, batch, block, generator=generator)
        loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    started = time.perf_counter()
    for i in range(20):  # measure the step time, then fit the steps in the budget
        step(i, 10**9)
    per_step = (time.perf_counter() - started) / 20
    steps = max(200, int(args.minutes * 60 / per_step))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {per_step * 1e3:.0f} ms a step "
          f"-> {steps} steps")
    record = {"command": f"OMP_NUM_THREADS=1 python assets/hf-gpt2-shakespeare/train.py "
                         f"--minutes {args.minutes:g}",
              "transformers_config": config.to_dict(), "batch_size": batch, "block_size": block,
              "learning_rate": lr, "min_lr": min_lr, "warmup": warmup, "weight_decay": 0.1,
              "steps": steps, "step_ms": per_step * 1e3, "history": []}
    for i in range(20, steps):
        loss = step(i, steps)
        if (i + 1) % 250 == 0 or i + 1 in (50, steps):
            val = estimate(model, data.val, batch, block)
            record["history"].append({"step": i + 1, "train_loss": loss, "val_estimate": val,
                                      "minutes": (time.perf_counter() - started) / 60})
            record["steps_done"] = i + 1
            save(model, data.tokenizer, record)
            print(f"step {i + 1}: train {loss:.3f}, val {val:.3f} (estimate), "
                  f"{(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
