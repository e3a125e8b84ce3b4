"""Re-execute notebooks top to bottom, each in a fresh kernel, and save their outputs.

    .venv/bin/python .ci/execute_notebooks.py                 # every notebook
    .venv/bin/python .ci/execute_notebooks.py notebooks/02_bigram.ipynb

This is how the outputs committed with the notebooks are made. A notebook whose
run fails is left as it was.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from conftest import use_shared_data_if_present  # noqa: E402  (the tests' data set-up)

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def merge_streams(outputs):
    """Save printed text as JupyterLab shows it.

    Consecutive prints to the same stream become one output (a cell that prints a
    character at a time would otherwise save hundreds), and a line rewritten with
    carriage returns (a progress bar) keeps only its last state.
    """
    merged = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.output_type == "stream" and previous is not None
                and previous.output_type == "stream" and previous.name == output.name):
            previous.text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            output.text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1]
                                    for line in output.text.split("\n"))
    return merged


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the saved file, so diffs show real changes
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.part")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    os.chmod(tmp, path.stat().st_mode)  # mkstemp makes it private; keep the notebook's mode
    os.replace(tmp, path)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args()
    use_shared_data_if_present()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        seconds = execute(path.resolve(), args.timeout)
        print(f"{seconds:6.1f} s  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
