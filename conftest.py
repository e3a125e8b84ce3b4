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
