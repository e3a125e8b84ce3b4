"""What each change to the CPU recipe buys: train variants of `classic-cpu`, one after the other.

    .venv/bin/python benchmarks/cpu_recipe.py '{"learning_rate": 3e-3}' '{"n_layer": 2}' ...

Each argument is a JSON object of settings that override the `classic-cpu` preset
(any field of GPTConfig or TrainConfig). Each variant is trained in this process
(no progress bar) and the script prints its training time (the loop alone, without
start-up) and its full validation loss. With no arguments it runs the steps that
led to the `cpu` preset (README, Benchmarks). The machine is shared and noisy:
compare times from one run only.
"""

import json
import sys
import time

import torch

from gptlib.data import load_dataset
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.train import full_loss, train

STEPS = [
    dict(max_iters=1000, lr_decay_iters=1000, warmup_iters=50, learning_rate=2e-3, min_lr=2e-4),
    dict(max_iters=1000, lr_decay_iters=1000, warmup_iters=50, learning_rate=3e-3, min_lr=3e-4),
    dict(max_iters=1000, lr_decay_iters=1000, warmup_iters=50, learning_rate=3e-3, min_lr=3e-4,
         block_size=32, batch_size=24),
    dict(max_iters=1150, lr_decay_iters=1150, warmup_iters=50, learning_rate=3e-3, min_lr=3e-4,
         block_size=32, batch_size=24, n_layer=3),
    dict(max_iters=1500, lr_decay_iters=1500, warmup_iters=50, learning_rate=3e-3, min_lr=3e-4,
         block_size=32, batch_size=24, n_layer=2),
]


def main() -> None:
    variants = [json.loads(arg) for arg in sys.argv[1:]] or STEPS
    _, tokenizer, train_data, val_data = load_dataset()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; each line: "
          f"overrides of classic-cpu, training time, full validation loss", flush=True)
    for overrides in variants:
        model_config, train_config = get_preset("classic-cpu", tokenizer.vocab_size, **overrides)
        torch.manual_seed(train_config.seed)
        model = GPT(model_config)
        started = time.perf_counter()
        train(model, train_data, val_data, train_config, progress=False)
        seconds = time.perf_counter() - started
        print(f"{json.dumps(overrides)}: {seconds:.1f} s, {full_loss(model, val_data):.4f}",
              flush=True)


if __name__ == "__main__":
    main()
