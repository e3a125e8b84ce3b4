"""Helpers shared by the test files."""

import time

import pytest

from gptlib.checkpoint import FILENAME


def _wait_for_checkpoint(out, process, timeout=120, filename=FILENAME):
    """Wait until a training process has saved its first checkpoint in ``out``."""
    deadline = time.time() + timeout
    while not (out / filename).exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


@pytest.fixture
def wait_for_checkpoint():
    return _wait_for_checkpoint
