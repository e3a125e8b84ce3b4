"""A learning-rate sweep: the `cpu` preset trained at peak rates from 1e-4 to 1e-1.

    .venv/bin/python benchmarks/lr_sweep.py [--jobs 2] [--device cpu] [--max-iters N]

Each run is the `cpu` preset with one change: its peak `learning_rate` (the
schedule keeps its shape: warmup, then a cosine down to a tenth of the peak). The
seed is the preset's, so every run starts from the same weights and sees the same
batches. Each is scored by its full validation loss; the loss of every logged step
is kept too. The results go to `assets/lr-sweep/results.json`, which chapter 07 draws.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from parallel import run_all

from gptlib.data import load_dataset
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.train import TrainingDiverged, full_loss, train

RESULTS = Path(__file__).resolve().parents[1] / "assets" / "lr-sweep" / "results.json"
RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def run_one(rate: float, device: str, max_iters: int | None = None) -> dict:
    _, tokenizer, train_data, val_data = load_dataset()
    model_config, config = get_preset("cpu", vocab_size=tokenizer.vocab_size)
    config = replace(config, learning_rate=rate, min_lr=rate / 10, max_iters=max_iters or config.max_iters)
    torch.manual_seed(config.seed)
    model = GPT(model_config).to(device)
    start = time.perf_counter()
    result = {"learning_rate": rate, "min_lr": rate / 10}
    try:
        state = train(model, train_data.to(device), val_data.to(device), config, progress=False)
    except TrainingDiverged as error:
        return {**result, "val": None, "note": str(error)}
    history = state.history
    return {**result, "val": full_loss(model, val_data.to(device)), "seconds": time.perf_counter() - start,
            "step": history["step"], "loss": history["loss"],
            "eval_step": history["eval_step"], "val_loss": history["val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--max-iters", type=int, help="fewer steps than the preset's (a quick check)")
    parser.add_argument("--only", type=float, help="one run (a worker)")
    args = parser.parse_args()
    if args.only is not None:
        print(json.dumps(run_one(args.only, args.device, args.max_iters)), flush=True)
        return
    steps = ["--max-iters", str(args.max_iters)] if args.max_iters else []
    commands = [[sys.executable, __file__, "--device", args.device, *steps, "--only", str(rate)]
                for rate in RATES]
    runs = [result for _, result in run_all(commands, args.jobs) if result is not None]
    runs.sort(key=lambda r: r["learning_rate"])
    _, config = get_preset("cpu")
    record = {"command": f"python benchmarks/lr_sweep.py --device {args.device}", "device": args.device,
              "torch": torch.__version__, "preset": "cpu",
              "max_iters": args.max_iters or config.max_iters, "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print("| peak learning rate | full validation loss |\n|---|---|")
    for run in runs:
        shown = f"{run['val']:.4f}" if run["val"] is not None else f"diverged ({run['note']})"
        print(f"| {run['learning_rate']:g} | {shown} |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
