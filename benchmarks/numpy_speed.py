"""The NumPy GPT (chapter 10) against PyTorch: the `cpu` preset trained both ways in one run.

    .venv/bin/python benchmarks/numpy_speed.py              # the whole preset, both ways
    .venv/bin/python benchmarks/numpy_speed.py --steps 300  # a shorter run

Both trainings use chapter 07's loop with the `cpu` preset (the same seed, batches and
schedule); only the training step differs: torch's autograd and fused AdamW, or
``gptlib.numpy_gpt`` by hand. Each prints its training time and full validation loss,
then the ratio of the times. This machine's speed drifts from minute to minute, so the
step alone is also timed with the two backends in turns, pair by pair, and the ratio
within each pair reported. Last, where the NumPy step spends its time: each piece's
forward and backward timed alone on one batch of the preset's shape.
"""

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from gptlib import numpy_gpt as ng
from gptlib.data import get_batch, load_dataset
from gptlib.model import GPT
from gptlib.presets import get_preset
from gptlib.runtime import Runtime
from gptlib.train import configure_optimizer, full_loss, training_step


def train_with(backend: str, steps: int | None, train_data, val_data, vocab_size: int):
    overrides = {"max_iters": steps} if steps else {}
    model_config, train_config = get_preset("cpu", vocab_size=vocab_size, **overrides)
    torch.manual_seed(train_config.seed)
    model = GPT(model_config)
    started = time.perf_counter()
    Runtime(backend=backend).train(model, train_data, val_data, train_config, progress=False)
    seconds = time.perf_counter() - started
    return seconds, full_loss(model, val_data), train_config.max_iters


def paired_step_times(train_data, vocab_size: int, rounds: int = 15, steps: int = 20):
    """Milliseconds per training step, torch and NumPy in turns: ``rounds`` pairs of
    ``steps`` steps each. This machine's speed drifts; the ratio within a pair does not."""
    model_config, train_config = get_preset("cpu", vocab_size=vocab_size)
    torch.manual_seed(0)
    model = GPT(model_config)
    optimizer = configure_optimizer(model, train_config)
    net = ng.NumpyGPT({k: v.detach().numpy().copy() for k, v in model.named_parameters()},
                      model_config.n_head)
    adamw = ng.AdamW(net.params, train_config.learning_rate, weight_decay=train_config.weight_decay)
    generator = torch.Generator().manual_seed(0)
    batches = [get_batch(train_data, train_config.batch_size, model_config.block_size,
                         generator=generator) for _ in range(steps)]

    def torch_steps():
        for x, y in batches:
            training_step(model, optimizer, x, y, train_config.grad_clip)

    def numpy_steps():
        for x, y in batches:
            _, grads = net.loss_and_grads(x.numpy(), y.numpy())
            ng.clip_grad_norm(grads, train_config.grad_clip)
            adamw.step(grads)

    pairs = []
    for _ in range(rounds):
        pair = []
        for run in (torch_steps, numpy_steps):
            start = time.perf_counter()
            run()
            pair.append(1e3 * (time.perf_counter() - start) / steps)
        pairs.append(pair)
    return pairs


def profile(train_data, vocab_size: int, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per step spent in each piece of the NumPy GPT (forward + backward)."""
    model_config, train_config = get_preset("cpu", vocab_size=vocab_size)
    net = ng.NumpyGPT.create(vocab_size, model_config.block_size, model_config.n_layer,
                             model_config.n_head, model_config.n_embd)
    x, y = get_batch(train_data, train_config.batch_size, model_config.block_size,
                     generator=torch.Generator().manual_seed(0))
    x, y = x.numpy(), y.numpy()
    spent = defaultdict(float)
    originals = {}
    depth = [0]  # a piece called inside another (attention's projection) counts for the outer one

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[name] += time.perf_counter() - start
        return wrapper

    pieces = ["linear_forward", "linear_backward", "layernorm_forward", "layernorm_backward",
              "gelu_forward", "gelu_backward", "causal_attention_forward",
              "causal_attention_backward", "cross_entropy_forward", "cross_entropy_backward",
              "embedding_backward"]
    for name in pieces:
        originals[name] = getattr(ng, name)
        setattr(ng, name, timed(name, originals[name]))
    adamw = ng.AdamW(net.params, 1e-3, weight_decay=0.1)
    try:
        total = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            _, grads = net.loss_and_grads(x, y)
            clip_start = time.perf_counter()
            ng.clip_grad_norm(grads, 1.0)
            adamw_start = time.perf_counter()
            adamw.step(grads)
            end = time.perf_counter()
            spent["clip_grad_norm"] += adamw_start - clip_start
            spent["adamw"] += end - adamw_start
            total += end - start
    finally:
        for name, fn in originals.items():
            setattr(ng, name, fn)
    spent["everything else (adds, reshapes, the Python between)"] = total - sum(spent.values())
    spent["the whole step"] = total
    return {name: 1e3 * seconds / repeats for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's 1,500")
    args = parser.parse_args()
    _, tokenizer, train_data, val_data = load_dataset()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")
    results = {}
    for backend in ("torch", "numpy"):
        seconds, loss, steps = train_with(backend, args.steps, train_data, val_data,
                                          tokenizer.vocab_size)
        results[backend] = seconds
        print(f"{backend:6} {steps} steps in {seconds:6.1f} s ({1e3 * seconds / steps:5.1f} ms a step), "
              f"full validation loss {loss:.4f}")
    print(f"numpy / torch: {results['numpy'] / results['torch']:.2f}x the time")
    pairs = paired_step_times(train_data, tokenizer.vocab_size)
    ratios = sorted(n / t for t, n in pairs)
    print(f"\nthe step alone, torch and NumPy in turns ({len(pairs)} pairs of 20 steps): "
          f"torch {statistics.median(t for t, _ in pairs):.1f} ms, NumPy "
          f"{statistics.median(n for _, n in pairs):.1f} ms (medians); the ratio within a pair: "
          f"median {statistics.median(ratios):.2f}x, from {ratios[0]:.2f}x to {ratios[-1]:.2f}x")
    print("\nwhere a NumPy step's time goes (ms, one batch of the preset, mean of 20 steps):")
    for name, ms in sorted(profile(train_data, tokenizer.vocab_size).items(), key=lambda kv: -kv[1]):
        print(f"  {name:58}{ms:7.2f}")


if __name__ == "__main__":
    main()
