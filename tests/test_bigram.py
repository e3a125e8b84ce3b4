import math

import pytest
import torch

from gptlib.bigram import (
    BigramLanguageModel,
    CountBigramModel,
    bigram_counts,
    full_loss,
    generate,
)
from gptlib.data import CharTokenizer, load_dataset


@pytest.fixture(scope="module")
def corpus():
    _, tok, train, val = load_dataset()
    return tok, train, val


def test_counts_match_a_loop_over_the_pairs():
    tok = CharTokenizer("abracadabra")
    ids = torch.tensor(tok.encode("abracadabra"))
    counts = bigram_counts(ids, tok.vocab_size)
    expected = torch.zeros(tok.vocab_size, tok.vocab_size, dtype=torch.long)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist()):
        expected[a, b] += 1
    assert torch.equal(counts, expected)
    assert counts[tok.stoi["a"], tok.stoi["b"]] == 2
    assert counts.sum() == len(ids) - 1


def test_count_model_rows_are_smoothed_probability_distributions():
    counts = torch.tensor([[3, 0], [1, 1]])
    model = CountBigramModel(counts, smoothing=1.0)
    torch.testing.assert_close(model.probs, torch.tensor([[0.8, 0.2], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="smoothing"):
        CountBigramModel(counts, smoothing=-1)


def test_count_model_reaches_the_bigram_optimum_on_val(corpus):
    tok, train, val = corpus
    model = CountBigramModel.from_data(train, tok.vocab_size)
    assert full_loss(model, val) == pytest.approx(2.48, abs=0.01)
    # Fitted to train by counting, it does better there than on text it has not seen.
    assert full_loss(model, train) < full_loss(model, val)


def test_count_model_loss_equals_the_mean_negative_log_probability():
    ids = torch.tensor([0, 1, 1, 0, 1])
    model = CountBigramModel.from_data(ids, 2, smoothing=0.0)
    # P(1|0) = 1, P(1|1) = 1/2, P(0|1) = 1/2: pairs 01, 11, 10, 01.
    expected = -(math.log(1) + math.log(0.5) + math.log(0.5) + math.log(1)) / 4
    assert full_loss(model, ids) == pytest.approx(expected)


def test_neural_bigram_starts_at_a_uniform_guess(corpus):
    tok, _, val = corpus
    torch.manual_seed(0)
    model = BigramLanguageModel(tok.vocab_size)
    assert full_loss(model, val) == pytest.approx(math.log(65), abs=0.02)


def test_forward_returns_logits_and_an_optional_loss():
    model = BigramLanguageModel(5)
    idx = torch.tensor([[0, 1, 2], [3, 4, 0]])
    logits, loss = model(idx)
    assert logits.shape == (2, 3, 5) and loss is None
    _, loss = model(idx, torch.tensor([[1, 2, 3], [4, 0, 1]]))
    assert loss.ndim == 0 and loss.item() > 0


def test_generate_extends_the_prompt_reproducibly(corpus):
    tok, train, _ = corpus
    model = CountBigramModel.from_data(train, tok.vocab_size)
    prompt = torch.tensor([tok.encode("ROMEO:")])
    a = generate(model, prompt, 50, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 50, generator=torch.Generator().manual_seed(7))
    assert a.shape == (1, 56)
    assert torch.equal(a, b)
    assert tok.decode(a[0]).startswith("ROMEO:")


def test_generate_follows_the_model():
    # A model that always predicts "the next id": 0 -> 1 -> 2 -> 0 ...
    counts = torch.tensor([[0, 1000, 0], [0, 0, 1000], [1000, 0, 0]])
    model = CountBigramModel(counts, smoothing=0.0)
    out = generate(model, torch.tensor([[0]]), 6)
    assert out.tolist() == [[0, 1, 2, 0, 1, 2, 0]]


def test_generate_feeds_a_model_with_a_block_at_most_its_block():
    from gptlib.attention import AttentionLM

    torch.manual_seed(0)
    model = AttentionLM(7, n_embd=8, n_head=2, block_size=8).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    out = generate(model, torch.zeros(1, 3, dtype=torch.long), 20)
    assert out.shape == (1, 23) and max(seen) == 8 and seen[:6] == [3, 4, 5, 6, 7, 8]
