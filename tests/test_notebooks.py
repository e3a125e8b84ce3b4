"""Static checks of the committed notebooks. (nbval, run by the same pytest, executes them.)"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell):
    return "".join(cell["source"])


def lines(cell):
    return [line.strip() for line in source(cell).splitlines()]


def test_the_chapters_are_all_there_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_data.ipynb",
        "02_bigram.ipynb",
        "03_self_attention_math.ipynb",
        "04_masking_and_scaling.ipynb",
        "05_positional_embeddings.ipynb",
        "06_transformer.ipynb",
        "07_training.ipynb",
        "08_sampling.ipynb",
        "09_evaluation.ipynb",
        "10_backprop_by_hand.ipynb",
        "11_tokenization.ipynb",
        "12_pretrained_weights.ipynb",
        "13_finetuning.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestNotebook:
    def test_name_shows_the_learning_order(self, path):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)

    def test_has_a_kernelspec_so_jupyterlab_does_not_ask(self, path):
        assert load(path)["metadata"]["kernelspec"]["name"] == "python3"

    def test_outputs_are_from_one_clean_top_to_bottom_run(self, path):
        counts = [c["execution_count"] for c in code_cells(load(path))]
        assert counts == list(range(1, len(counts) + 1))

    def test_no_committed_output_is_an_error(self, path):
        for cell in code_cells(load(path)):
            assert all(o["output_type"] != "error" for o in cell["outputs"]), source(cell)

    def test_checks_some_outputs_exactly(self, path):
        marked = [c for c in code_cells(load(path)) if "# NBVAL_CHECK_OUTPUT" in lines(c)]
        assert marked and all(c["outputs"] for c in marked)

    def test_nbval_markers_stand_on_their_own_line(self, path):
        # nbval only sees a marker that is a whole comment line; at the end of a line of
        # code it is silently ignored and the output is not checked.
        for cell in code_cells(load(path)):
            for line in lines(cell):
                if "NBVAL_" in line:
                    assert re.fullmatch(r"# NBVAL_[A-Z_]+", line), line

    def test_widget_cells_are_not_compared_by_nbval(self, path):
        # A widget's output is a model id that changes every run.
        for cell in code_cells(load(path)):
            if "Explorer(" in source(cell):
                assert "# NBVAL_IGNORE_OUTPUT" in lines(cell), source(cell)

    def test_uses_the_library_it_derives(self, path):
        assert any("from gptlib" in source(c) for c in code_cells(load(path)))

    def test_opens_with_a_title_and_ends_with_what_was_learned_and_exercises(self, path):
        cells = load(path)["cells"]
        assert cells[0]["cell_type"] == "markdown" and source(cells[0]).startswith("# ")
        texts = [source(c) for c in cells if c["cell_type"] == "markdown"]
        learned = [i for i, text in enumerate(texts) if "## What we learned" in text]
        assert learned, "no 'What we learned' section"
        first = learned[0]  # from the summary on: the exercises (their check cells between)
        ending = [texts[first].split("## What we learned", 1)[1], *texts[first + 1:]]
        assert any("## Exercises" in text for text in ending)
        assert not any(re.search(r"^## \d", text, re.M) for text in ending), "a section after the summary"


def test_every_notebook_runs_a_second_time_in_the_same_kernel_on_plain_cpu_code():
    """The second run (conftest.py) really shares nbval's kernel, and its errors fail the suite;
    and nbval's kernels run PyTorch's scalar code (conftest.py), whatever this CPU has."""
    import subprocess
    import sys

    folder = Path(__file__).resolve().parent.parent / "test-artifacts" / "second-run"
    folder.mkdir(parents=True, exist_ok=True)
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [],
              "source": "assert 'seen' not in globals(), 'this kernel ran me before'\nseen = True"},
             {"cell_type": "code", "metadata": {}, "execution_count": 2,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": "DEFAULT\n"}],
              "source": "# NBVAL_CHECK_OUTPUT\nimport torch\nprint(torch.backends.cpu.get_cpu_capability())"}]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                            "display_name": "Python 3"}}}
    (folder / "runs_once.ipynb").write_text(json.dumps(notebook))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           str(folder / "runs_once.ipynb")], capture_output=True, text=True,
                          cwd=folder.parent.parent, timeout=120)
    assert "1 failed, 3 passed" in done.stdout, done.stdout[-2000:]
    assert "Cell 0 again" in done.stdout and "this kernel ran me before" in done.stdout
