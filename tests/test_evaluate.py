import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.evaluate import (
    Metrics,
    evaluate,
    loss_by_position,
    loss_by_span,
    metrics_from_losses,
    token_losses,
    unigram_losses,
)
from gptlib.model import GPT, GPTConfig
from gptlib.train import full_loss


class Uniform(nn.Module):
    """Every token equally likely, whatever the context."""

    block_size = 4

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.vocab_size), None


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0))


def test_token_losses_are_the_full_loss_prediction_by_prediction(model):
    data = torch.randint(11, (8 * 5 + 3,))  # five whole windows and a short one
    losses = token_losses(model, data, batch_size=2)
    assert losses.shape == (len(data) - 1,)
    assert losses.mean().item() == pytest.approx(full_loss(model, data), abs=1e-6)
    # Prediction 8 opens the second window: it sees data[8] alone.
    logits, _ = model(data[8:9].unsqueeze(0))
    assert losses[8].item() == pytest.approx(F.cross_entropy(logits[0], data[9:10]).item(), abs=1e-6)
    # Prediction 15 ends it: it sees data[8..15].
    logits, _ = model(data[8:16].unsqueeze(0))
    assert losses[15].item() == pytest.approx(F.cross_entropy(logits[0, -1:], data[16:17]).item(),
                                              abs=1e-6)


def test_a_model_of_counts_alone_is_scored_too():
    from gptlib.bigram import CountBigramModel
    from gptlib.bigram import full_loss as bigram_full_loss

    data = torch.randint(5, (300,))
    bigram = CountBigramModel.from_data(data[:200], 5)  # no parameters, only a buffer of counts
    losses = token_losses(bigram, data[200:], block_size=16)
    assert losses.mean().item() == pytest.approx(bigram_full_loss(bigram, data[200:]), abs=1e-6)


def test_a_uniform_guess_has_the_vocabulary_as_perplexity_and_log2_v_bits():
    result = evaluate(Uniform(65), torch.randint(65, (100,)))
    assert result.nats == pytest.approx(math.log(65))
    assert result.perplexity == pytest.approx(65)
    assert result.bits_per_char == pytest.approx(math.log2(65))
    assert (result.tokens, result.characters) == (99, 99)


def test_bits_per_character_count_the_characters_not_the_tokens():
    losses = torch.full((10,), 2.0)  # 10 sub-word tokens spelling 40 characters
    result = metrics_from_losses(losses, characters=40)
    assert result.nats == pytest.approx(2.0)
    assert result.bits_per_char == pytest.approx(20.0 / 40 / math.log(2))
    assert "bits per character" in str(result) and isinstance(result, Metrics)


def test_nothing_to_score_is_a_clear_error(model):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        token_losses(model, torch.tensor([3]))
    with pytest.raises(ValueError, match="characters must be positive"):
        metrics_from_losses(torch.ones(3), characters=0)


def test_loss_by_position_averages_each_position_over_the_whole_windows():
    losses = torch.tensor([4.0, 2.0, 1.0, 6.0, 4.0, 3.0, 9.0])  # two windows of 3, one left over
    assert loss_by_position(losses, 3).tolist() == [5.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="at least one whole window of 8"):
        loss_by_position(losses, 8)


def test_loss_by_span_counts_each_prediction_where_its_target_lies():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])  # targets at offsets 11, 12, 13, 14
    spans = [("first", 0, 13), ("second", 13, 100), ("none", 200, 300)]
    assert loss_by_span(losses, spans, offset=10) == {"first": 1.5, "second": 3.5}


def test_unigram_losses_are_minus_log_the_smoothed_frequencies():
    train = torch.tensor([0, 0, 0, 1])  # counts 3, 1, 0 -> 4, 2, 1 after add-one
    losses = unigram_losses(train, torch.tensor([2, 0, 1, 2]), vocab_size=3)
    assert torch.allclose(losses, -torch.log(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64) / 7))
