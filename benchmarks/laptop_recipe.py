"""The search behind the `laptop` preset: what reaches the lowest loss in an hour on 2 cores.

Two steps, because timing must happen on the laptop-class machine while the losses
can be measured anywhere (same steps, same batches, float32: the same training):

    .venv/bin/python benchmarks/laptop_recipe.py time          # on the 2-core machine
    python benchmarks/laptop_recipe.py train --device cuda      # on any device, or cpu

`time` measures each candidate's training step on this machine (float32, after a
warm-up, evaluations included at their share) and writes the number of steps that
fit in the budget to `benchmarks/laptop_recipe.json`. `train` trains every candidate
of that file for its steps and prints a Markdown table with its full validation loss
(`--jobs N` runs N trainings at once, each in its own process). The README's table
comes from these two commands; the preset is the winner, trained by the command line.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from parallel import run_all

from gptlib.data import load_dataset
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.train import TrainState, full_loss, train

RESULTS = Path(__file__).with_suffix(".json")
BUDGET_MINUTES = 55  # of the hour: the rest is margin for a noisy, shared machine
EVALUATIONS = 10  # per run, each of `eval_iters` batches per split

# Shapes and batches (overrides of the `cpu` preset) worth an hour: each is timed here.
SHAPES = {"3x256": dict(n_layer=3, n_head=4, n_embd=256), "4x192": dict(n_layer=4, n_head=6, n_embd=192),
          "4x256": dict(n_layer=4, n_head=4, n_embd=256), "6x192": dict(n_layer=6, n_head=6, n_embd=192),
          "6x256": dict(n_layer=6, n_head=4, n_embd=256), "4x384": dict(n_layer=4, n_head=6, n_embd=384)}
BATCHES = {"T64 B32": dict(block_size=64, batch_size=32), "T128 B16": dict(block_size=128, batch_size=16),
           "T128 B32": dict(block_size=128, batch_size=32), "T256 B16": dict(block_size=256, batch_size=16),
           "T64 B64": dict(block_size=64, batch_size=64)}
CANDIDATES = {f"{s} {b}": {**SHAPES[s], **BATCHES[b]} for s, b in [
    ("4x256", "T64 B32"), ("4x256", "T128 B16"), ("4x256", "T128 B32"), ("4x256", "T256 B16"),
    ("4x256", "T64 B64"), ("4x192", "T128 B16"), ("4x192", "T128 B32"), ("6x192", "T128 B16"),
    ("6x192", "T128 B32"), ("3x256", "T128 B16"), ("3x256", "T128 B32"), ("6x256", "T128 B16"),
    ("6x256", "T128 B32"), ("4x384", "T128 B16")]}
SCHEDULE = dict(warmup_iters=200, eval_iters=20)
# Each candidate is trained with each of these (the step time does not depend on them).
SCHEDULES = {"lr 1e-3": dict(learning_rate=1e-3, min_lr=1e-4, dropout=0.1),
             "lr 2e-3": dict(learning_rate=2e-3, min_lr=2e-4, dropout=0.1),
             "lr 2e-3, no dropout": dict(learning_rate=2e-3, min_lr=2e-4, dropout=0.0)}


def configs(overrides: dict, steps: int):
    settings = {**SCHEDULE, **overrides, "max_iters": steps,
                "eval_interval": max(1, steps // EVALUATIONS)}
    return get_preset("cpu", 65, **settings)


def seconds_per_step(overrides: dict, data, warmup: int = 2, steps: int = 6) -> float:
    """Seconds per training step on this machine (float32, after ``warmup`` steps)."""
    model_config, train_config = configs({**overrides, **SCHEDULES["lr 1e-3"]}, 10**6)
    torch.manual_seed(0)
    model = GPT(model_config)
    state = TrainState.start(model, train_config)
    train(model, data, data, train_config, state, should_stop=lambda: state.step >= warmup,
          progress=False)
    started = time.perf_counter()
    train(model, data, data, train_config, state, should_stop=lambda: state.step >= warmup + steps,
          progress=False)
    return (time.perf_counter() - started) / steps


def cmd_time(args) -> None:
    _, _, train_data, _ = load_dataset()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; budget {args.minutes} min")
    plan = {}
    for name, overrides in CANDIDATES.items():
        step = seconds_per_step(overrides, train_data)
        # An evaluation reads 2 x eval_iters batches forward only: about a third of a step each.
        evaluations = EVALUATIONS * 2 * SCHEDULE["eval_iters"] * step / 3
        steps = int((args.minutes * 60 - evaluations) / step) // 100 * 100
        plan[name] = dict(overrides=overrides, seconds_per_step=round(step, 4), steps=steps)
        print(f"{name:16} {step * 1000:7.1f} ms/step -> {steps} steps", flush=True)
    RESULTS.write_text(json.dumps(dict(minutes=args.minutes, threads=torch.get_num_threads(),
                                       candidates=plan), indent=1) + "\n")
    print(f"wrote {RESULTS}")


def train_one(name: str, schedule: str, device: str, steps: int | None = None) -> float:
    plan = json.loads(RESULTS.read_text())["candidates"][name]
    _, _, train_data, val_data = load_dataset()
    model_config, train_config = configs({**plan["overrides"], **SCHEDULES[schedule]}, steps or plan["steps"])
    torch.manual_seed(train_config.seed)
    model = GPT(model_config).to(device)
    train_data, val_data = train_data.to(device), val_data.to(device)
    train(model, train_data, val_data, train_config, progress=False)
    return full_loss(model, val_data)


def cmd_train(args) -> None:
    plan = json.loads(RESULTS.read_text())
    if args.only:
        name, schedule = args.only
        print(json.dumps({"val": train_one(name, schedule, args.device, args.steps)}), flush=True)
        return
    print(f"| candidate | ms per step on {plan['threads']} cores | steps in {plan['minutes']} min | "
          + " | ".join(SCHEDULES) + " |\n|---|---|---|" + "---|" * len(SCHEDULES), flush=True)
    steps = ["--steps", str(args.steps)] if args.steps else []
    commands = [[sys.executable, __file__, "train", "--device", args.device, *steps, "--only", name, schedule]
                for name in plan["candidates"] for schedule in SCHEDULES]
    losses = {}
    for command, result in run_all(commands, args.jobs):
        losses[tuple(command[-2:])] = "failed" if result is None else f"{result['val']:.4f}"
        print(f"  {command[-2]}, {command[-1]}: {losses[tuple(command[-2:])]}", file=sys.stderr, flush=True)
    for name, c in plan["candidates"].items():
        print(f"| {name} | {c['seconds_per_step'] * 1000:.0f} | {c['steps']} | "
              + " | ".join(losses[name, s] for s in SCHEDULES) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time every candidate on this machine")
    t.add_argument("--minutes", type=float, default=BUDGET_MINUTES)
    r = sub.add_parser("train", help="train every candidate for its steps")
    r.add_argument("--device", default="cpu")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--steps", type=int, help="train every candidate this many steps (a quick check)")
    r.add_argument("--only", nargs=2, metavar=("CANDIDATE", "SCHEDULE"), help="train one (a worker)")
    args = parser.parse_args()
    cmd_time(args) if args.command == "time" else cmd_train(args)


if __name__ == "__main__":
    main()
