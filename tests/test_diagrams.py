"""gptlib.diagrams: the numbers drawn are the library's own, and the pictures stay readable."""

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from gptlib import diagrams  # noqa: E402
from gptlib.attention import MultiHeadAttention  # noqa: E402
from gptlib.model import GPT, GPTConfig  # noqa: E402
from gptlib.positional import RotaryEmbedding  # noqa: E402
from gptlib.presets import get_preset  # noqa: E402


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def contains(fig, label: str) -> bool:
    return any(label in text for text in texts(fig))


@pytest.fixture(scope="module")
def figures():
    """Each diagram with the course's usual numbers, made once for the whole file."""
    made = {"gpt": diagrams.gpt_diagram(get_preset("cpu")[0]),
            "attention": diagrams.attention_shapes_diagram(),
            "kv cache": diagrams.kv_cache_diagram(),
            "rope": diagrams.rope_diagram()}
    yield made
    for fig in made.values():
        plt.close(fig)


# --- the GPT: parameter counts and shapes ------------------------------------


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_parameter_shares_add_up_to_num_parameters_and_match_the_formulas(preset):
    config, _ = get_preset(preset)
    shares = diagrams.parameter_shares(config)
    assert sum(shares.values()) == GPT(config).num_parameters()
    C, V, T, L = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    assert shares == {
        "embeddings": V * C + T * C,
        "attention": L * (4 * C * C + C),  # W_q, W_k, W_v without bias; the projection with one
        "feed-forward": L * (C * 4 * C + 4 * C + 4 * C * C + C),
        "LayerNorms": (2 * L + 1) * 2 * C,  # ln1 and ln2 in each block, and ln_f; weight and bias
        "head": C * V + V,
    }


def test_gpt2_switches_change_the_shares_as_the_model_does():
    C, V = 16, 11
    base = dict(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=C)
    plain = diagrams.parameter_shares(GPTConfig(**base))
    tied = GPTConfig(**base, qkv_bias=True, tied_head=True)
    shares = diagrams.parameter_shares(tied)
    assert shares["head"] == 0  # a tied head reuses the token embedding, and has no bias
    assert shares["embeddings"] == plain["embeddings"]
    assert shares["attention"] == plain["attention"] + 2 * 3 * C
    assert sum(shares.values()) == GPT(tied).num_parameters()


def test_gpt_shapes_are_those_of_a_real_forward_pass():
    config, _ = get_preset("cpu")
    shapes = diagrams.gpt_shapes(config)
    T, C, V = config.block_size, config.n_embd, config.vocab_size
    model = GPT(config).eval()
    idx = torch.zeros(1, T, dtype=torch.long)
    with torch.no_grad():
        logits, _ = model(idx)
        hidden = model.hidden_states(idx)
    assert shapes["tokens"] == tuple(idx.shape)
    assert shapes["logits"] == tuple(logits.shape) == (1, T, V)
    assert shapes["ln_f"] == tuple(hidden.shape) == (1, T, C)
    assert shapes["feed-forward hidden"] == (1, T, 4 * C)
    assert shapes["attention"] == shapes["block"] == (1, T, C)


def test_gpt_diagram_labels_shapes_and_counts(figures):
    fig, config = figures["gpt"], get_preset("cpu")[0]
    assert isinstance(fig, Figure)
    for label in ["(B, 32, 128)", "(B, 32, 512)", "(B, 32, 65)", "token ids (B, 32)", "Linear 128 → 512",
                  "multi-head attention, 4 heads\n65,664 parameters"]:
        assert contains(fig, label), label
    shares = diagrams.parameter_shares(config)
    for count in [*shares.values(), GPT(config).num_parameters()]:
        assert f"{count:,}" in texts(fig)
    for share in shares.values():
        assert f"{100 * share / sum(shares.values()):.1f}%" in texts(fig)


# --- multi-head attention -------------------------------------------------------


