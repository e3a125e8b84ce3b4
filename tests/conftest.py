"""Helpers shared by the test files."""

import hashlib
import time
from pathlib import Path

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


def _digests(*paths) -> dict:
    """SHA-256 of every file at or under ``paths``, with its size and modification time, so
    that a command that reads them can be shown to leave them exactly as they were."""
    files = []
    for path in map(Path, paths):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in files}


@pytest.fixture
def digests():
    return _digests
