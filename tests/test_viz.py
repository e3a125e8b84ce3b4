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


# --- explorers (no browser: set a control's value, read the redrawn picture) ----------

from gptlib.viz import AttentionExplorer, SoftmaxScaleExplorer, attention_heatmap  # noqa: E402


def fake_scores(text):
    """Two layers, three heads; the score of key s for query t depends on the head."""
    if "#" in text:
        raise ValueError("Characters not in the vocabulary: '#'")
    T = len(text)
    s = torch.arange(T, dtype=torch.float32)
    base = s.view(1, T) - s.view(T, 1)  # prefer later keys
    return torch.stack([torch.stack([base * (h + 1) * (layer + 1) for h in range(3)])
                        for layer in range(2)])


def test_attention_heatmap_puts_the_tokens_on_both_axes():
    fig, ax = plt.subplots()
    attention_heatmap(torch.eye(3), ["a", " ", "b"], ax=ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "␣", "b"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "␣", "b"]
    plt.close(fig)


def test_attention_explorer_draws_causal_weights_of_the_chosen_head():
    explorer = AttentionExplorer(fake_scores, "hello", n_layer=2, n_head=3)
    text, weights, note = explorer.weights()
    assert text == "hello" and note is None
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
    assert torch.all(weights.triu(1) == 0)
    assert explorer.png.startswith(b"\x89PNG") and explorer.image.value == explorer.png


def test_every_control_redraws_the_picture():
    explorer = AttentionExplorer(fake_scores, "hello there", n_layer=2, n_head=3)
    for control, value in [(explorer.head, 2), (explorer.layer, 1), (explorer.causal, False),
                           (explorer.temperature, 5.0), (explorer.text, "to be or not")]:
        before_png, before_weights = explorer.png, explorer.weights()[1]
        control.value = value
        assert explorer.png != before_png, control.description
        if control is not explorer.text:
            assert not torch.allclose(explorer.weights()[1], before_weights), control.description


def test_controls_select_the_layer_and_head_and_the_mask():
    explorer = AttentionExplorer(fake_scores, "abcd", n_layer=2, n_head=3)
    explorer.layer.value, explorer.head.value, explorer.causal.value = 1, 2, False
    _, weights, _ = explorer.weights()
    expected = torch.softmax(fake_scores("abcd")[1, 2], dim=-1)
    torch.testing.assert_close(weights, expected)
    assert torch.all(weights > 0)


def test_bad_text_shows_a_message_and_keeps_the_last_picture():
    explorer = AttentionExplorer(fake_scores, "good", n_layer=2, n_head=3)
    picture = explorer.png
    explorer.text.value = "bad #"
    assert "not in the vocabulary" in explorer.message.value
    assert explorer.png == picture
    explorer.text.value = ""
    assert "Type some text" in explorer.message.value
    explorer.text.value = "fine again"
    assert explorer.message.value == "" and explorer.png != picture


def test_text_longer_than_the_block_keeps_its_end_and_says_so():
    explorer = AttentionExplorer(fake_scores, "abcdefghij", n_layer=2, n_head=3, block_size=4)
    text, weights, note = explorer.weights()
    assert text == "ghij" and weights.shape == (4, 4)
    assert "last 4 characters" in explorer.message.value


def test_softmax_scale_explorer_shows_saturation_and_its_cure():
    explorer = SoftmaxScaleExplorer()
    explorer.head_size.value = 1024
    dots, row = explorer.scores()
    assert dots.var().item() == pytest.approx(1024, rel=0.1)
    assert torch.softmax(row, 0).max() > 0.9  # nearly one-hot
    picture = explorer.png
    explorer.scaled.value = True
    dots, row = explorer.scores()
    assert dots.var().item() == pytest.approx(1.0, rel=0.1)
    assert torch.softmax(row, 0).max() < 0.5
    assert explorer.png != picture


def test_live_loss_plot_draws_the_history_it_is_given():
    from gptlib.viz import LiveLossPlot

    plot = LiveLossPlot(max_iters=100, references={"bigram": 2.48})
    history = {"step": [1, 2, 3], "loss": [4.0, 3.5, 3.0], "eval_step": [3],
               "train_loss": [3.1], "val_loss": [3.2]}
    plot.draw(history)
    lines = plot.ax.get_lines()
    assert list(lines[0].get_ydata()) == [4.0, 3.5, 3.0]
    assert list(lines[2].get_ydata()) == [3.2]
    assert list(lines[3].get_ydata()) == [2.48, 2.48]  # the reference line
    assert plot.ax.get_title() == "step 3: validation 3.200"
    assert plot.ax.get_xlim() == (0, 100)


def test_live_loss_plot_starts_at_step_0_from_the_estimates_before_training():
    from gptlib.viz import LiveLossPlot

    plot = LiveLossPlot(max_iters=100, start={"train_loss": 4.2, "val_loss": 4.3})
    history = {"step": [1, 2, 3], "loss": [4.0, 3.5, 3.0], "eval_step": [3],
               "train_loss": [3.1], "val_loss": [3.2]}
    plot.draw(history)
    lines = plot.ax.get_lines()
    assert list(lines[1].get_xdata()) == [0, 3] and list(lines[1].get_ydata()) == [4.2, 3.1]
    assert list(lines[2].get_xdata()) == [0, 3] and list(lines[2].get_ydata()) == [4.3, 3.2]
    assert history["eval_step"] == [3]  # the history itself is left as it was


def test_line_breaks_are_shown_and_typed_as_backslash_n():
    explorer = AttentionExplorer(fake_scores, "ROMEO:\nBut", n_layer=2, n_head=3)
    assert explorer.text.value == "ROMEO:\\nBut"
    assert explorer.weights()[0] == "ROMEO:\nBut"
    explorer.text.value = "a\\nb"
    text, weights, _ = explorer.weights()
    assert text == "a\nb" and weights.shape == (3, 3)


def test_character_losses_colours_each_predicted_character_and_breaks_lines():
    import matplotlib
    import matplotlib.pyplot as plt

    from gptlib.viz import character_losses

    ax = character_losses("ab\ncd", [None, 1.0, 2.0, 4.0, 0.5], width=10)
    patches = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
    assert len(patches) == 4  # the first character has no prediction: not coloured
    assert sorted((p.get_x(), p.get_y()) for p in patches) == [(0, 1), (1, 0), (1, 1), (2, 0)]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["a", "b", "\\n", "c", "d"]
    assert [t.get_color() for t in ax.texts][3] == "white"  # the darkest square
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="3 characters but 2 losses"):
        character_losses("abc", [1.0, 2.0])
