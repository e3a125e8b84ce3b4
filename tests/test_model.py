import math

import pytest
import torch
import torch.nn.functional as F

from gptlib.attention import MultiHeadAttention
from gptlib.model import GPT, Block, FeedForward, GPTConfig

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**TINY)).eval()


@pytest.mark.parametrize("field, value, message", [
    ("n_layer", 0, "n_layer must be a positive"),
    ("block_size", -4, "block_size must be a positive"),
    ("n_embd", 2.5, "n_embd must be a positive whole number"),
    ("n_head", 3, "divisible by n_head"),
    ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
    ("dropout", -0.1, r"dropout must be in \[0, 1\)"),
])
def test_config_rejects_impossible_shapes_with_a_clear_message(field, value, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, field: value})


def test_config_round_trips_through_a_dict():
    config = GPTConfig(**TINY)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown GPTConfig fields: colour"):
        GPTConfig.from_dict({**TINY, "colour": "red"})


def test_gpu_preset_shape_has_about_10_7_million_parameters():
    n = GPT(GPTConfig()).num_parameters()
    assert n == 10_788_929
    assert GPT(GPTConfig()).num_parameters(include_position_embedding=False) == 10_690_625


def test_parameter_count_matches_the_formula():
    C, V, T, L = 16, 11, 8, 2
    per_block = 4 * C * C + C + (C * 4 * C + 4 * C) + (4 * C * C + C) + 4 * C  # attn, ffwd, 2 LNs
    expected = V * C + T * C + L * per_block + 2 * C + C * V + V
    assert GPT(GPTConfig(**TINY)).num_parameters() == expected


def test_forward_returns_logits_and_loss(model):
    idx = torch.randint(11, (3, 8))
    logits, loss = model(idx)
    assert logits.shape == (3, 8, 11) and loss is None
    logits, loss = model(idx, idx)
    assert loss.ndim == 0


def test_initial_loss_is_close_to_a_uniform_guess(model):
    idx = torch.randint(11, (16, 8), generator=torch.Generator().manual_seed(0))
    _, loss = model(idx, idx)
    assert loss.item() == pytest.approx(math.log(11), abs=0.1)


def test_initialisation_is_small_and_residual_projections_smaller(model):
    assert model.blocks[0].ffwd.fc.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(0.02 / 2, rel=0.25)
    assert torch.all(model.blocks[0].ffwd.fc.bias == 0)


def test_every_position_sees_only_the_past(model):
    idx = torch.randint(11, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_attention_weights_of_every_layer(model):
    idx = torch.randint(11, (2, 6))
    attention = model.attention_weights(idx)
    assert attention.shape == (2, 2, 2, 6, 6)  # layer, batch, head, query, key
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 2, 2, 6))
    assert attention.triu(diagonal=1).abs().max() == 0  # no position reads the future


def test_forward_always_returns_logits_and_loss(model):
    idx = torch.randint(11, (2, 6))
    logits, loss = model(idx)
    assert logits.shape == (2, 6, 11) and loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == () and loss > 0


def test_attention_scores_give_the_same_weights(model):
    from gptlib.attention import attention_weights

    idx = torch.randint(11, (1, 6))
    scores = model.attention_scores(idx)
    assert scores.shape == (2, 2, 6, 6)
    torch.testing.assert_close(attention_weights(scores), model.attention_weights(idx)[:, 0])


def test_a_block_is_pre_norm_residual_attention_then_feed_forward():
    torch.manual_seed(0)
    config = GPTConfig(**TINY)
    block = Block(config).eval()
    x = torch.randn(2, 8, 16)
    h = x + block.attn(block.ln1(x))
    expected = h + block.ffwd(block.ln2(h))
    torch.testing.assert_close(block(x), expected)
    assert isinstance(block.attn, MultiHeadAttention)


def test_feed_forward_widens_four_times():
    ff = FeedForward(GPTConfig(**TINY))
    assert ff.fc.out_features == 64 and ff.proj.in_features == 64


