"""Worked answers to the exercises of chapter 03 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/03_self_attention_math.py
"""

import math

import torch
import torch.nn.functional as F

from gptlib.attention import AttentionLM
from gptlib.data import get_batch, load_dataset
from gptlib.train import TrainConfig, train

# Chapter 3's settings for AttentionLM (assets/attention-lm/make.py).
CONFIG = TrainConfig(batch_size=32, max_iters=1000, learning_rate=1e-2, min_lr=1e-2, warmup_iters=0,
                     weight_decay=0.01, beta2=0.999, grad_clip=0.0, eval_interval=1000, eval_iters=10,
                     seed=1)


def exponential_weights(T: int, ratio: float = 2.0) -> torch.Tensor:
    """Version 3 with scores s * ln(ratio) for the key at position s: the softmax gives
    each position `ratio` times the weight of the one before it (a row's constant does
    not matter), masked to the past."""
    s = torch.arange(T, dtype=torch.float32)
    scores = (s * math.log(ratio)).expand(T, T)
    scores = scores.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf"))
    return F.softmax(scores, dim=-1)


def exercise_1() -> float:
    """Row 3 of 4 positions, each twice the one before: weights 1, 2, 4, 8 over 15; the
    newest position's share is 8/15."""
    wei = exponential_weights(4)
    assert torch.allclose(wei.sum(-1), torch.ones(4))
    return wei[3, 3].item()


def exercise_2(constant: float = 5.0, T: int = 4) -> float:
    """softmax(s + c) = softmax(s): e^(s+c) = e^c e^s, and e^c cancels in the division. So
    any constant row of scores gives the uniform 1/T."""
    return F.softmax(torch.full((T,), constant), dim=-1)[0].item()


def exercise_3(heads=(1, 4, 8), steps: int = 1000) -> dict:
    """AttentionLM with 1, 4 and 8 heads (n_embd 32, so head sizes 32, 8 and 4): the
    validation loss after chapter 3's 1,000 steps, on chapter 4's 256 windows.

    Four heads do best (2.20), eight about as well (2.21); one head of 32 channels is
    clearly worse (2.29): one pattern of weights per position cannot gather the previous
    character and the start of the word at once."""
    text, tokenizer, train_data, val_data = load_dataset()
    config = TrainConfig.from_dict({**CONFIG.to_dict(), "max_iters": steps, "eval_interval": steps})
    xv, yv = get_batch(val_data, 256, 32, generator=torch.Generator().manual_seed(2))
    losses = {}
    for n_head in heads:
        torch.manual_seed(0)
        model = AttentionLM(tokenizer.vocab_size, n_embd=32, n_head=n_head, block_size=32)
        train(model, train_data, val_data, config, progress=False)
        model.eval()
        with torch.no_grad():
            losses[n_head] = model(xv, yv)[1].item()
    return losses


def exercise_4() -> int:
    """Position 0 has no previous character: it can only attend to itself."""
    return 0


def exercise_5(steps: int = 1000) -> dict:
    """AttentionLM without its position embedding (zeroed and frozen): without positions
    a head cannot single out the previous character, only average what came before. The
    loss rises to 2.41 (2.20 with positions), and the heads put 0.14 of their weight on the
    previous character, on average over heads and positions."""
    text, tokenizer, train_data, val_data = load_dataset()
    config = TrainConfig.from_dict({**CONFIG.to_dict(), "max_iters": steps, "eval_interval": steps})
    xv, yv = get_batch(val_data, 256, 32, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = AttentionLM(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=32)
    with torch.no_grad():
        model.position_embedding.weight.zero_()
    model.position_embedding.weight.requires_grad_(False)
    train(model, train_data, val_data, config, progress=False)
    model.eval()
    with torch.no_grad():
        loss = model(xv, yv)[1].item()
        _, weights = model.attention(model.embed(xv[:8]), return_weights=True)
    previous = weights.diagonal(offset=-1, dim1=-2, dim2=-1).mean().item()
    return {"loss": loss, "mean weight on the previous character": previous}


if __name__ == "__main__":
    print("1.", f"{exercise_1():.4f}")
    print("2.", exercise_2())
    print("3.", exercise_3())
    print("4.", exercise_4())
    print("5.", exercise_5())
