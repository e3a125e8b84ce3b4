"""Worked answers to the exercises of chapter 05 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/05_positional_embeddings.py
"""

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gptlib.attention import AttentionLM, Head, attention_weights
from gptlib.data import load_dataset
from gptlib.positional import RotaryEmbedding, sinusoidal_encoding
from gptlib.train import TrainConfig, full_loss, train

# Chapter 3's settings for AttentionLM (assets/attention-lm/make.py).
CONFIG = TrainConfig(batch_size=32, max_iters=1000, learning_rate=1e-2, min_lr=1e-2, warmup_iters=0,
                     weight_decay=0.01, beta2=0.999, grad_clip=0.0, eval_interval=1000, eval_iters=10,
                     seed=1)


def exercise_1() -> int:
    """A causal head's output at t depends on the tokens 0..t *in their positions*: after a
    shuffle, position t sees another set of tokens, except position 0, which sees only
    the first token, kept in place."""
    torch.manual_seed(0)
    head = Head(16, 8, block_size=8, causal=True).eval()
    x = torch.randn(1, 8, 16)
    perm = torch.tensor([0, 3, 7, 1, 6, 2, 5, 4])  # the first token stays first
    out, out_shuffled = head(x), head(x[:, perm])
    same = [t for t in range(8) if torch.allclose(out_shuffled[0, t], out[0, perm[t]], atol=1e-6)]
    assert same == [0]
    return same[0]


ASSETS = Path(__file__).resolve().parent.parent / "assets"


def load_attention_lm(positions: str, block_size: int = 32) -> AttentionLM:
    """Chapter 3's model (learned) or one of chapter 5's three others, as section 5 loads them."""
    file = (ASSETS / "attention-lm" / "model.safetensors" if positions == "learned"
            else ASSETS / "positions" / f"{positions}.safetensors")
    model = AttentionLM(65, n_embd=32, n_head=4, block_size=block_size, positions=positions)
    model.load_state_dict(load_file(file))
    return model.eval()


def exercise_2() -> dict:
    """Chapter 3's model with its trained position table set to zero, no retraining.

    It falls apart: 2.18 becomes 2.78, worse than the bigram's 2.48, while the model that
    trained without positions scores 2.39. A model trained with a table builds on it (its
    attention reads position from it); one trained without learns to do without."""
    _, _, _, val_data = load_dataset()
    model = load_attention_lm("learned")
    losses = {"learned": full_loss(model, val_data)}
    with torch.no_grad():
        model.position_embedding.weight.zero_()
    losses["learned, table zeroed"] = full_loss(model, val_data)
    losses["trained without positions"] = full_loss(load_attention_lm("none"), val_data)
    return losses


def exercise_3(C: int = 32, T: int = 64) -> bool:
    """Is PE[t] . PE[t + k] monotonic in k? No: it falls from C at k = 0, then rises and
    falls again as the fast sinusoids come back into phase. Sinusoids tell near from far
    only roughly; the model must learn to read distance from them."""
    pe = sinusoidal_encoding(T, C)
    dots = pe[0] @ pe.T  # PE[0] . PE[k], the same for every t
    return bool((dots[1:] <= dots[:-1]).all())


class ALiBiAttentionLM(AttentionLM):
    """AttentionLM without positions in its input. Instead, head h lowers the score of query t
    on key s by ``slope_h * (t - s)`` (Press et al., 2022): the further back, the less it counts."""

    def __init__(self, vocab_size, n_embd=32, n_head=4, block_size=32):
        super().__init__(vocab_size, n_embd, n_head, block_size, positions="none")
        slopes = 2.0 ** (-8.0 * torch.arange(1, n_head + 1) / n_head)  # 1/4, 1/16, 1/64, 1/256
        distance = torch.arange(block_size).view(-1, 1) - torch.arange(block_size).view(1, -1)  # t - s
        self.register_buffer("bias", -slopes.view(-1, 1, 1) * distance, persistent=False)

    def forward(self, idx, targets=None):
        att, T = self.attention, idx.shape[1]
        x = self.embed(idx)
        q, k, v = (att._split_heads(layer(x)) for layer in (att.query, att.key, att.value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(att.head_size) + self.bias[:, :T, :T]
        weights = attention_weights(scores, causal=True)
        x = x + att.proj((weights @ v).transpose(1, 2).reshape(x.shape))
        logits = self.lm_head(x)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def exercise_4(steps: int = 1000, long: int = 128) -> dict:
    """ALiBi at section 5's budget, scored on windows of 32 and of ``long`` like the others.

    At 32 it scores 2.283, between no positions (2.388) and the learned table (2.183): with
    these slopes and one layer it buys less than the others. Past 32 it is the only one
    that keeps its quality: 2.299 over windows of 128 (rotary 2.940, sinusoidal 3.266, none
    2.483), because a bias that only grows with distance means the same at any length."""
    _, tokenizer, train_data, val_data = load_dataset()
    config = replace(CONFIG, max_iters=steps, eval_interval=steps)
    torch.manual_seed(0)
    model = ALiBiAttentionLM(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=32)
    train(model, train_data, val_data, config, progress=False)
    longer = ALiBiAttentionLM(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=long)
    longer.load_state_dict(model.state_dict())
    return {"window 32": full_loss(model.eval(), val_data),
            f"window {long}": full_loss(longer.eval(), val_data)}


def exercise_5(cached: int = 10) -> int:
    """With a KV cache the new token is fed alone; RoPE must rotate it as the token at
    position ``cached``, not 0, or its scores against the cached keys would be wrong."""
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, 32)
    x = torch.randn(1, 1, 11, 8)
    whole = rope(x)
    assert torch.allclose(rope(x[:, :, cached:], offset=cached), whole[:, :, cached:], atol=1e-6)
    return cached


if __name__ == "__main__":
    print("1.", exercise_1())
    print("2.", exercise_2())
    print("3.", exercise_3())
    print("4.", exercise_4())
    print("5.", exercise_5())
