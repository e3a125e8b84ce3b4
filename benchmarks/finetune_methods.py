"""Chapter 13's fine-tunes, at equal wall-clock budget: the numbers and the adapters it shows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_methods.py [--budget 300]

"Which play?" (a speech without its NAME line -> one of the nine plays): the majority
class and a bag-of-characters logistic regression, then four fine-tunes of the
shipped model (`assets/shakespeare-laptop`) that each get the same training time:
a linear probe, the last block and the head, LoRA (rank 8, alpha 16) on every
attention projection, and the same architecture from scratch. The step time of each
is measured first, in this run; each then trains for the steps that fit in
`--budget` seconds. Accuracy on the test speeches.

Replies: LoRA on the language model, the loss on the reply's characters only, for the
same budget; the reply loss before (in the instruction template and in the corpus's
own layout) and after, and replies sampled before and after to prompts from the text
the pretrained model never read.

Writes `assets/finetune/results.json` and two adapters chapter 13 loads:
`assets/finetune/play-lora/` and `assets/finetune/reply-lora/` (LoRA's A and B and the
classifier's head; the base model is the shipped one).
"""

import argparse
import copy
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from gptlib import finetune as ft
from gptlib.checkpoint import checkpoint_path, load_checkpoint
from gptlib.data import load_shakespeare, sha256_of
from gptlib.train import TrainState

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "shakespeare-laptop"
ASSETS = ROOT / "assets" / "finetune"
VAL_FRACTION = 0.1  # the pretraining's split: the last tenth of the corpus is validation


def step_time(model, tokenizer, examples, config, steps: int = 6) -> float:
    """Seconds per training step (after two to warm up), on a copy of ``model``."""
    model = copy.deepcopy(model)
    state = TrainState.start(model, config)
    state.history = ft.new_history()
    warm = replace(config, max_iters=2, eval_interval=10_000)
    ft.finetune(model, tokenizer, examples, [], warm, state, progress=False)
    timed = replace(config, max_iters=2 + steps, eval_interval=10_000)
    started = time.perf_counter()
    ft.finetune(model, tokenizer, examples, [], timed, state, progress=False)
    return (time.perf_counter() - started) / steps


def run(model, tokenizer, train, val, config):
    """Fine-tune, then measure on ``val``; return the state and the training seconds alone."""
    started = time.perf_counter()
    state = ft.finetune(model, tokenizer, train, [], config, progress=False)
    seconds = time.perf_counter() - started
    ft.measure(model, tokenizer, val, state)
    return state, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per method")
    parser.add_argument("--tasks", default="play,reply",
                        help="play, reply, positions (where a probe reads), or several, comma-separated "
                             "(default: play,reply); a task left out keeps its results")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    torch.manual_seed(0)
    text = load_shakespeare()
    speeches = ft.speeches(text)
    splits = ft.play_splits(speeches)
    base = load_checkpoint(BASE)
    tokenizer = base.tokenizer
    run_info = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} "
                   f".venv/bin/python benchmarks/finetune_methods.py --budget {args.budget:g} "
                   f"--tasks {args.tasks}",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "budget_seconds": args.budget,
    }
    results = {"speeches": {name: len(split) for name, split in splits.items()}}
    if "play" in tasks:
        results["play"] = {"run": run_info}
        play_task(results, splits, base, tokenizer, args.budget)
    if "positions" in tasks:
        results["positions"] = {"run": run_info, **probe_positions(splits, base, tokenizer)}
    if "reply" in tasks:
        results["reply"] = {"run": run_info, **reply_task(text, speeches, base, tokenizer, args.budget)}
    path = ASSETS / "results.json"
    kept = json.loads(path.read_text()) if path.exists() else {}  # the tasks not run this time
    ASSETS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**kept, **results}, indent=1) + "\n")


