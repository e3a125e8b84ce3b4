"""The course's GPT on characters and on BPE tokens, at the same wall-clock budget.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/tokens_vs_chars.py [--seeds 2]

Every model has the `cpu` preset's shape and schedule (2 layers, 4 heads, n_embd 128,
windows of 32 *tokens*); only the tokenizer differs: characters, or a byte-level BPE
of 512, 1,024 or 2,048 tokens trained on the training split (GPT-2's pattern). A
bigger vocabulary makes each step dearer (the output layer has one row per token), so
each model gets the steps that fit in the time the character model's 1,500 steps take:
the step times are measured first, in this run, on this machine. All are scored on the
same validation characters, in bits per character (chapter 09).

The results go to `assets/tokenization/results.json`, which chapter 11 draws, and the
first seed's BPE-1,024 model (16-bit weights) to `assets/tokenization/bpe-1024/`, which
it loads. Run it on a quiet machine: the budget comes from timings.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gptlib.checkpoint import save_checkpoint
from gptlib.data import get_batch
from gptlib.evaluate import evaluate
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.sample import generate_text
from gptlib.tokenizers import tokenize_dataset
from gptlib.train import TrainState, train, training_step

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tokenization"
TOKENIZERS = ["char", "bpe-512", "bpe-1024", "bpe-2048"]
SHIPPED = "bpe-1024"


def step_time(data, steps: int = 40) -> float:
    """Seconds per training step of the cpu preset on ``data`` (best of three timings)."""
    model_config, train_config = get_preset("cpu", vocab_size=data.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = GPT(model_config)
    state = TrainState.start(model, train_config)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            x, y = get_batch(data.train, train_config.batch_size, model_config.block_size,
                             generator=generator)
            training_step(model, state.optimizer, x, y, train_config.grad_clip)
        times.append((time.perf_counter() - start) / steps)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    datasets = {spec: tokenize_dataset(spec) for spec in TOKENIZERS}
    seconds = {spec: step_time(data) for spec, data in datasets.items()}
    _, cpu = get_preset("cpu")
    budget = seconds["char"] * cpu.max_iters
    print(f"budget: the char model's {cpu.max_iters} steps at {seconds['char'] * 1e3:.1f} ms "
          f"= {budget:.1f} s")
    runs = []
    for spec, data in datasets.items():
        vocab = data.tokenizer.vocab_size
        steps = round(budget / seconds[spec])
        for seed in range(1337, 1337 + args.seeds):
            model_config, train_config = get_preset("cpu", vocab_size=vocab, max_iters=steps, seed=seed)
            torch.manual_seed(seed)
            model = GPT(model_config)
            started = time.perf_counter()
            train(model, data.train, data.val, train_config, progress=False)
            took = time.perf_counter() - started
            metrics = evaluate(model, data.val, characters=data.val_characters)
            embedding = model.token_embedding.weight.numel() + sum(
                p.numel() for p in model.lm_head.parameters())
            run = {"tokenizer": spec, "vocab_size": vocab, "seed": seed, "steps": steps,
                   "step_ms": seconds[spec] * 1e3, "train_seconds": took,
                   "characters_per_token": data.val_characters / len(data.val),
                   "parameters": model.num_parameters(), "embedding_parameters": embedding,
                   "val_nats_per_token": metrics.nats, "bits_per_char": metrics.bits_per_char}
            runs.append(run)
            print(f"{spec:9} seed {seed}: {steps} steps in {took:.1f} s, {metrics}")
            if spec == SHIPPED and seed == 1337:
                torch.manual_seed(0)
                run["sample"] = generate_text(model, data.tokenizer, "\n", 120,
                                              generator=torch.Generator().manual_seed(0))
                save_checkpoint(ASSETS / spec, model, data.tokenizer, train_config=train_config,
                                preset="cpu", weights_dtype=torch.float16, step=steps)
    print(f"\n{'tokenizer':10}{'vocab':>6}{'chars/token':>12}{'steps':>7}{'bits per char':>22}")
    for spec in TOKENIZERS:
        mine = [r for r in runs if r["tokenizer"] == spec]
        bits = [r["bits_per_char"] for r in mine]
        spread = f" ± {statistics.stdev(bits):.3f}" if len(bits) > 1 else ""
        print(f"{spec:10}{mine[0]['vocab_size']:6}{mine[0]['characters_per_token']:12.2f}"
              f"{mine[0]['steps']:7}{statistics.mean(bits):15.4f}{spread}")
    ASSETS.mkdir(parents=True, exist_ok=True)
    results = {"command": f"python benchmarks/tokens_vs_chars.py --seeds {args.seeds}",
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{torch.get_num_threads()} threads, torch {torch.__version__}",
               "budget_seconds": budget, "runs": runs}
    (ASSETS / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
