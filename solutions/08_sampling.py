"""Worked answers to the exercises of chapter 08 (`tests/test_solutions.py` checks them).

    .venv/bin/python solutions/08_sampling.py
"""

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlib.checkpoint import load_checkpoint
from gptlib.data import load_dataset
from gptlib.model import GPT, GPTConfig
from gptlib.sample import filter_logits, generate

LAPTOP = Path(__file__).resolve().parents[1] / "assets" / "shakespeare-laptop"


def laptop():
    checkpoint = load_checkpoint(LAPTOP)
    return checkpoint.model, checkpoint.tokenizer


@torch.no_grad()
def greedy(model, idx, n):
    """Always the likeliest next character."""
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size:])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


def exercise_1(n: int = 300) -> dict:
    """Greedy decoding soon loops: the same likeliest continuations come back, and the
    text repeats a few phrases. Top-k with k = 1 keeps only the likeliest character, so
    sampling from what is left is greedy decoding."""
    model, tokenizer = laptop()
    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    by_hand = greedy(model, prompt, n)
    top1 = generate(model, prompt, n, top_k=1, window_shift=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_hand, top1)
    return {"top_k": 1, "text": tokenizer.decode(by_hand[0].tolist())}


def exercise_2(temperatures=(0.5, 0.8, 1.0, 1.5, 2.0), p: float = 0.9, n: int = 300) -> dict:
    """The mean number of characters top-p 0.9 keeps, over the next-character
    distributions along a stretch of validation text, at each temperature. It grows
    with the temperature: a flatter distribution needs more characters to reach 90%."""
    model, tokenizer = laptop()
    _, _, _, val_data = load_dataset()
    with torch.no_grad():
        chunks = val_data[:n].split(model.config.block_size)
        logits = torch.cat([model(chunk.unsqueeze(0))[0][0] for chunk in chunks])
    kept = {}
    for temperature in temperatures:
        filtered = filter_logits(logits, temperature=temperature, top_p=p)
        kept[temperature] = torch.isfinite(filtered).sum(-1).float().mean().item()
    return kept


@torch.no_grad()
def exercise_3(contexts=(32, 64, 128, 256)) -> dict:
    """The time of one next-character step after a context of L characters, without and
    with the cache (the gpu preset's shape, random weights), and how many positions each
    step feeds the model: L + 1 (at most block_size) against 1. The speed-up grows with L
    (about 2x at 32 characters and 8x at 256 in one run on a 2-core CPU), less than in
    proportion: a step has costs that do not depend on L (every weight is read once)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.0)).eval()
    results = {}
    for length in contexts:
        context = torch.randint(model.config.vocab_size, (1, length))
        new = torch.randint(model.config.vocab_size, (1, 1))
        started = time.perf_counter()
        model(torch.cat([context, new], dim=1)[:, -model.config.block_size:])
        without = time.perf_counter() - started
        cache = model.new_cache()
        model(context[:, -(model.config.block_size - 1):], cache=cache)  # the context, read once before
        started = time.perf_counter()
        model(new, cache=cache)
        with_cache = time.perf_counter() - started
        results[length] = {"fed without": min(length + 1, model.config.block_size), "fed with": 1,
                           "seconds without": without, "seconds with": with_cache}
    return results


def exercise_4(line: str = "BAPTISTA:\nGood morrow, neighbour Gremio.\nGod save you, gentlemen!\n"):
    """The probability of each actual next character of a validation line, and the most
    surprising one (the lowest probability)."""
    model, tokenizer = laptop()
    ids = torch.tensor([tokenizer.encode(line)])
    with torch.no_grad():
        probs = F.softmax(model(ids)[0][0, :-1], dim=-1)
    actual = probs[torch.arange(len(line) - 1), ids[0, 1:]]
    worst = actual.argmin().item() + 1  # the character predicted at that step
    return {"probabilities": actual.tolist(), "most surprising": line[worst], "at": worst}


@torch.no_grad()
def exercise_5(n: int = 2000, shift: int = 64) -> dict:
    """The mean loss of the first ``n`` validation characters (after the first block)
    predicted from their last block_size characters (a window that slides by one)
    against the windows that jump by ``shift`` (sample.stream's default, half a block).

    On 2,000 validation characters the jumping windows cost nothing measurable (1.257
    nats per character against 1.266 sliding: even a little lower; the model was trained
    on windows that start anywhere, so 64 to 128 characters of context serve it about as
    well as 128), and the cache works on every step but one in 64: worth it."""
    model, tokenizer = laptop()
    _, _, _, val_data = load_dataset()
    block = model.config.block_size
    data = val_data[:n + block]
    targets = torch.arange(block, n + block)  # predict these, each with a full block possible
    # Sliding: every character predicted from exactly the block_size characters before it.
    sliding = []
    for chunk in targets.split(64):
        windows = torch.stack([data[t - block:t] for t in chunk])
        sliding.append(F.cross_entropy(model(windows)[0][:, -1], data[chunk], reduction="none"))
    sliding = torch.cat(sliding)
    # Jumping (sample.stream): character t is predicted from the window [start, t), where
    # start is the first multiple of `shift` that keeps the window within a block. All the
    # characters of one window come out of one forward pass (causal attention).
    jumping = torch.empty(len(targets))
    starts = [-(-(t - block) // shift) * shift if t > block else 0 for t in targets.tolist()]
    for start in sorted(set(starts)):
        rows = [i for i, s in enumerate(starts) if s == start]
        last = targets[rows[-1]].item()
        logits = model(data[start:last].unsqueeze(0))[0][0]
        for i in rows:
            t = targets[i].item()
            jumping[i] = F.cross_entropy(logits[t - 1 - start], data[t])
    return {"sliding": sliding.mean().item(), "jumping": jumping.mean().item()}


def exercise_6(block_size: int = 128) -> int:
    """A position attends to itself and the block_size - 1 positions before it."""
    return block_size - 1


if __name__ == "__main__":
    print("1.", exercise_1())
    print("2.", exercise_2())
    print("3.", exercise_3())
    r = exercise_4()
    print("4.", repr(r["most surprising"]), "at", r["at"], f"p = {min(r['probabilities']):.4f}")
    print("5.", exercise_5())
    print("6.", exercise_6())
