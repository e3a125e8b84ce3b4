"""Nothing in the project loads pickled objects or weakens JupyterLab's authentication."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("gptlib/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("benchmarks/*.py"),
                  ROOT / ".ci" / "run", ROOT / ".ci" / "execute_notebooks.py", ROOT / "README.md"])


def test_no_pickle_anywhere():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bimport pickle\b|\bpickle\.load", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


def test_checkpoints_load_through_safetensors_only():
    source = (ROOT / "gptlib" / "checkpoint.py").read_text()
    assert "torch.load" not in source and "safetensors" in source


def test_jupyter_is_never_opened_without_its_token_or_beyond_localhost():
    this_file = Path(__file__).resolve()
    for path in SOURCES + [p for p in sorted(ROOT.glob("tests/*.py")) if p != this_file]:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"token\s*=\s*['\"]{2}", r"password\s*=\s*['\"]{2}", r"disable_check_xsrf",
                        r"--ip=0\.0\.0\.0", r"ServerApp\.ip\s*=\s*['\"]?0\.0\.0\.0"):
            assert not re.search(pattern, text), f"{path}: {pattern}"
