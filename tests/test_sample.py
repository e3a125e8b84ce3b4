import pytest
import torch

from gptlib.data import CharTokenizer
from gptlib.model import GPT, GPTConfig
from gptlib.sample import filter_logits, generate, generate_text, stream, stream_text


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    with torch.no_grad():  # larger weights than the init, so the distributions are not flat
        for p in m.parameters():
            p.mul_(8.0)
    return m.eval()


def test_temperature_divides_the_logits():
    logits = torch.tensor([[1.0, 2.0, 4.0]])
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    kept = filter_logits(logits, top_k=2)
    assert torch.isinf(kept[0, [0, 2]]).all() and torch.isfinite(kept[0, [1, 3]]).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filter_logits(logits, top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.75
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]]  # exactly 0.8 is enough
    kept = torch.isfinite(filter_logits(logits[:, [3, 1, 0, 2]], top_p=0.4))
    assert kept.tolist() == [[False, False, True, False]]  # order does not matter
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0), "temperature must be a number > 0"),
    (dict(top_k=0), "top_k must be between 1 and the vocabulary size 12"),
    (dict(top_k=13), "top_k must be between 1"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
])
def test_impossible_sampling_settings_are_refused(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(stream(model, torch.zeros(1, 1, dtype=torch.long), 1, **kwargs))


def test_seeded_generation_is_reproducible(model):
    idx = torch.zeros(1, 1, dtype=torch.long)
    a = generate(model, idx, 20, generator=torch.Generator().manual_seed(3))
    b = generate(model, idx, 20, generator=torch.Generator().manual_seed(3))
    c = generate(model, idx, 20, generator=torch.Generator().manual_seed(4))
    assert a.shape == (1, 21) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.9)])
def test_the_kv_cache_writes_exactly_the_tokens_of_the_uncached_model(model, kwargs):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    # 40 new tokens with block_size 16: the context fills and the window moves.
    cached = generate(model, idx, 40, generator=torch.Generator().manual_seed(0), **kwargs)
    uncached = generate(model, idx, 40, generator=torch.Generator().manual_seed(0),
                        use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("window_shift", [1, 5, 8, 16])
def test_the_cache_and_no_cache_agree_for_every_window_shift(model, window_shift):
    idx = torch.tensor([[1, 2, 3]])
    runs = [generate(model, idx, 50, generator=torch.Generator().manual_seed(1),
                     window_shift=window_shift, use_cache=use_cache) for use_cache in (True, False)]
    assert torch.equal(*runs)


class Recorder:
    """Wraps a model and records how many tokens each call feeds it, and from where."""

    def __init__(self, model):
        self.model, self.config, self.blocks, self.calls = model, model.config, model.blocks, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, idx, cache=None):
        offset = cache.length if cache is not None else 0
        self.calls.append((offset, idx.shape[1]))
        return self.model(idx, cache=cache)


def test_the_window_jumps_by_window_shift_when_full(model):
    # block_size 16, shift 8, a 3-token prompt, 30 new tokens. The 30th token is
    # drawn after a context of 32 tokens, so the window moves twice.
    recorder = Recorder(model)
    list(stream(recorder, torch.tensor([[1, 2, 3]]), 30, window_shift=8, use_cache=False))
    lengths = [n for _, n in recorder.calls]
    assert lengths == list(range(3, 17)) + list(range(9, 17)) + list(range(9, 17))
    recorder.calls.clear()
    list(stream(recorder, torch.tensor([[1, 2, 3]]), 30, window_shift=8))
    # With the cache: prime with the window, then one token at a time after it.
    assert recorder.calls == ([(0, 3)] + [(t, 1) for t in range(3, 16)]
                              + [(0, 9)] + [(t, 1) for t in range(9, 16)]
                              + [(0, 9)] + [(t, 1) for t in range(9, 16)])


def test_window_shift_one_is_the_classic_sliding_window(model):
    idx = torch.tensor([[1, 2, 3]])
    ours = generate(model, idx, 40, generator=torch.Generator().manual_seed(2), window_shift=1)
    classic, gen = idx, torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(40):
            logits = model(classic[:, -16:])[0][:, -1, :]
            probs = torch.softmax(logits, dim=-1)
            classic = torch.cat([classic, torch.multinomial(probs, 1, generator=gen)], dim=1)
    assert torch.equal(ours, classic)


@pytest.mark.parametrize("window_shift", [0, -1, 17, 2.5, True])
def test_an_impossible_window_shift_is_refused(model, window_shift):
    with pytest.raises(ValueError, match="window_shift must be a whole number from 1 to block_size"):
        next(stream(model, torch.zeros(1, 1, dtype=torch.long), 1, window_shift=window_shift))


@pytest.mark.parametrize("idx, message", [
    (torch.tensor([[3, 12]]), r"token ids must be from 0 to 11 \(the model's vocabulary\), got 12"),
    (torch.tensor([[-1, 2]]), "token ids must be from 0 to 11 .*, got -1"),
    (torch.zeros(1, 0, dtype=torch.long), r"at least one token, got torch.int64 of shape \(1, 0\)"),
    (torch.zeros(4, dtype=torch.long), r"a \(batch, time\) tensor"),
    (torch.zeros(1, 3), "got torch.float32"),
])
def test_a_prompt_the_model_cannot_read_is_refused(model, idx, message):
    with pytest.raises(ValueError, match=message):
        next(stream(model, idx, 1))


def test_a_prompt_longer_than_the_block_is_cropped(model):
    idx = torch.randint(12, (1, 30))
    out = generate(model, idx, 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 35) and torch.equal(out[:, :30], idx)


def test_greedy_limit_follows_the_argmax(model):
    idx = torch.tensor([[3]])
    out = generate(model, idx, 1, top_k=1)
    logits, _ = model(idx)
    assert out[0, 1].item() == logits[0, -1].argmax().item()


def test_streaming_yields_one_character_at_a_time(model):
    tok = CharTokenizer("abcdefghijkl")
    pieces = list(stream_text(model, tok, "abc", 10, generator=torch.Generator().manual_seed(1)))
    assert len(pieces) == 10 and all(len(p) == 1 for p in pieces)
    text = generate_text(model, tok, "abc", 10, generator=torch.Generator().manual_seed(1))
    assert text == "abc" + "".join(pieces)
    with pytest.raises(ValueError, match="prompt is empty"):
        next(stream_text(model, tok, "", 5))


def test_generation_leaves_a_training_model_in_training_mode(model):
    model.train()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training
    model.eval()


def test_byte_level_tokens_stream_whole_characters():
    # A random model over byte-level tokens writes bytes in any order: characters split
    # across tokens must come out whole, and broken ones as U+FFFD, as decode() gives them.
    from gptlib.tokenizers import BPETokenizer

    tokenizer = BPETokenizer.train("naïve café 😀 日本 " * 20, 280)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=16, dropout=0.0))
    prompt = "café"
    ids = torch.tensor([tokenizer.encode(prompt)])
    written = generate(model, ids, 60, generator=torch.Generator().manual_seed(3))
    pieces = list(stream_text(model, tokenizer, prompt, 60, generator=torch.Generator().manual_seed(3)))
    assert prompt + "".join(pieces) == tokenizer.decode(written[0])
    new = written[0, len(ids[0]):].tolist()
    assert any(128 <= t < 256 for t in new)  # it did write single bytes of multi-byte characters
