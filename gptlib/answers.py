"""The answers to the chapters' self-checking exercises. Spoilers: try each exercise first.

This module holds what every exercise cell checks against: the expected answer, the hint
shown while the answer is missing or wrong, and the reason behind the answer, shown once it
is right. The cells show none of it, so that the answer is not there to read; look here
only after trying (the worked answers, with the code that finds them, are in
``solutions/``).

Each entry is keyed by its exercise, ``"CC.N"``: chapter CC's exercise N, numbered as the
chapter numbers them. An expected value that a chapter computes from the corpus, a preset
or a shipped model is computed here the same way, on first use only (nothing is loaded
when this module is imported). An exercise whose answer is a function (chapter 10's
backward passes, chapter 13's merge) is checked by calling it on inputs of the check's own
and comparing the result with a reference: its expected value is ``True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # the checkpoints the chapters load


class Computed:
    """An expected value computed on first use by ``compute()`` (it imports what it needs)."""

    def __init__(self, compute: Callable[[], Any]):
        self.compute = compute

    def __repr__(self) -> str:
        return f"Computed({self.compute.__name__})"


@dataclass(frozen=True)
class Answer:
    """One exercise: its expected value (or a :class:`Computed`), hint, why and tolerance.

    ``judge``, where set, turns a learner's answer into what is compared with
    ``expected``. For an answer that is a function: ``None`` while the function returns
    ``None``, else whether its result matches the reference.
    """

    expected: Any
    hint: str
    why: str = ""
    tolerance: float = 1e-3
    judge: Callable[[Any], Any] | None = None


# The values computed from the corpus, presets and shipped models, as the chapters compute them.

def _text() -> str:
    from gptlib.data import load_shakespeare

    return load_shakespeare()


def _distinct_words() -> int:  # 01.1
    return len(set(_text().split()))


def _only_in_training() -> set:  # 01.2
    text = _text()
    n = int(0.9 * len(text))  # chapter 1's split, by characters
    return set(text[:n]) - set(text[n:])


def _largest_val_block_size() -> int:  # 01.3
    from gptlib.data import load_dataset

    return len(load_dataset()[3]) - 1


def _training_chunks() -> int:  # 01.4
    from gptlib.data import load_dataset

    return len(load_dataset()[2]) - 8


def _best_smoothing() -> float:  # 02.1
    from gptlib.bigram import CountBigramModel, full_loss
    from gptlib.data import load_dataset

    _, tokenizer, train_data, val_data = load_dataset()
    losses = {k: full_loss(CountBigramModel.from_data(train_data, tokenizer.vocab_size, smoothing=k),
                           val_data)
              for k in (0.1, 1.0, 10.0)}
    return min(losses, key=losses.get)


def _trigram_entries() -> int:  # 02.2
    from gptlib.data import load_dataset

    return load_dataset()[1].vocab_size ** 3


def _e_after_h_at_half() -> float:  # 02.5
    import torch

    from gptlib.bigram import bigram_counts
    from gptlib.data import load_dataset

    _, tokenizer, train_data, _ = load_dataset()
    P = (bigram_counts(train_data, tokenizer.vocab_size) + 1).float()  # chapter 2's P, smoothed by 1
    P = P / P.sum(dim=1, keepdim=True)
    stoi = tokenizer.stoi
    return torch.softmax(P[stoi["h"]].log() / 0.5, dim=-1)[stoi["e"]].item()


def _num_parameters(**shape) -> int:
    import torch

    from gptlib.model import GPT, GPTConfig

    with torch.device("meta"):  # shapes without memory
        return GPT(GPTConfig(vocab_size=50257, block_size=1024, **shape)).num_parameters()


def _gpt2_small_shape() -> int:  # 06.3
    return _num_parameters(n_layer=12, n_head=12, n_embd=768, dropout=0.0, tied_head=True)


def _tied_head_numbers() -> int:  # 06.4
    from gptlib.model import GPTConfig

    big = GPTConfig()  # chapter 6's `big`
    return big.vocab_size * big.n_embd


def _cpu_training_config():
    from gptlib.presets import get_preset

    return get_preset("cpu", vocab_size=65)[1]


def _first_learning_rate() -> float:  # 07.1
    from gptlib.train import learning_rate_at

    return learning_rate_at(0, _cpu_training_config())


def _predictions_at_block_64() -> int:  # 07.2
    return _cpu_training_config().batch_size * 64


def _laptop():
    from gptlib.checkpoint import load_checkpoint

    return load_checkpoint(ASSETS / "shakespeare-laptop")


LINE_4 = "BAPTISTA:\nGood morrow, neighbour Gremio.\nGod save you, gentlemen!\n"  # chapter 8's line_4


def _most_surprising_character() -> str:  # 08.4
    import torch
    import torch.nn.functional as F

    checkpoint = _laptop()
    ids = torch.tensor([checkpoint.tokenizer.encode(LINE_4)])
    with torch.no_grad():
        p = F.softmax(checkpoint.model(ids)[0][0, :-1], dim=-1)[torch.arange(len(LINE_4) - 1), ids[0, 1:]]
    return LINE_4[p.argmin().item() + 1]


def _furthest_look_back() -> int:  # 08.6
    return _laptop().model.config.block_size - 1


def _unigram_perplexity() -> float:  # 09.2
    from gptlib.data import load_dataset
    from gptlib.evaluate import metrics_from_losses, unigram_losses

    _, tokenizer, train_data, val_data = load_dataset()
    return metrics_from_losses(unigram_losses(train_data, val_data, tokenizer.vocab_size)).perplexity


def _japanese_bytes_and_tokens() -> tuple[int, int]:  # 11.1
    from gptlib.tokenizers import gpt2_tokenizer

    return len("日本語".encode("utf-8")), len(gpt2_tokenizer().encode("日本語"))


def _first_merge_count() -> int:  # 11.2
    from collections import Counter

    text = _text()
    ids = list(text[: int(0.9 * len(text))][:10_000].encode("utf-8"))  # chapter 11's `small`
    return Counter(zip(ids, ids[1:])).most_common(1)[0][1]


def _shipped_bpe_bits_per_character() -> float:  # 11.4
    from gptlib.checkpoint import load_checkpoint
    from gptlib.evaluate import evaluate
    from gptlib.tokenizers import tokenize_dataset

    shipped = load_checkpoint(ASSETS / "tokenization" / "bpe-1024")
    data = tokenize_dataset(shipped.tokenizer)
    return evaluate(shipped.model, data.val, characters=data.val_characters).bits_per_char


def _gpt2_medium() -> int:  # 12.1
    return _num_parameters(n_layer=24, n_head=16, n_embd=1024, qkv_bias=True, tied_head=True, gelu="tanh")


def _value_columns() -> tuple[int, int]:  # 12.2
    import json

    from gptlib.pretrained import config_from_hf

    C = config_from_hf(json.loads((ASSETS / "hf-gpt2-shakespeare" / "config.json").read_text())).n_embd
    return 2 * C, 3 * C


def _header_length() -> int:  # 12.3
    import struct

    with open(ASSETS / "hf-gpt2-shakespeare" / "model.safetensors", "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]  # a little-endian 64-bit integer


def _reply_characters() -> int:  # 13.3
    from gptlib import finetune as ft

    text = _text()
    block_size = _laptop().model.config.block_size
    replies = ft.reply_splits(ft.reply_examples(ft.speeches(text), block_size), int(0.9 * len(text)))
    return len(replies["val"][0].reply)  # chapter 13's `example`


def _coriolanus_share() -> float:  # 13.4
    from gptlib import finetune as ft

    splits = ft.play_splits(ft.speeches(_text()))
    return sum(s.play == 0 for s in splits["val"]) / len(splits["val"])


# Judges for the answers that are functions: each calls the function on inputs of its own.

def _same(result, reference, atol: float | None = None) -> bool:
    """Whether ``result`` has ``reference``'s shape and values (NumPy's or torch's tolerance)."""
    import numpy as np
    import torch

    if isinstance(reference, torch.Tensor):
        return (isinstance(result, torch.Tensor) and result.shape == reference.shape
                and bool(torch.allclose(result.detach().to(reference.dtype), reference, atol=atol)))
    result = np.asarray(result)
    return result.shape == reference.shape and bool(np.allclose(result, reference))


