import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.attention import (
    AttentionLM,
    Head,
    MultiHeadAttention,
    attention_scores,
    attention_weights,
    average_loop,
    average_matmul,
    average_softmax,
    causal_mask,
)
from gptlib.model import KVCache


@pytest.fixture
def x():
    return torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(0))


# --- the averaging trick ------------------------------------------------------


def test_the_three_averages_are_equal(x):
    expected = torch.stack([x[:, : t + 1].mean(dim=1) for t in range(x.shape[1])], dim=1)
    torch.testing.assert_close(average_loop(x), expected)
    torch.testing.assert_close(average_matmul(x), expected)
    torch.testing.assert_close(average_softmax(x), expected)


def test_the_average_never_looks_ahead(x):
    changed = x.clone()
    changed[:, 4:] += 10.0
    for average in (average_loop, average_matmul, average_softmax):
        torch.testing.assert_close(average(changed)[:, :4], average(x)[:, :4])
        assert not torch.allclose(average(changed)[:, 4:], average(x)[:, 4:])


# --- weights ------------------------------------------------------------------


def test_causal_mask_is_the_lower_triangle():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_causal_weights_are_rows_of_probabilities_over_the_past():
    scores = torch.randn(2, 5, 5)
    w = attention_weights(scores, causal=True)
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(2, 5))
    assert torch.all(w.triu(diagonal=1) == 0)
    assert torch.all(w[..., 0, 0] == 1)  # the first position can only look at itself


def test_unmasked_weights_look_everywhere():
    w = attention_weights(torch.randn(4, 4), causal=False)
    assert torch.all(w > 0)


def test_temperature_sharpens_and_flattens():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    sharp = attention_weights(scores, causal=False, temperature=0.1)
    flat = attention_weights(scores, causal=False, temperature=10.0)
    assert sharp[0, 2] > 0.99
    assert flat.max() - flat.min() < 0.1
    with pytest.raises(ValueError, match="temperature"):
        attention_weights(scores, temperature=0)


def test_scores_are_scaled_by_the_square_root_of_the_head_size():
    q, k = torch.randn(5, 64), torch.randn(5, 64)
    torch.testing.assert_close(attention_scores(q, k), q @ k.T / 8.0)
    # The scale keeps the variance near 1 whatever the head size.
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(20000, 1, 256, generator=g), torch.randn(20000, 1, 256, generator=g)
    assert attention_scores(q, k).var().item() == pytest.approx(1.0, abs=0.05)


# --- Head -----------------------------------------------------------------------


def explicit_head(head, x):
    q, k, v = head.query(x), head.key(x), head.value(x)
    wei = q @ k.transpose(-2, -1) * head.key.out_features**-0.5
    if head.causal:
        T = x.shape[1]
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
    wei = F.softmax(wei, dim=-1)
    return wei @ v, wei


@pytest.mark.parametrize("causal", [True, False])
def test_head_matches_the_formula_and_returns_its_weights(x, causal):
    torch.manual_seed(0)
    head = Head(16, 8, block_size=7, causal=causal)
    out, weights = head(x, return_weights=True)
    expected_out, expected_weights = explicit_head(head, x)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(weights, expected_weights)
    assert out.shape == (3, 7, 8) and weights.shape == (3, 7, 7)


@pytest.mark.parametrize("causal", [True, False])
def test_head_fast_path_equals_the_explicit_path(x, causal):
    torch.manual_seed(0)
    head = Head(16, 8, block_size=7, causal=causal).eval()
    fast = head(x)
    explicit, _ = head(x, return_weights=True)
    torch.testing.assert_close(fast, explicit, atol=1e-6, rtol=1e-5)


def test_a_causal_head_never_looks_ahead(x):
    torch.manual_seed(0)
    head = Head(16, 8, block_size=7).eval()
    changed = x.clone()
    changed[:, 5:] = torch.randn(3, 2, 16)
    torch.testing.assert_close(head(changed)[:, :5], head(x)[:, :5])