def test_attention_shapes_are_those_of_real_tensors():
    T, C, H = 5, 12, 3
    shapes = diagrams.attention_shapes(T, C, H)
    attention = MultiHeadAttention(C, H, block_size=T)
    x = torch.randn(1, T, C)
    out, weights = attention(x, return_weights=True)
    assert shapes["x"] == shapes["Q"] == shapes["K"] == shapes["V"] == (T, C)
    assert shapes["W_q"] == shapes["W_o"] == tuple(attention.query.weight.shape) == (C, C)
    assert shapes["Q heads"] == shapes["V heads"] == shapes["heads out"] == (H, T, C // H)
    assert shapes["scores"] == tuple(attention.scores(x).shape[1:]) == (H, T, T)
    assert shapes["weights"] == tuple(weights.shape[1:])
    assert shapes["concatenated"] == shapes["output"] == tuple(out.shape[1:])


def test_attention_diagram_labels_the_shapes(figures):
    for label in ["(T, C) = (8, 32)", "(32, 32)", "= (4, 8, 8)", "head_size = C / n_head = 8"]:
        assert contains(figures["attention"], label), label
    fig = diagrams.attention_shapes_diagram(5, 12, 3)
    for label in ["(T, C) = (5, 12)", "(12, 12)", "= (3, 5, 4)", "= (3, 5, 5)", "√4"]:
        assert contains(fig, label), label
    plt.close(fig)


# --- the KV cache -------------------------------------------------------------


def test_kv_cache_shapes_are_the_caches():
    s = diagrams.kv_cache_shapes(n_cached=5, n_layer=3, n_head=2, n_embd=16)
    assert s["keys before"] == s["values before"] == [(1, 2, 5, 8)] * 3  # (B, n_head, length, head_size)
    assert s["keys after"] == s["values after"] == [(1, 2, 6, 8)] * 3
    assert s["new query"] == [(1, 2, 1, 8)] * 3
    assert s["scores"] == [(1, 2, 1, 6)] * 3  # one query row, over every key
    assert s["positions with cache"] == [1] * 3
    assert s["positions without cache"] == [6] * 3


def test_kv_cache_diagram_labels_the_cache():
    fig = diagrams.kv_cache_diagram(n_cached=5, n_layer=3, n_head=2, n_embd=16)
    for label in ["cache.keys[2]: (B, 2, 5, 8) read, 1 appended → (B, 2, 6, 8)",
                  "cache.values[0]: (B, 2, 5, 8)", "(B, 2, 1, 6)", "18 positions in 3 layers"]:
        assert contains(fig, label), label
    plt.close(fig)


# --- RoPE -----------------------------------------------------------------------


def drawn(fig, gid: str) -> list[torch.Tensor]:
    """The tips of the arrows named ``gid``, one per panel, left to right."""
    return [torch.tensor(a.xy) for ax in fig.axes for a in ax.texts if a.get_gid() == gid]


def test_rope_rotate_is_the_rotary_embedding():
    # With head_size 2, RotaryEmbedding turns its one pair by exactly 1 radian per position.
    vector, positions = torch.tensor([0.8, -0.3]), [0, 1, 3, 9]
    rope = RotaryEmbedding(head_size=2, block_size=10)
    expected = rope(vector.expand(10, 2))[positions]
    assert torch.allclose(diagrams.rope_rotate(vector, positions, 1.0), expected, atol=1e-6)


def test_rope_rotate_turns_by_position_times_theta():
    vector, theta = (0.8, -0.3), 0.25
    for t, rotated in zip([0, 2, 7], diagrams.rope_rotate(vector, [0, 2, 7], theta)):
        c, s = math.cos(t * theta), math.sin(t * theta)
        expected = torch.tensor([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])
        assert torch.allclose(rotated, expected, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        diagrams.rope_rotate(vector, [1], 0.0)


def test_rope_diagram_draws_what_rotary_embedding_computes():
    q, k = torch.tensor([1.0, 0.25]), torch.tensor([0.8, -0.45])
    fig = diagrams.rope_diagram(q, k, m=3, n=1, theta=1.0, shift=6)
    rope = RotaryEmbedding(head_size=2, block_size=10)
    q_at, k_at = rope(q.expand(10, 2)), rope(k.expand(10, 2))
    assert torch.allclose(torch.stack(drawn(fig, "q rotated")), q_at[[3, 9]], atol=1e-6)
    assert torch.allclose(torch.stack(drawn(fig, "k rotated")), k_at[[1, 7]], atol=1e-6)
    assert torch.allclose(torch.stack(drawn(fig, "q original")), torch.stack([q, q]))
    plt.close(fig)


def test_rope_scores_are_equal_at_equal_offsets(figures):
    q, k, theta = (1.0, 0.25), (0.8, -0.45), 0.25  # rope_diagram's defaults: (m, n) = (3, 1), (9, 7)
    fig = figures["rope"]
    scores = [torch.dot(qr, kr).item() for qr, kr in zip(drawn(fig, "q rotated"), drawn(fig, "k rotated"))]
    # (R(mθ) q) · (R(nθ) k) = q · R((n - m)θ) k: it depends on the offset alone.
    k_turned = diagrams.rope_rotate(k, [2], theta=theta)[0]  # n - m = -2: turn q by +2 instead
    q_turned = diagrams.rope_rotate(q, [2], theta=theta)[0]
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)
    assert scores[0] == pytest.approx(torch.dot(q_turned, torch.tensor(k)).item(), abs=1e-5)
    assert scores[0] != pytest.approx(torch.dot(torch.tensor(q), k_turned).item(), abs=1e-3)
    shown = [text for text in texts(fig) if text.startswith("score = ")]
    assert len(shown) == 2 and all(text.endswith(f"= {scores[0]:.3f}") for text in shown)
    assert [a.get_gid() for a in fig.axes[0].texts if a.get_gid()] == [
        "q original", "q rotated", "k original", "k rotated"]


# --- every diagram: readable ----------------------------------------------------


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def test_diagrams_leave_pyplot_and_the_random_numbers_alone():
    # Made without pyplot, a figure is shown once in a notebook (as the cell's value) and none
    # stays open; and a learner's seeded cells draw the same numbers with or without a diagram.
    open_before, random_before = plt.get_fignums(), torch.random.get_rng_state()
    made = [diagrams.gpt_diagram(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)),
            diagrams.attention_shapes_diagram(4, 8, 2), diagrams.kv_cache_diagram(n_cached=2, n_layer=1)]
    assert plt.get_fignums() == open_before
    assert torch.equal(torch.random.get_rng_state(), random_before)
    for fig in made:
        plt.close(fig)


@pytest.mark.parametrize("name", ["gpt", "attention", "kv cache", "rope"])
def test_every_diagram_is_readable(figures, name):
    fig = figures[name]
    assert fig.get_figwidth() <= 13
    fig.draw_without_rendering()  # lays the text out, at the figure's dpi, without drawing pixels
    shown = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent()) for t in shown]
    assert all(t.get_fontsize() >= 9 for t in shown)
    width, height = fig.bbox.width, fig.bbox.height
    for text, box in boxes:  # nothing cut off at the edges
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text
    for (text_a, a), (text_b, b) in itertools.combinations(boxes, 2):  # no two labels touch
        assert not overlaps(a, b), (text_a, text_b)
