"""Worked answers to the exercises of chapter 04 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/04_masking_and_scaling.py
"""

import json
import math
from pathlib import Path
from unittest import mock

import torch

import gptlib.attention
from gptlib.attention import AttentionLM
from gptlib.bigram import generate
from gptlib.data import get_batch, load_dataset
from gptlib.train import TrainConfig, train

ASSET = Path(__file__).resolve().parents[1] / "assets" / "attention-lm" / "model.safetensors"


def chapter_3_config(**changes) -> TrainConfig:
    from safetensors import safe_open

    with safe_open(ASSET, framework="pt") as f:
        config = TrainConfig.from_dict(json.loads(f.metadata()["train_config"]))
    return TrainConfig.from_dict({**config.to_dict(), **changes})


def exercise_1(steps: int = 3000) -> dict:
    """The cheater writes nonsense. In training, each position read the next character
    on its right; when generating there is nothing on its right (the last position
    is the one being predicted), so what it learned to rely on is missing. Put the
    mask back on and its loss shows it: far worse than the honest model's 2.2."""
    text, tokenizer, train_data, val_data = load_dataset()
    torch.manual_seed(0)
    cheater = AttentionLM(tokenizer.vocab_size, n_embd=32, n_head=4, block_size=32, causal=False)
    train(cheater, train_data, val_data, chapter_3_config(max_iters=steps, eval_interval=steps),
          progress=False)
    cheater.eval()
    xv, yv = get_batch(val_data, 256, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        peeking = cheater(xv, yv)[1].item()
        cheater.attention.causal = True  # what generation amounts to: no future to read
        masked = cheater(xv, yv)[1].item()
        cheater.attention.causal = False
    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    ids = generate(cheater, prompt, 100, generator=torch.Generator().manual_seed(0))[0]
    written = tokenizer.decode(ids.tolist())
    return {"loss peeking": peeking, "loss with the mask": masked, "text": written}


def exercise_2(head_size: int = 16) -> float:
    """q . k has variance head_size (for unit-variance q and k); divided by head_size it
    has variance 1 / head_size: the scores are squashed towards 0, and the softmax
    starts almost uniform, more so the bigger the head."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(100_000, head_size, generator=g), torch.randn(100_000, head_size, generator=g)
    print(f"measured: {((q * k).sum(1) / head_size).var():.4f}")
    return 1 / head_size


def exercise_3(steps: int = 200) -> dict:
    """A head size of 128, with and without the scale: the losses, and how peaked the
    attention is at initialisation (the mean of each row's largest weight).

    Without the scale the scores' spread is √128 ≈ 11 times larger, and the softmax
    starts far more peaked (0.85 against 0.24). Yet in this one-layer model the two
    losses end level after 200 steps (2.60 and 2.59, the mean of the last 50; the
    unscaled one even drops faster at first): the harm the scale prevents, tiny
    gradients through a saturated softmax, needs deeper stacks and longer runs to show.
    """
    text, tokenizer, train_data, val_data = load_dataset()
    results = {}
    fused = torch.nn.functional.scaled_dot_product_attention
    for name in ("scaled", "unscaled"):
        def scores(q, k):
            raw = q @ k.transpose(-2, -1)
            return raw / math.sqrt(q.shape[-1]) if name == "scaled" else raw

        def fused_attention(*args, **kwargs):  # the path training takes
            return fused(*args, **kwargs, **({} if name == "scaled" else {"scale": 1.0}))

        with mock.patch.object(gptlib.attention, "attention_scores", scores), \
                mock.patch.object(gptlib.attention.F, "scaled_dot_product_attention", fused_attention):
            torch.manual_seed(0)
            model = AttentionLM(tokenizer.vocab_size, n_embd=512, n_head=4, block_size=32)
            x, _ = get_batch(train_data, 8, 32, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                _, weights = model.attention(model.embed(x), return_weights=True)
            state = train(model, train_data, val_data,
                          chapter_3_config(max_iters=steps, eval_interval=steps, eval_iters=1),
                          progress=False)
        results[name] = {"peak weight at start": weights.amax(-1).mean().item(),
                         "losses": state.history["loss"]}
    return results


def exercise_4() -> bool:
    """Does a masked language model's input contain the characters it must predict? No:
    they are replaced by a mask token, so seeing the whole text does not show the answer."""
    return False


def exercise_5(p: float = 0.5, weight: float = 0.6) -> float:
    """Kept weights are divided by 1 - p: 0.6 becomes 1.2. A row of weights then no longer
    sums to 1, but its expected value does, which is what the next layer was trained on."""
    return weight / (1 - p)


if __name__ == "__main__":
    print("1.", exercise_1())
    print("2.", exercise_2())
    print("3.", {k: {"peak weight at start": round(v["peak weight at start"], 3),
                     "mean of the first 50 losses": round(sum(v["losses"][:50]) / 50, 3)}
                 for k, v in exercise_3().items()})
    print("4.", exercise_4())
    print("5.", exercise_5())
