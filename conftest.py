"""Shared pytest set-up for the unit tests and the notebooks (which nbval runs as tests).

The course's CI machines have no internet, but keep a verified copy of the corpus in
``../shared/data``. When it is there and GPTLIB_DATA_DIR is unset, point gptlib at it,
so neither the tests nor the notebook kernels (which inherit this environment) try to
download. On a learner's machine the corpus is downloaded into the usual cache instead.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if not os.environ.get("GPTLIB_DATA_DIR") and (SHARED_DATA / "tinyshakespeare.txt").exists():
    os.environ["GPTLIB_DATA_DIR"] = str(SHARED_DATA)