def test_dropout_applies_to_the_weights_only_in_training(x):
    torch.manual_seed(0)
    head = Head(16, 8, block_size=7, dropout=0.5, causal=False)
    head.train()
    out_a, w = head(x, return_weights=True)
    out_b, _ = head(x, return_weights=True)
    assert not torch.equal(out_a, out_b)  # a fresh dropout mask each call
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 7))  # returned weights are pre-dropout
    head.eval()
    torch.testing.assert_close(head(x, return_weights=True)[0], head(x, return_weights=True)[0])


def test_a_sequence_longer_than_the_block_is_refused(x):
    with pytest.raises(ValueError, match="longer than block_size 4"):
        Head(16, 8, block_size=4)(x)


# --- MultiHeadAttention --------------------------------------------------------------


def test_multi_head_equals_separate_heads_concatenated_and_projected(x):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, n_head=4, block_size=7).eval()
    heads = []
    for h in range(4):
        head = Head(16, 4, block_size=7)
        rows = slice(4 * h, 4 * (h + 1))
        for name in ("query", "key", "value"):
            getattr(head, name).weight.data = getattr(mha, name).weight.data[rows]
        heads.append(head)
    concatenated = torch.cat([head(x) for head in heads], dim=-1)
    out, weights = mha(x, return_weights=True)
    torch.testing.assert_close(out, mha.proj(concatenated))
    for h, head in enumerate(heads):
        torch.testing.assert_close(weights[:, h], head(x, return_weights=True)[1])


@pytest.mark.parametrize("causal", [True, False])
def test_multi_head_fast_path_equals_the_explicit_path(x, causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, n_head=2, block_size=7, causal=causal).eval()
    torch.testing.assert_close(mha(x), mha(x, return_weights=True)[0], atol=1e-6, rtol=1e-5)


def test_multi_head_scores_give_its_weights(x):
    mha = MultiHeadAttention(16, n_head=2, block_size=7).eval()
    _, weights = mha(x, return_weights=True)
    torch.testing.assert_close(attention_weights(mha.scores(x)), weights)
    assert weights.shape == (3, 2, 7, 7)


def test_multi_head_needs_a_divisible_width():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, n_head=3, block_size=8)


def test_nothing_here_uses_torch_s_own_attention_modules():
    import gptlib.attention as module

    source = open(module.__file__).read()
    assert "nn.MultiheadAttention" not in source and "nn.Transformer" not in source


def test_weights_from_one_token_are_all_on_itself():
    head = Head(4, 4, block_size=1)
    _, w = head(torch.randn(2, 1, 4), return_weights=True)
    assert torch.all(w == 1.0)
    assert math.isclose(w.sum().item(), 2.0)


# --- AttentionLM -------------------------------------------------------------------


def test_attention_lm_predicts_every_position_and_never_peeks_when_causal():
    torch.manual_seed(0)
    model = AttentionLM(vocab_size=10, n_embd=16, n_head=2, block_size=8).eval()
    idx = torch.randint(10, (2, 8))
    logits, loss = model(idx, torch.randint(10, (2, 8)))
    assert logits.shape == (2, 8, 10) and loss.ndim == 0
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 10
    torch.testing.assert_close(model(changed)[0][:, :6], logits[:, :6])
    assert model.scores(idx).shape == (2, 2, 8, 8)


def test_an_unmasked_attention_lm_sees_the_future():
    torch.manual_seed(0)
    model = AttentionLM(vocab_size=10, n_embd=16, n_head=2, block_size=8, causal=False).eval()
    idx = torch.randint(10, (1, 8))
    changed = idx.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 10
    assert not torch.allclose(model(changed)[0][:, 0], model(idx)[0][:, 0])


