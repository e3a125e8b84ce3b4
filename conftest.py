"""Shared pytest set-up for the unit tests and the notebooks (which nbval runs as tests).

The course's CI machines have no internet but keep a verified copy of the corpus in
``../shared/data``. When it is there and GPTLIB_DATA_DIR is unset, gptlib is pointed
at it, so neither the tests nor the notebook kernels (which inherit this process's
environment) try to download. On a learner's machine the corpus is downloaded into
the usual per-user cache instead.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"


def use_shared_data_if_present() -> None:
    if not os.environ.get("GPTLIB_DATA_DIR") and (SHARED_DATA / "tinyshakespeare.txt").exists():
        os.environ["GPTLIB_DATA_DIR"] = str(SHARED_DATA)


use_shared_data_if_present()

# The suite runs in two processes at once (pytest-xdist, pyproject.toml). Each must then
# compute with one thread, it and every process it starts (notebook kernels, training
# commands): two processes of two threads each on two cores wait on each other's
# spinning threads and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_configure(config):
    """nbval's notebook kernels run PyTorch's scalar code (ATEN_CPU_CAPABILITY=default).

    The committed outputs are made with the machine's vector instructions (AVX2, AVX-512:
    .ci/execute_notebooks.py), and their last bits differ from the scalar code's. A checked
    cell (# NBVAL_CHECK_OUTPUT) that printed one of those bits (an argmax on a flat maximum,
    a fourth decimal of a float32 sum) then fails here, on every machine, instead of only on
    a CPU unlike the one that made the outputs. Only the kernels: the test processes keep
    the fast path (torch.compile needs it). The kernels are about 10% slower.
    """
    try:
        import nbval.kernel
    except ImportError:  # nbval not installed: no notebooks are collected either
        return
    start = nbval.kernel.start_new_kernel

    def start_on_plain_cpu_code(**kwargs):
        return start(env={**os.environ, "ATEN_CPU_CAPABILITY": "default"}, **kwargs)

    nbval.kernel.start_new_kernel = start_on_plain_cpu_code


def pytest_collection_modifyitems(session, config, items):
    """Run every notebook a second time, in the same kernel, right after nbval's first run.

    nbval runs a notebook's cells in order in a fresh kernel, one test per cell. The
    copies added here run the same cells again in that kernel before nbval stops it,
    as a learner who presses "Run All" a second time would; they check for errors, not
    outputs (a second run may draw other random numbers).
    """
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: no notebooks are collected either
        return
    result = []
    for i, item in enumerate(items):
        result.append(item)
        following = items[i + 1] if i + 1 < len(items) else None
        last_of_notebook = isinstance(item, IPyNbCell) and (
            following is None or following.parent is not item.parent)
        if last_of_notebook:
            cells = [it for it in items if isinstance(it, IPyNbCell) and it.parent is item.parent]
            for cell in cells:
                options = type(cell.options)(bool, cell.options)
                options["check"] = False
                result.append(IPyNbCell.from_parent(
                    item.parent, name=f"{cell.name} again", cell_num=cell.cell_num,
                    cell=cell.cell, options=options))
    items[:] = result
