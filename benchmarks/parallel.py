"""Run commands in child processes, at most ``jobs`` at once (the benchmarks' worker pool).

Each child prints one JSON object as its last line; ``run_all`` yields
``(command, result)`` as they finish, ``result`` None for a child that failed.
On a GPU, several small trainings at once keep the device busy.
"""

import json
import subprocess
import sys
import time


def run_all(commands: list[list[str]], jobs: int = 1):
    waiting, running = list(commands), []
    while waiting or running:
        while waiting and len(running) < jobs:
            running.append(subprocess.Popen(waiting.pop(0), stdout=subprocess.PIPE, text=True))
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            lines = process.stdout.read().strip().splitlines()
            if process.returncode != 0 or not lines:
                print(f"failed (exit {process.returncode}): {' '.join(process.args)}", file=sys.stderr)
                yield process.args, None
            else:
                yield process.args, json.loads(lines[-1])
        time.sleep(0.2)