def _calls(exercise: str, case: Callable[[], tuple[tuple, Any]], atol: float | None = None):
    """A judge: ``case()`` gives fresh arguments and the reference the function must return."""

    def judge(function):
        if not callable(function):
            raise TypeError(f"exercise {exercise}'s answer is a function (the check calls it), "
                            f"got {type(function).__name__}")
        args, reference = case()
        result = function(*args)
        return None if result is None else _same(result, reference, atol)

    return judge


def _as_tuple(answer):
    """A list or tuple as a tuple: ``[384, 576]`` answers ``(start, end)`` as well."""
    return tuple(answer) if isinstance(answer, (list, tuple)) else answer


def _gelu_tanh_case():  # 10.1: dy and x, and autograd's dx
    import numpy as np
    import torch
    import torch.nn.functional as F

    xs = np.linspace(-3, 3, 13)
    xt = torch.tensor(xs, requires_grad=True)
    F.gelu(xt, approximate="tanh").sum().backward()
    return (np.ones_like(xs), xs), xt.grad.numpy()


def _bias_gradient_case():  # 10.2: dy, and the linear layer's db
    import numpy as np

    from gptlib import numpy_gpt as ng

    rng = np.random.default_rng(102)
    dy = rng.normal(size=(2, 3, 4))
    return (dy.copy(),), ng.linear_backward(dy, (rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5))))[2]