def test_the_shipped_attention_model_is_made_by_its_script_and_beats_the_bigram():
    # Chapter 3 trains this model live (and chapters 4 and 5 load the shipped copy), so
    # the test only checks the copy: the settings it was made with, and what it learned.
    import importlib.util
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    from gptlib.bigram import CountBigramModel
    from gptlib.bigram import full_loss as bigram_loss
    from gptlib.data import load_dataset
    from gptlib.train import full_loss

    folder = Path(__file__).resolve().parent.parent / "assets" / "attention-lm"
    spec = importlib.util.spec_from_file_location("make", folder / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["train_config"]) == make.CONFIG.to_dict()
    assert json.loads(metadata["shape"]) == make.SHAPE
    _, tok, train, val = load_dataset()
    assert json.loads(metadata["vocab"]) == tok.vocab
    model = AttentionLM(tok.vocab_size, **make.SHAPE)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    bigram = bigram_loss(CountBigramModel.from_data(train, tok.vocab_size), val)
    assert full_loss(model, val) < bigram - 0.25  # 2.18 against 2.48


# --- the KV cache path ----------------------------------------------------------------


def test_causal_mask_for_new_queries_after_cached_keys():
    # Two new queries after three cached positions: they sit at positions 3 and 4.
    assert causal_mask(2, 5).tolist() == [[True, True, True, True, False],
                                          [True, True, True, True, True]]


@pytest.mark.parametrize("return_weights", [False, True])
def test_multi_head_with_a_cache_equals_one_pass_over_everything(x, return_weights):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, n_head=2, block_size=7).eval()
    full = mha(x)
    cache = KVCache(n_layer=1, block_size=7)
    first = mha(x[:, :4], cache=cache)  # prime with four positions
    pieces = [first]
    for t in range(4, 7):  # then one position at a time
        out = mha(x[:, t : t + 1], return_weights=return_weights, cache=cache)
        pieces.append(out[0] if return_weights else out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.keys[0].shape == (3, 2, 7, 8)


def test_multi_head_cache_takes_several_new_positions_at_once(x):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, n_head=2, block_size=7).eval()
    cache = KVCache(n_layer=1, block_size=7)
    mha(x[:, :3], cache=cache)
    torch.testing.assert_close(mha(x[:, 3:], cache=cache), mha(x)[:, 3:], atol=1e-5, rtol=1e-5)


def test_the_cache_cannot_grow_past_the_block(x):
    mha = MultiHeadAttention(16, n_head=2, block_size=7).eval()
    cache = KVCache(n_layer=1, block_size=7)
    mha(x, cache=cache)
    keys = cache.keys[0].clone()
    with pytest.raises(ValueError, match="the cache holds 7 positions: 1 more would pass block_size 7"):
        mha(x[:, :1], cache=cache)
    assert torch.equal(cache.keys[0], keys)  # refused before it grew


# --- AttentionLM's positions (chapter 05) ------------------------------------------------


def test_attention_lm_positions_put_order_where_each_says():
    from gptlib.positional import RotaryEmbedding, sinusoidal_encoding

    torch.manual_seed(0)
    idx = torch.randint(10, (2, 8))
    models = {p: AttentionLM(10, n_embd=16, n_head=2, block_size=8, positions=p).eval()
              for p in AttentionLM.POSITIONS}
    tokens = {p: m.token_embedding(idx) for p, m in models.items()}
    learned = models["learned"]
    torch.testing.assert_close(learned.embed(idx), tokens["learned"] + learned.position_embedding.weight)
    torch.testing.assert_close(models["none"].embed(idx), tokens["none"])
    waves = sinusoidal_encoding(8, 16)
    torch.testing.assert_close(models["sinusoidal"].embed(idx), tokens["sinusoidal"] + waves)
    torch.testing.assert_close(models["rotary"].embed(idx), tokens["rotary"])
    # Only the learned table is a parameter: the others add none.
    counts = {p: sum(q.numel() for q in m.parameters()) for p, m in models.items()}
    assert counts["learned"] - counts["none"] == 8 * 16
    assert counts["none"] == counts["sinusoidal"] == counts["rotary"]
    # Rotary: the scores are those of rotated queries and keys.
    rotary = models["rotary"]
    att, x = rotary.attention, rotary.embed(idx)
    rope = RotaryEmbedding(8, 8)
    q, k = rope(att._split_heads(att.query(x))), rope(att._split_heads(att.key(x)))
    torch.testing.assert_close(rotary.scores(idx), q @ k.transpose(-2, -1) / math.sqrt(8))


