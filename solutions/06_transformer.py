"""Worked answers to the exercises of chapter 06 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/06_transformer.py
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.model import GPT, GPTConfig


def gradient_per_layer(order: str, depth: int = 24, width: int = 32, seed: int = 0) -> list[float]:
    """Section 3's experiment: each layer's gradient norm in a deep stack of tanh layers.

    ``order``: "plain" (h = f(h)), "pre-norm" residual (h = h + f(LN(h)), the course's
    block) or "post-norm" residual (h = LN(h + f(h)), the original Transformer's).
    """
    torch.manual_seed(seed)
    layers = [nn.Linear(width, width) for _ in range(depth)]
    h = torch.randn(64, width)
    for layer in layers:
        if order == "plain":
            h = torch.tanh(layer(h))
        elif order == "pre-norm":
            h = h + torch.tanh(layer(F.layer_norm(h, (width,))))
        else:
            h = F.layer_norm(h + torch.tanh(layer(h)), (width,))
    h.pow(2).mean().backward()
    return [layer.weight.grad.norm().item() for layer in layers]


def exercise_1() -> dict:
    """Post-norm puts a LayerNorm on the residual path itself: every addition is normalised
    again, so the identity path is no longer clean, and the gradient reaching the first
    layer of 24 is about 1e-6: far above the plain stack's 4e-8, far below pre-norm's 3.
    That is why post-norm Transformers need a learning-rate warmup to train at all
    (Xiong et al., 2020), and why GPT-2 moved the LayerNorms before each sub-layer."""
    return {order: gradient_per_layer(order) for order in ("plain", "pre-norm", "post-norm")}


def exercise_2(steps: int = 300, seed: int = 0) -> dict:
    """GELU against ReLU: the same small GPT, the same batches, ``steps`` steps each.

    At this scale and length the two are close (in the run printed below ReLU even ends
    0.05 lower, on one batch of validation windows): GELU's smoothness is no visible
    advantage in a short run of a small model.
    """
    from gptlib.data import get_batch, load_dataset

    text, tokenizer, train_data, val_data = load_dataset()
    results = {}
    for name in ("gelu", "relu"):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4,
                              n_embd=64, dropout=0.0))
        if name == "relu":
            for block in model.blocks:
                block.ffwd.forward = (lambda ff: lambda x: ff.proj(F.relu(ff.fc(x))))(block.ffwd)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batches = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x, y = get_batch(train_data, 32, 32, generator=batches)
            _, loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            x, y = get_batch(val_data, 64, 32, generator=torch.Generator().manual_seed(1))
            results[name] = model(x, y)[1].item()
    return results


def exercise_3() -> int:
    """GPT-2 small's shape in the course's GPT, head tied to the token embedding (meta device:
    shapes only). GPT-2 itself has 27,648 more: biases on its query, key and value
    projections (12 layers x 3 x 768; chapter 12), 124,439,808 in all."""
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                              dropout=0.0, tied_head=True))
    return model.num_parameters()


def exercise_4() -> int:
    """The head's weight matrix of the chapter's `big` model: vocab_size x n_embd numbers
    that tying shares with the token embedding (0.2% of this model; at GPT-2's vocabulary
    of 50,257 it is 38.6 million numbers, 31% of GPT-2 small)."""
    big = GPTConfig()
    return big.vocab_size * big.n_embd


def last_outputs_agree(n_layer: int) -> bool:
    """Do "abc" and "bac" give the same output at the last position, without positions?"""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=n_layer, n_head=2, n_embd=16,
                          dropout=0.0)).eval()
    with torch.no_grad():
        model.position_embedding.table.weight.zero_()
        abc, bac = (model(torch.tensor([ids]))[0][0] for ids in ([1, 2, 3], [2, 1, 3]))
    return bool(torch.allclose(abc[-1], bac[-1], atol=1e-6))


def exercise_5() -> bool:
    """No, not with two layers or more. In one layer the last position averages the same
    *set* of characters whatever their order, so one layer alone gives the same output.
    But the positions before it see different prefixes ("a" alone against "b" alone),
    so in the second layer they pass on different things: the causal mask lets depth
    recover order (Haviv et al., 2022)."""
    assert last_outputs_agree(n_layer=1)
    return last_outputs_agree(n_layer=2)


if __name__ == "__main__":
    grads = exercise_1()
    print("1.", {order: f"{g[0]:.1e}" for order, g in grads.items()}, "(first layer's gradient norm)")
    print("2.", exercise_2())
    print("3.", f"{exercise_3():,}")
    print("4.", f"{exercise_4():,}")
    print("5.", exercise_5())
