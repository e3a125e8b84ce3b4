"""Worked answers to the exercises of chapter 05 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/05_positional_embeddings.py
"""

import torch
import torch.nn.functional as F

from gptlib.attention import AttentionLM, Head
from gptlib.data import get_batch, load_dataset
from gptlib.positional import RotaryEmbedding, sinusoidal_encoding
from gptlib.train import TrainConfig, train

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


def validation_loss(model, val_data) -> float:
    model.eval()
    with torch.no_grad():
        xv, yv = get_batch(val_data, 256, 32, generator=torch.Generator().manual_seed(2))
        return model(xv, yv)[1].item()


def exercise_2(steps: int = 1000) -> dict:
    """AttentionLM with its position table frozen at zero, against the same with positions.

    Without positions the loss is clearly worse (about 2.4 against 2.2 in 1,000 steps): a
    one-layer causal model can tell little of order (only how many tokens it averages)."""
    text, tokenizer, train_data, val_data = load_dataset()
    config = TrainConfig.from_dict({**CONFIG.to_dict(), "max_iters": steps, "eval_interval": steps})
    losses = {}
    for name in ("with positions", "without"):
        torch.manual_seed(0)
        model = AttentionLM(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=32)
        if name == "without":
            with torch.no_grad():
                model.position_embedding.weight.zero_()
            model.position_embedding.weight.requires_grad_(False)
        train(model, train_data, val_data, config, progress=False)
        losses[name] = validation_loss(model, val_data)
    return losses


def exercise_3(C: int = 32, T: int = 64) -> bool:
    """Is PE[t] . PE[t + k] monotonic in k? No: it falls from C at k = 0, then rises and
    falls again as the fast sinusoids come back into phase. Sinusoids tell near from far
    only roughly; the model must learn to read distance from them."""
    pe = sinusoidal_encoding(T, C)
    dots = pe[0] @ pe.T  # PE[0] . PE[k], the same for every t
    return bool((dots[1:] <= dots[:-1]).all())


class RotaryAttentionLM(AttentionLM):
    """AttentionLM with RoPE on each head's queries and keys instead of a position table."""

    def __init__(self, vocab_size, n_embd=32, n_head=4, block_size=32):
        super().__init__(vocab_size, n_embd, n_head, block_size)
        del self.position_embedding
        self.rope = RotaryEmbedding(n_embd // n_head, block_size)

    def forward(self, idx, targets=None):
        att = self.attention
        x = self.token_embedding(idx)
        q, k, v = (att._split_heads(layer(x)) for layer in (att.query, att.key, att.value))
        out = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + att.proj(out.transpose(1, 2).reshape(x.shape))
        logits = self.lm_head(x)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def exercise_4(steps: int = 3000) -> dict:
    """Learned positions against RoPE in AttentionLM, the same steps and batches.

    RoPE ends a little lower (2.13 against 2.15 after 3,000 steps, on 256 validation
    windows of chapter 4's draw), with no position table to learn."""
    text, tokenizer, train_data, val_data = load_dataset()
    config = TrainConfig.from_dict({**CONFIG.to_dict(), "max_iters": steps, "eval_interval": steps})
    losses = {}
    for name, cls in (("learned", AttentionLM), ("rope", RotaryAttentionLM)):
        torch.manual_seed(0)
        model = cls(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=32)
        train(model, train_data, val_data, config, progress=False)
        losses[name] = validation_loss(model, val_data)
    return losses


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
