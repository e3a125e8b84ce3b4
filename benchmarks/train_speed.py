"""Time to quality on this machine: the `cpu` preset against `classic-cpu`, same run.

    .venv/bin/python benchmarks/train_speed.py [--presets cpu classic-cpu] [--train-args ...]

On a GPU, the `gpu` preset's time to quality, end to end (`--train-args` are
passed on to every `train`, e.g. `--compile`):

    python benchmarks/train_speed.py --presets gpu --train-args="--compile"

Each preset is trained by the real command line in a fresh process
(`python -m gptlib train --preset NAME --out TMP --quiet`), timed whole-process
with a wall clock, then scored by `python -m gptlib eval` (the full validation
loss: every validation character predicted once). Prints a table and the ratio of
wall times. The machine is shared and noisy: compare figures from one run only.
"""

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "classic-cpu"])
    parser.add_argument("--train-args", default="",
                        help="more words for every train command, e.g. --train-args=\"--compile\"")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, {gpu}, torch {torch.__version__}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            out = Path(tmp) / name
            seconds, _ = run([sys.executable, "-m", "gptlib", "train", "--preset", name,
                              "--out", str(out), "--quiet", *args.train_args.split()])
            _, printed = run([sys.executable, "-m", "gptlib", "eval", "--checkpoint", str(out)])
            loss = next(line for line in printed.splitlines() if line.startswith("loss"))
            results[name] = (seconds, float(loss.split()[-1]))
            print(f"{name:12}  wall {seconds:7.1f} s   full validation loss {results[name][1]:.4f}",
                  flush=True)
    if len(results) >= 2:
        (a, (ta, _)), (b, (tb, _)) = list(results.items())[:2]
        print(f"wall-time ratio {a} / {b}: {ta / tb:.2f}")


if __name__ == "__main__":
    main()
