"""Notebooks run safely: each in a fresh kernel (nbval does that in this same test run),
and twice in a row in one kernel, as a learner who presses "Run All" again would."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_twice_in_the_same_kernel(path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for run in (1, 2):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)  # raises CellExecutionError on any error
            errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.output_type == "error"]
            assert not errors, f"run {run}: {errors[0]['ename']}: {errors[0]['evalue']}"
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts[-1] == 2 * len(counts)  # the second run really ran in the same kernel