def _temperature_case():  # 10.3: s, dp and tau = 2, and autograd's ds
    import numpy as np
    import torch

    rng = np.random.default_rng(103)
    s, dp, tau = rng.normal(size=6), rng.normal(size=6), 2.0
    st = torch.tensor(s, requires_grad=True)
    torch.softmax(st / tau, dim=0).backward(torch.tensor(dp))
    return (s.copy(), dp.copy(), tau), st.grad.numpy()


def _merge_case():  # 13.2: a LoRA layer like chapter 13's `lora`, and its merged weight
    import torch

    from gptlib import finetune as ft

    with torch.random.fork_rng(devices=[]):  # the learner's random numbers are left alone
        torch.manual_seed(132)
        lora = ft.LoRALinear(torch.nn.Linear(256, 256), rank=8, alpha=16.0)
        torch.nn.init.normal_(lora.B, std=0.02)
        with torch.no_grad():
            reference = lora.merged().weight.clone()  # merged() builds an nn.Linear: random numbers too
    return (lora,), reference


ANSWERS: dict[str, Answer] = {
    # 01: the data
    "01.1": Answer(
        Computed(_distinct_words),
        hint="text.split() cuts on any whitespace; a set keeps each word once",
        why="25,670 words, where 65 characters spell everything; punctuation sticks to words ('Romeo,' and "
            "'Romeo' count twice), and a word never seen in training could not be encoded."),
    "01.2": Answer(
        Computed(_only_in_training),
        hint="set() of each part of the text, then a difference",
        why="$, &, 3 and X: rare characters that the last tenth happens not to use. Nothing is only in "
            "validation; if something were, the model would never have learned to predict it."),
    "01.3": Answer(
        Computed(_largest_val_block_size),
        hint="a chunk needs block_size inputs plus one more token for the last target",
        why="len(data) - 1: the inputs are block_size tokens and the targets the same shifted by one, so a "
            "chunk spans block_size + 1 tokens."),
    "01.4": Answer(
        Computed(_training_chunks),
        hint="count the possible start positions of a chunk: torch.randint's bound",
        why="One chunk per start position: len(train_data) - block_size. Seeing each character once takes "
            "about len(train_data) / (32 x 8), some 3,921 batches."),
    "01.5": Answer(
        True,
        hint="torch.equal(x_a, x_b) for the inputs of the two seed-7 batches",
        why="A generator with the same seed draws the same start positions: the batch is reproducible."),
    # 02: the bigram
    "02.1": Answer(
        Computed(_best_smoothing),
        hint="full_loss(model, val_data) for each; pick the lowest",
        why="1: less trusts rare counts too much, more flattens every row towards uniform."),
    "02.2": Answer(
        Computed(_trigram_entries),
        hint="one probability per (first, second, next) character",
        why="65³ = 274,625 entries for a million training characters: most contexts are rare."),
    "02.5": Answer(
        Computed(_e_after_h_at_half),
        hint="scale the logarithms of the row of 'h' in P by 1 / 0.5, softmax them, and read the entry of "
             "'e'",
        why="0.620: below 1 the likely get likelier, so the text repeats common pairs; above 1 it flattens "
            "towards uniform and the text turns to noise."),
    # 03: self-attention's mathematics
    "03.1": Answer(
        8 / 15,
        hint="scores s · ln 2 for position s, masked; then the softmax of row 3",
        why="8/15 ≈ 0.533: the newest position weighs as much as all the others together, plus one part."),
    "03.2": Answer(
        0.25,
        hint="what do e^(s + c) and e^s have in common, once a row is divided by its sum?",
        why="1/4: e^(s + c) = e^c · e^s, and e^c cancels when the row is divided by its sum."),
    "03.4": Answer(
        0,
        hint="which position has no character before it in the window?",
        why="Position 0: the causal mask leaves it only itself to attend to."),
    # 04: masking and scaling
    "04.2": Answer(
        1 / 16,
        hint="var(q·k) = head_size; dividing by head_size divides the variance by head_size²",
        why="1/16 = 0.0625: the scores are squashed towards 0 and the softmax starts almost uniform."),
    "04.4": Answer(
        False,
        hint="what replaces a hidden character in the input?",
        why="The hidden characters are replaced by a mask token: seeing the whole input shows no answer, "
            "so the encoder cannot cheat."),
    "04.5": Answer(
        0.6 / (1 - 0.5),
        hint="the weights that are kept are divided by 1 - p",
        why="1.2: rows no longer sum to 1, but their expected value does, which is what the next layer was "
            "trained on."),
    # 05: positions
    "05.1": Answer(
        0,
        hint="which position's causal window holds the same tokens after such a shuffle?",
        why="Position 0 sees only the first token, which stayed; every later position sees another prefix."),
    "05.3": Answer(
        False,
        hint="pe[0] @ pe.T gives PE[0] · PE[k] for every k; compare each with the next",
        why="It falls, then rises and falls again as the fast sinusoids come back into phase: distance is "
            "encoded only roughly, and the model must learn to read it."),
    "05.5": Answer(
        10,
        hint="the new token is not at position 0 of the text, only of its one-token input",
        why="Position 10: rotated as position 0, its scores against the cached keys would use the wrong "
            "relative distances."),
    # 06: the transformer
    "06.3": Answer(
        Computed(_gpt2_small_shape),
        hint="GPT(GPTConfig(...)).num_parameters() on the meta device",
        why="124,412,160: GPT-2 has 27,648 more, biases on its query, key and value projections (chapter "
            "12)."),
    "06.4": Answer(
        Computed(_tied_head_numbers),
        hint="the head maps n_embd channels to vocab_size logits",
        why="24,960, 0.2% of this model; with GPT-2's 50,257 tokens it is 38.6 million, 31% of GPT-2 "
            "small. A token read in and written out is one meaning: sharing the matrix trains it from both "
            "sides."),
    "06.5": Answer(
        False,
        hint="one layer averages the same set; but do 'a' alone and 'b' alone give the second layer the "
             "same input?",
        why="With one layer the last position averages the same set and agrees; from the second layer on, "
            "the earlier positions saw different prefixes: the causal mask lets depth recover order."),
    # 07: training
    "07.1": Answer(
        Computed(_first_learning_rate),
        hint="section 3: the warmup climbs linearly from learning_rate / warmup_iters",
        why="6e-05, a 50th of the peak: the first steps, taken with the noisiest gradients, are the "
            "smallest."),
    "07.2": Answer(
        Computed(_predictions_at_block_64),
        hint="every position of every window predicts the character after it",
        why="24 × 64 = 1,536, twice the 768 of block 32: each step sees twice the text, with longer "
            "contexts."),
    # 08: sampling
    "08.1": Answer(
        1,
        hint="keep only as many characters as greedy decoding considers",
        why="top_k=1 leaves one character to sample from: the likeliest. (Greedy text soon loops on a few "
            "phrases.)"),
    "08.4": Answer(
        Computed(_most_surprising_character),
        hint="model(ids)[0] gives the logits at every position; position t predicts character t + 1",
        why="The G of 'God', after a line break: a new sentence can start with almost anything."),
    "08.6": Answer(
        Computed(_furthest_look_back),
        hint="a position reads itself and the positions before it, block_size in all",
        why="127: the window holds 128 characters, the one looking and the 127 before it."),
    # 09: evaluation
    "09.1": Answer(
        3.30 * 1000 / 4100 / math.log(2),
        hint="total nats = 3.30 x 1,000; divide by the characters, then by ln 2",
        why="1.16 bits per character against the laptop GPT's 2.18: far better, though its loss per token "
            "looks twice as large."),
    "09.2": Answer(
        Computed(_unigram_perplexity),
        hint="perplexity = exp(mean loss in nats)",
        why="Frequent characters (space, e, t) are cheap to predict, so the effective choice is far below "
            "65."),
    "09.3": Answer(
        "bigram (counts)",
        hint="what does a model know when it has seen exactly one character?",
        why="Seeing only the previous character is exactly the bigram's situation."),
    # 10: backpropagation by hand (1 to 3: the answer is a function)
    "10.1": Answer(
        True, judge=_calls("10.1", _gelu_tanh_case),
        hint="the product rule on 0.5 x (1 + tanh u), then the chain rule through u(x), with "
             "tanh'(u) = 1 - tanh^2 u",
        why="It matches autograd's derivative of F.gelu(approximate='tanh')."),
    "10.2": Answer(
        True, judge=_calls("10.2", _bias_gradient_case),
        hint="b is added at every position of every row: sum dy over all but the last axis",
        why="Each of the B x T positions added b once, so each contributes its dy."),
    "10.3": Answer(
        True, judge=_calls("10.3", _temperature_case),
        hint="softmax_backward(dp, p) is the gradient with respect to s / tau; then divide by tau",
        why="d(s/tau)/ds = 1/tau: the same formula, scaled."),
    "10.4": Answer(
        2 * 24 * 4 * 32 * 32,
        hint="layers x batch x heads x T x T",
        why="196,608 numbers: small here, but it grows with T squared; PyTorch's fused attention kernel "
            "never stores them."),
    # 11: tokenization
    "11.1": Answer(
        Computed(_japanese_bytes_and_tokens),
        hint="len(s.encode('utf-8')), then len(gpt2.encode(s))",
        why="Three bytes per character, and GPT-2's 6 tokens cut them into fragments: it saw little "
            "Japanese."),
    "11.2": Answer(
        Computed(_first_merge_count),
        hint="each occurrence of the merged pair turns two tokens into one",
        why="A merge removes exactly one token per occurrence of its pair."),
    "11.3": Answer(
        (1000 - 32 - 1) // 16 + 1,
        hint="floor((N - block_size - 1) / stride) + 1",
        why="Each window reads 33 tokens; starts 0, 16, ..., 960 fit."),
    "11.4": Answer(
        Computed(_shipped_bpe_bits_per_character),
        hint="nats per character = nats per token / characters per token; then divide by ln 2",
        why="The total is the same; only the unit of counting changes."),
    # 12: pretrained weights
    "12.1": Answer(
        Computed(_gpt2_medium),
        hint="GPTConfig with GPT-2's switches and medium's shape, then num_parameters()",
        why="354,823,168: the 'GPT-2 medium, 355M' of the model cards."),
    "12.2": Answer(
        Computed(_value_columns), judge=_as_tuple,
        hint="queries, keys, values, C columns each, in that order",
        why="Columns 384 to 576: the last third."),
    "12.3": Answer(
        Computed(_header_length),
        hint="file size - 8 (the length field) - 2 x the number of stored numbers",
        why="Everything else in the file is the weights themselves."),
    "12.4": Answer(
        False,
        hint="compare the shapes of c_fc's weight in the file and ffwd.fc.weight in our GPT",
        why="c_fc is (C, 4C) in the file and (4C, C) in ours: untransposed, the shapes do not fit and "
            "load_state_dict refuses."),
    # 13: fine-tuning (2: the answer is a function)
    "13.1": Answer(
        4 * 2 * 2 * (256 + 256),
        hint="r (d_in + d_out) per wrapped layer; how many layers?",
        why="8,192: an eighth of the 65,536 of section 5's rank-8 LoRA on all four projections."),
    "13.2": Answer(
        True, judge=_calls("13.2", _merge_case, atol=1e-6),
        hint="section 5's formula: W plus the update B A, scaled by alpha / rank",
        why="The merged layer is an ordinary matrix of the same shape."),
    "13.3": Answer(
        Computed(_reply_characters),
        hint="one target per reply character: the prompt's are -100",
        why="Every reply character is predicted once, from the position before it."),
    "13.4": Answer(
        Computed(_coriolanus_share),
        hint="the share of validation speeches whose play is 0",
        why="Coriolanus's share: its 20 runs put a tenth of its speeches in each of validation and test."),
    "13.5": Answer(
        4,
        hint="its last real character, once ft.collate_speeches has added ft.SPEECH_END",
        why="'Go.' and two newlines: position 4, the second newline, the only one that has read it all."),
}


def answer(exercise: str) -> Answer:
    """The entry of ``exercise`` ("CC.N"); ValueError, naming the chapter's exercises, if none."""
    if exercise in ANSWERS:
        return ANSWERS[exercise]
    chapter = str(exercise).split(".")[0]
    known = [key for key in ANSWERS if key.split(".")[0] == chapter]
    if known:
        raise ValueError(f"no exercise {exercise!r}: chapter {chapter}'s checked exercises are "
                         f"{', '.join(known)}")
    raise ValueError(f"no exercise {exercise!r}: an exercise is named 'CC.N', chapter then number "
                     f"(chapters {min(ANSWERS)[:2]} to {max(ANSWERS)[:2]}), e.g. '05.1'")


_computed: dict[str, Any] = {}


def expected(exercise: str) -> Any:
    """The expected answer of ``exercise``, computed the first time it is asked for."""
    value = answer(exercise).expected
    if not isinstance(value, Computed):
        return value
    if exercise not in _computed:
        _computed[exercise] = value.compute()
    return _computed[exercise]