def test_without_positions_a_causal_model_sees_its_past_as_a_set():
    torch.manual_seed(0)
    model = AttentionLM(10, n_embd=16, n_head=2, block_size=8, positions="none").eval()
    idx = torch.randint(10, (1, 8))
    shuffled = torch.cat([idx[:, torch.tensor([4, 0, 6, 2, 1, 5, 3])], idx[:, 7:]], dim=1)
    torch.testing.assert_close(model(shuffled)[0][:, -1], model(idx)[0][:, -1])
    for positions in ("learned", "sinusoidal", "rotary"):  # each of these tells the orders apart
        other = AttentionLM(10, n_embd=16, n_head=2, block_size=8, positions=positions).eval()
        assert not torch.allclose(other(shuffled)[0][:, -1], other(idx)[0][:, -1])


@pytest.mark.parametrize("positions", ["none", "sinusoidal", "rotary"])
def test_fixed_positions_load_into_a_longer_model_unchanged(positions):
    # Nothing trained depends on block_size, so chapter 05 reads longer windows this way.
    torch.manual_seed(0)
    short = AttentionLM(10, n_embd=16, n_head=2, block_size=8, positions=positions).eval()
    long = AttentionLM(10, n_embd=16, n_head=2, block_size=32, positions=positions).eval()
    long.load_state_dict(short.state_dict())
    idx = torch.randint(10, (2, 32))
    torch.testing.assert_close(long(idx)[0][:, :8], short(idx[:, :8])[0], atol=1e-5, rtol=1e-5)


def test_attention_lm_refuses_unknown_positions():
    with pytest.raises(ValueError, match="positions must be one of"):
        AttentionLM(10, positions="alibi")


def test_rotary_attention_with_a_cache_rotates_each_layer_at_its_own_positions():
    # Two layers share one cache: when the second layer rotates its new position, the
    # first has already appended it, so each layer must count its own held positions.
    torch.manual_seed(0)
    layers = [MultiHeadAttention(16, 2, block_size=8, rotary=True).eval() for _ in range(2)]
    x = torch.randn(1, 7, 16)

    def both(x, cache=None):
        for i, layer in enumerate(layers):
            x = x + layer(x, cache=cache, layer=i)
        return x

    full = both(x)
    cache = KVCache(n_layer=2, block_size=8)
    pieces = [both(x[:, :4], cache)] + [both(x[:, t : t + 1], cache) for t in range(4, 7)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_shipped_position_models_are_made_by_their_script():
    # Chapter 05 compares these three with chapter 3's learned table, at the same budget.
    import importlib.util
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    from gptlib.data import load_dataset
    from gptlib.train import full_loss

    folder = Path(__file__).resolve().parent.parent / "assets" / "positions"
    spec = importlib.util.spec_from_file_location("make_positions", folder / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    _, tok, _, val = load_dataset()
    losses = {}
    for positions in make.POSITIONS:
        with safe_open(folder / f"{positions}.safetensors", framework="pt") as f:
            metadata = f.metadata()
        assert metadata["positions"] == positions
        assert json.loads(metadata["train_config"]) == make.CONFIG.to_dict()
        assert json.loads(metadata["shape"]) == make.SHAPE
        assert json.loads(metadata["vocab"]) == tok.vocab
        model = AttentionLM(tok.vocab_size, **make.SHAPE, positions=positions)
        model.load_state_dict(load_file(folder / f"{positions}.safetensors"))
        losses[positions] = full_loss(model, val)
    # The figures its README and chapter 05 give.
    assert losses == pytest.approx({"none": 2.3877, "sinusoidal": 2.1863, "rotary": 2.1487}, abs=2e-3)
