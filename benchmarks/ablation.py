"""What each piece of the transformer buys: the `cpu` GPT with one piece removed at a time.

    .venv/bin/python benchmarks/ablation.py [--seeds 3] [--device cpu] [--jobs 2]

Every variant trains with the `cpu` preset's settings (same steps, same schedule)
for each seed (the seed sets the initial weights and the batches, so variant and
seed together fix a run), and is scored by its full validation loss. The results
go to `assets/ablation/results.json`, which chapter 09 draws; the printed table
gives the mean and the spread over seeds, so that a difference can be told from
seed noise. Removing a piece:

- residual: each block computes ``x = attn(ln1(x)); x = ffwd(ln2(x))``, no ``x +``;
- layernorm: every LayerNorm (the two per block and the final one) is the identity;
- feed-forward: each block keeps only its attention sublayer;
- heads: one head of the full width instead of four;
- positions: no position embedding at all;
- scale: the attention scores are ``q . k``, not ``q . k / sqrt(head_size)``.
"""

import argparse
import json
import math
import statistics
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
from parallel import run_all

from gptlib.data import load_dataset
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.train import TrainingDiverged, full_loss, train

RESULTS = Path(__file__).resolve().parents[1] / "assets" / "ablation" / "results.json"
VARIANTS = ["full", "residual", "layernorm", "feed-forward", "heads", "positions", "scale"]


class Unchanged(nn.Module):
    """Stands in for a removed position embedding: returns its input."""

    def forward(self, x, offset: int = 0):
        return x


class Scaled(nn.Module):
    """``factor * linear(x)``: a query map whose scores come out unscaled after SDPA's 1/sqrt(d)."""

    def __init__(self, linear: nn.Linear, factor: float):
        super().__init__()
        self.linear, self.factor = linear, factor

    def forward(self, x):
        return self.factor * self.linear(x)


def without_residual(block, x, return_weights=False, cache=None, layer=0):
    x = block.attn(block.ln1(x), cache=cache, layer=layer)
    return block.ffwd(block.ln2(x))


def without_feed_forward(block, x, return_weights=False, cache=None, layer=0):
    return x + block.attn(block.ln1(x), cache=cache, layer=layer)


def build(variant: str, seed: int, max_iters: int | None = None) -> tuple[GPT, object]:
    """The `cpu` GPT with ``variant`` removed, initialised from ``seed``, and its TrainConfig."""
    heads = {"n_head": 1} if variant == "heads" else {}
    steps = {"max_iters": max_iters} if max_iters else {}
    model_config, train_config = get_preset("cpu", 65, seed=seed, **heads, **steps)
    torch.manual_seed(seed)
    model = GPT(model_config)
    for block in model.blocks:
        if variant == "residual":
            block.forward = types.MethodType(without_residual, block)
        elif variant == "feed-forward":
            block.forward = types.MethodType(without_feed_forward, block)
            del block.ffwd, block.ln2  # no unused parameters in the count
        elif variant == "layernorm":
            block.ln1, block.ln2 = nn.Identity(), nn.Identity()
        elif variant == "scale":
            # SDPA divides by sqrt(head_size); multiplying q by it first cancels the division.
            block.attn.query = Scaled(block.attn.query, math.sqrt(block.attn.head_size))
    if variant == "layernorm":
        model.ln_f = nn.Identity()
    if variant == "positions":
        model.position_embedding = Unchanged()
    return model, train_config


def run_one(variant: str, seed: int, device: str, max_iters: int | None = None) -> dict:
    _, _, train_data, val_data = load_dataset()
    model, config = build(variant, seed, max_iters)
    model.to(device)
    try:
        train(model, train_data.to(device), val_data.to(device), config, progress=False)
    except TrainingDiverged as error:
        return {"variant": variant, "seed": seed, "val": None, "note": str(error)}
    return {"variant": variant, "seed": seed, "val": full_loss(model, val_data.to(device)),
            "parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-iters", type=int, help="fewer steps than the preset's (a quick check)")
    parser.add_argument("--only", nargs=2, metavar=("VARIANT", "SEED"), help="one run (a worker)")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only[0], int(args.only[1]), args.device, args.max_iters)), flush=True)
        return
    seeds = [1337 + i for i in range(args.seeds)]
    steps = ["--max-iters", str(args.max_iters)] if args.max_iters else []
    commands = [[sys.executable, __file__, "--device", args.device, *steps, "--only", v, str(s)]
                for v in VARIANTS for s in seeds]
    runs = []
    for _, result in run_all(commands, args.jobs):
        if result is not None:
            runs.append(result)
            print(f"  {result['variant']}, seed {result['seed']}: {result['val']}", file=sys.stderr)
    runs.sort(key=lambda r: (VARIANTS.index(r["variant"]), r["seed"]))
    _, config = get_preset("cpu")
    command = f"python benchmarks/ablation.py --seeds {args.seeds} --device {args.device}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device.startswith("cuda"):
        device += f": {torch.cuda.get_device_name()} (float32)"
    record = {"command": command, "device": device, "torch": torch.__version__, "preset": "cpu",
              "max_iters": args.max_iters or config.max_iters, "runs": runs}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print("| removed | full validation loss, mean | spread (min to max) | seeds |\n|---|---|---|---|")
    for variant in VARIANTS:
        losses = [r["val"] for r in runs if r["variant"] == variant and r["val"] is not None]
        if losses:
            print(f"| {variant} | {statistics.mean(losses):.4f} | {min(losses):.4f} to "
                  f"{max(losses):.4f} | {len(losses)} |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