def test_too_long_input_is_refused(model):
    with pytest.raises(ValueError, match="longer than block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "dropout": 0.5}))
    idx = torch.randint(11, (2, 8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_training_takes_the_fused_attention_kernel_and_weights_take_the_explicit_path(monkeypatch):
    # Flash attention on a GPU needs scaled_dot_product_attention with is_causal and no
    # mask tensor; the explicit path (mask, softmax, weights) is only for the weights.
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16,
                          dropout=0.1))
    idx = torch.randint(11, (2, 8))
    model(idx, idx)
    assert len(calls) == 2
    assert all(c["is_causal"] and c["attn_mask"] is None and c["dropout_p"] == 0.1 for c in calls)
    calls.clear()
    model.attention_weights(idx)
    assert calls == []


def test_the_kv_cache_gives_the_logits_of_the_whole_sequence(model):
    idx = torch.randint(11, (2, 8))
    cache = model.new_cache()
    first, _ = model(idx[:, :5], cache=cache)
    rest = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 8)]
    assert cache.length == 8 and cache.keys[1].shape == (2, 2, 8, 8)  # batch, head, position, size
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), model(idx)[0],
                               atol=1e-5, rtol=1e-5)


def test_a_full_kv_cache_refuses_more_and_stays_as_it_was(model):
    cache = model.new_cache()
    model(torch.randint(11, (1, 7)), cache=cache)
    keys = [k.clone() for k in cache.keys]
    with pytest.raises(ValueError, match="the cache holds 7 positions: 2 more would pass block_size 8"):
        model(torch.randint(11, (1, 2)), cache=cache)
    assert cache.length == 7 and all(torch.equal(a, b) for a, b in zip(keys, cache.keys))
    model(torch.randint(11, (1, 1)), cache=cache)  # one more still fits
    assert cache.length == 8



# --- GPT-2's switches (chapter 12) ---------------------------------------------------------


GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0,
                  qkv_bias=True, tied_head=True, gelu="tanh")


def test_gpt2_small_has_exactly_its_124_439_808_parameters():
    with torch.device("meta"):  # no memory: only the shapes are counted
        assert GPT(GPTConfig(**GPT2_SMALL)).num_parameters() == 124_439_808


def test_the_default_switches_are_the_course_gpt():
    plain = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    names = dict(plain.named_parameters())
    assert "blocks.0.attn.query.bias" not in names and "lm_head.bias" in names
    assert plain.lm_head.weight is not plain.token_embedding.weight


def test_each_gpt2_switch_does_what_it_says():
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0,
                       qkv_bias=True, tied_head=True, gelu="tanh", layernorm_eps=1e-3)
    model = GPT(config)
    names = dict(model.named_parameters())
    assert {"blocks.0.attn.query.bias", "blocks.0.attn.key.bias", "blocks.0.attn.value.bias"} <= set(names)
    assert model.lm_head.weight is model.token_embedding.weight and model.lm_head.bias is None
    assert "lm_head.weight" not in names  # counted once, as the embedding
    assert model.ln_f.eps == 1e-3 and model.blocks[0].ln1.eps == 1e-3
    ffwd, x = model.blocks[0].ffwd, torch.randn(3, 8)
    torch.testing.assert_close(ffwd(x), ffwd.proj(F.gelu(ffwd.fc(x), approximate="tanh")))
    assert not torch.allclose(ffwd(x), ffwd.proj(F.gelu(ffwd.fc(x))), atol=0, rtol=0)
    with pytest.raises(ValueError, match="gelu must be exact or tanh"):
        GPTConfig(gelu="relu")


def test_the_repr_shows_the_shape_and_only_the_switches_that_are_turned():
    plain = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=128, dropout=0.0)
    assert repr(plain) == ("GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=128, "
                           "dropout=0.0)")
    gpt2 = GPTConfig(**GPT2_SMALL, head_bias=False)
    assert repr(gpt2).endswith("dropout=0.0, qkv_bias=True, tied_head=True, head_bias=False, gelu='tanh')")
    assert eval(repr(gpt2)) == gpt2
