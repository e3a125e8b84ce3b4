"""Generation speed with and without the KV cache, on the CPU.

    .venv/bin/python benchmarks/sample_speed.py [--tokens 1000]

The `gpu` preset's shape (6 layers, 6 heads, n_embd 384, block 256; random weights
are as slow as trained ones), batch 1, from a one-character prompt. Prints tokens
per second for each path, the ratio, whether both wrote the same tokens, and the
speed over the first block_size - 1 tokens alone (where the cache needs no rebuild).
"""

import argparse
import time

import torch

from gptlib.model import GPT, GPTConfig
from gptlib.sample import generate


def timed(model, n: int, use_cache: bool):
    start = torch.zeros(1, 1, dtype=torch.long)
    began = time.perf_counter()
    out = generate(model, start, n, use_cache=use_cache, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - began, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.0)).eval()
    block = model.config.block_size
    print(f"gpu-preset shape, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for n in (block - 1, args.tokens):
        cached_s, cached = timed(model, n, use_cache=True)
        plain_s, plain = timed(model, n, use_cache=False)
        print(f"{n:5} new tokens: no cache {n / plain_s:6.1f} tok/s, cache {n / cached_s:6.1f} tok/s, "
              f"speed-up {plain_s / cached_s:4.2f}x, same tokens: {torch.equal(cached, plain)}",
              flush=True)


if __name__ == "__main__":
    main()
