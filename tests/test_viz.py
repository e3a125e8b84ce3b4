import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gptlib.viz import char_label, heatmap  # noqa: E402


def test_invisible_characters_get_visible_labels():
    assert char_label("\n") == "\\n"
    assert char_label(" ") == "␣"
    assert char_label("a") == "a"
    assert char_label("$") == "$"


def test_heatmap_draws_the_matrix_with_one_label_per_row_and_column():
    fig, ax = plt.subplots()
    matrix = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    image = heatmap(matrix, row_labels=["a", "\n"], col_labels=[" ", "b", "c"], ax=ax, title="t")
    np.testing.assert_array_equal(image.get_array(), matrix.numpy())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "\\n"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["␣", "b", "c"]
    assert ax.get_title() == "t"
    assert len(fig.axes) == 2  # the heatmap and its colorbar
    plt.close(fig)


def test_heatmap_checks_its_labels_and_shape():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 labels for 3"):
        heatmap(np.zeros((3, 3)), row_labels=["a", "b"], ax=ax)
    with pytest.raises(ValueError, match="2-D"):
        heatmap(np.zeros(3), ax=ax)
    plt.close(fig)