def play_task(results, splits, base, tokenizer, budget) -> None:
    results["play"]["majority"] = {"test_accuracy": ft.majority_baseline(splits["train"], splits["test"]),
                                   "trainable": 0}
    bag_accuracy, bag_predictions = ft.bag_of_characters_baseline(
        splits["train"], splits["val"], splits["test"], tokenizer)
    results["play"]["bag of characters"] = {
        "test_accuracy": bag_accuracy, "trainable": (tokenizer.vocab_size + 1) * 9,
        "test_predictions": bag_predictions.tolist()}
    print({k: round(v["test_accuracy"], 4) for k, v in results["play"].items() if k != "run"}, flush=True)

    for method in ft.METHODS:
        model = ft.build(copy.deepcopy(base.model), "play", method)
        config = ft.default_config("play", method)
        per_step = step_time(model, tokenizer, splits["train"], config)
        steps = max(1, int(budget / per_step))
        config = replace(config, max_iters=steps, eval_interval=steps)
        model = ft.build(copy.deepcopy(base.model), "play", method)
        state, seconds = run(model, tokenizer, splits["train"], splits["val"], config)
        probs = ft.predict(model, tokenizer, [s.text for s in splits["test"]])
        labels = torch.tensor([s.play for s in splits["test"]])
        results["play"][method] = {
            "test_accuracy": ft.accuracy(probs.argmax(-1), labels),
            "val_accuracy": state.history["val_accuracy"][-1],
            "trainable": ft.trainable_parameters(model),
            "steps": steps, "seconds_per_step": per_step, "train_seconds": seconds,
            "learning_rate": config.learning_rate, "history": state.history,
            "test_predictions": probs.argmax(-1).tolist(),
        }
        print(method, {k: v for k, v in results["play"][method].items()
                       if k not in ("history", "test_predictions")}, flush=True)
        if method == "lora":
            info = {"task": "play", "method": "lora", "rank": 8, "alpha": 16.0,
                    "base": os.path.relpath(BASE, ASSETS / "play-lora"),
                    "base_sha256": sha256_of(checkpoint_path(BASE))}
            ft.save_finetuned(ASSETS / "play-lora", model, info, config)


def probe_positions(splits, base, tokenizer) -> dict:
    """Where should a classifier read? A linear probe fitted to convergence (no time budget)
    on the frozen model's hidden state at a speech's last character, and at the end mark."""
    out = {}
    labels = [torch.tensor([s.play for s in splits[name]]) for name in ft.SPLITS]
    for where, suffix in (("last character", ""), ("end mark", ft.SPEECH_END)):
        started = time.perf_counter()
        features = [ft.hidden_at_end(base.model, tokenizer, [s.text + suffix for s in splits[name]])
                    for name in ft.SPLITS]
        predictions = ft.logistic_regression(features, labels)
        out[where] = {"test_accuracy": ft.accuracy(predictions, labels[2]),
                      "seconds": time.perf_counter() - started}
        print(where, out[where], flush=True)
    return out


def reply_task(text, speeches, base, tokenizer, budget) -> dict:
    """Replies: LoRA on the language model, loss on the reply only."""
    block = base.model.config.block_size
    val_start = int(len(text) * (1 - VAL_FRACTION))
    replies = ft.reply_splits(ft.reply_examples(speeches, block), val_start)
    plain = ft.reply_splits(ft.reply_examples(speeches, block, ft.PLAIN_PROMPT), val_start)
    prompts = [e.prompt for e in replies["val"][:40:8]]

    def samples(model):
        out = []
        for i, prompt in enumerate(prompts):
            generator = torch.Generator().manual_seed(i)
            out.append(ft.write_reply(model, tokenizer, prompt, 120, temperature=0.8,
                                      generator=generator))
        return out

    reply = {"pairs": {k: len(v) for k, v in replies.items()},
             "before_template": ft.reply_loss(base.model, tokenizer, replies["val"]),
             "before_plain": ft.reply_loss(base.model, tokenizer, plain["val"]),
             "prompts": prompts, "samples_before": samples(base.model)}
    model = ft.build(copy.deepcopy(base.model), "reply", "lora")
    config = ft.default_config("reply", "lora")
    per_step = step_time(model, tokenizer, replies["train"], config)
    steps = max(1, int(budget / per_step))
    config = replace(config, max_iters=steps, eval_interval=steps)
    model = ft.build(copy.deepcopy(base.model), "reply", "lora")
    state, seconds = run(model, tokenizer, replies["train"], replies["val"], config)
    reply.update({"after": state.history["val_loss"][-1], "steps": steps,
                  "seconds_per_step": per_step, "train_seconds": seconds,
                  "trainable": ft.trainable_parameters(model), "history": state.history,
                  "samples_after": samples(model)})
    info = {"task": "reply", "method": "lora", "rank": 8, "alpha": 16.0,
            "base": os.path.relpath(BASE, ASSETS / "reply-lora"),
            "base_sha256": sha256_of(checkpoint_path(BASE))}
    ft.save_finetuned(ASSETS / "reply-lora", model, info, config)
    print({k: v for k, v in reply.items() if k not in ("history",)}, flush=True)
    return reply


if __name__ == "__main__":
    main()
