"""Generation speed with and without the KV cache, on the CPU.

    .venv/bin/python benchmarks/sample_speed.py [--tokens 1000]

The `gpu` preset's shape (6 layers, 6 heads, n_embd 384, block 256; random weights
are as slow as trained ones), batch 1, from a one-character prompt. For each window
shift (how far the model's window jumps once the context fills the block; see
`gptlib.sample.stream`) it prints tokens per second with and without the cache,
the ratio, and whether both wrote the same tokens. The default shift is half a
block; a shift of 1 is the classic sliding window, which absolute positions make
the cache rebuild at every step.
"""

import argparse
import time

import torch

from gptlib.model import GPT, GPTConfig
from gptlib.sample import generate


def timed(model, n: int, use_cache: bool, window_shift: int):
    start = torch.zeros(1, 1, dtype=torch.long)
    began = time.perf_counter()
    out = generate(model, start, n, use_cache=use_cache, window_shift=window_shift,
                   generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - began, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--shifts", type=int, nargs="+", default=[128, 1],
                        help="window shifts to measure (default: 128, the default, and 1)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.0)).eval()
    print(f"gpu-preset shape, {model.num_parameters() / 1e6:.2f}M parameters, batch 1, "
          f"{args.tokens} new tokens, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for shift in args.shifts:
        cached_s, cached = timed(model, args.tokens, True, shift)
        plain_s, plain = timed(model, args.tokens, False, shift)
        print(f"window shift {shift:3}: no cache {args.tokens / plain_s:6.1f} tok/s, cache "
              f"{args.tokens / cached_s:6.1f} tok/s, speed-up {plain_s / cached_s:5.2f}x, "
              f"same tokens: {torch.equal(cached, plain)}", flush=True)


if __name__ == "__main__":
    main()
