"""The self-checking exercises, and the worked answers in solutions/ checked by them."""

import importlib.util
import math
from pathlib import Path

import torch

from gptlib.data import load_dataset
from gptlib.exercises import check, verdict

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def solutions_of(chapter: str):
    spec = importlib.util.spec_from_file_location(f"solutions_{chapter}", SOLUTIONS / f"{chapter}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_hints_while_missing_says_when_wrong_and_confirms_when_right(capsys):
    assert check(None, 2.0, hint="divide by ln 2") is None
    assert capsys.readouterr().out == "Not attempted yet (the answer is None). Hint: divide by ln 2\n"
    assert verdict(2.5, 2.0, hint="divide by ln 2") == "Not yet: 2.5 is not it. Hint: divide by ln 2"
    assert "expected a number, got 'two'" in verdict("two", 2.0, hint="h")
    assert verdict(2.0005, 2.0, hint="h", why="Because.") == "Correct: 2.0005. Because."
    assert verdict(" Bigram (counts) ", "bigram (counts)", hint="h").startswith("Correct")
    assert verdict("unigram", "bigram (counts)", hint="h").startswith("Not yet")


def right(answer, expected) -> bool:
    return verdict(answer, expected, hint="").startswith("Correct")


def test_the_answers_to_chapter_09_pass_its_checks():
    answers = solutions_of("09_evaluation")
    text, tokenizer, train_data, val_data = load_dataset()
    assert right(answers.exercise_1(), 3.30 * 1000 / 4100 / math.log(2))
    perplexity = answers.exercise_2(train_data, val_data, tokenizer.vocab_size)
    frequencies = torch.bincount(train_data, minlength=65).double() + 1
    expected = math.exp(-torch.log(frequencies / frequencies.sum())[val_data[1:]].mean().item())
    assert right(perplexity, expected) and 10 < perplexity < 65
    assert right(answers.exercise_3(), "bigram (counts)")
    hardest = answers.exercise_4(text, torch.tensor([0.5, 9.0, 0.1]), len(train_data), k=1)
    assert hardest == [f"{text[len(train_data) + 2 - 30 : len(train_data) + 2]!r} -> "
                       f"{text[len(train_data) + 2]!r} (9.0 nats)"]


def test_the_answers_to_chapter_11_pass_its_checks():
    from gptlib.data import load_shakespeare
    from gptlib.tokenizers import TokenWindows, gpt2_tokenizer

    answers = solutions_of("11_tokenization")
    gpt2 = gpt2_tokenizer()
    assert right(answers.exercise_1(gpt2), (9, len(gpt2.encode("日本語"))))
    text = load_shakespeare()
    assert right(answers.exercise_2(text[:10_000]), 292)  # "e " in chapter 11's printout
    assert right(answers.exercise_3(), len(TokenWindows(range(1000), 32, 16)))
    assert right(answers.exercise_4(3.0, 2.0), 3.0 / 2.0 / math.log(2))
    compression = answers.exercise_5(text[:200_000], text[200_000:260_000], vocab_size=400)
    assert compression["gpt4"] > compression["gpt2"] > 1.5


def test_the_answers_to_chapter_10_pass_its_checks():
    import numpy as np
    import torch.nn.functional as F

    from gptlib import numpy_gpt as ng

    answers = solutions_of("10_backprop_by_hand")
    xs = np.linspace(-3, 3, 13)
    xt = torch.tensor(xs, requires_grad=True)
    F.gelu(xt, approximate="tanh").sum().backward()
    assert np.allclose(answers.exercise_1(np.ones_like(xs), xs), xt.grad.numpy())
    rng = np.random.default_rng(1)
    dy = rng.normal(size=(2, 3, 4))
    assert np.allclose(answers.exercise_2(dy), ng.linear_backward(dy, (rng.normal(size=(2, 3, 5)),
                                                                       rng.normal(size=(4, 5))))[2])
    s, dp = rng.normal(size=6), rng.normal(size=6)
    st = torch.tensor(s, requires_grad=True)
    torch.softmax(st / 2.0, dim=0).backward(torch.tensor(dp))
    assert np.allclose(answers.exercise_3(s, dp, 2.0), st.grad.numpy())
    assert right(answers.exercise_4(), 2 * 24 * 4 * 32 * 32)
    errors = answers.exercise_5()
    assert errors["right"] < 1e-7 < 1e-2 < errors["broken"]


def test_the_answers_to_chapter_12_pass_its_checks():
    import struct

    answers = solutions_of("12_pretrained_weights")
    assert right(answers.exercise_1(), 354_823_168)
    assert right(answers.exercise_2(), (384, 576))
    raw = (SOLUTIONS.parent / "assets" / "hf-gpt2-shakespeare" / "model.safetensors").read_bytes()
    assert right(answers.exercise_3(), struct.unpack("<Q", raw[:8])[0])
    assert right(answers.exercise_4(), False)


def test_the_answers_to_chapter_13_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib import finetune as ft

    answers = solutions_of("13_finetuning")
    assert right(answers.exercise_1(), 4 * 2 * 2 * (256 + 256))
    assert not right(4 * 2 * 256 * 256, 4 * 2 * 2 * (256 + 256))  # the full matrices' count
    torch.manual_seed(0)
    lora = ft.LoRALinear(torch.nn.Linear(256, 256), rank=8, alpha=16.0)
    torch.nn.init.normal_(lora.B, std=0.02)
    merged = lora.merged().weight
    assert right(bool(torch.allclose(answers.exercise_2(lora), merged, atol=1e-6)), True)
    forgot_the_scale = lora.base.weight + lora.B @ lora.A
    assert not right(bool(torch.allclose(forgot_the_scale, merged, atol=1e-6)), True)
    example = ft.ReplyExample("A said:\nhi\nB replies:\n", "Yes, my lord.\n\n", 0)
    assert right(answers.exercise_3(example), len(example.reply))
    assert not right(len(example.prompt) + len(example.reply) - 1, len(example.reply))  # every position
    splits = ft.play_splits(ft.speeches(load_dataset()[0]))
    expected = sum(s.play == 0 for s in splits["val"]) / len(splits["val"])
    assert right(answers.exercise_4(), expected)
    assert not right(1 / 9, expected)  # a uniform guess
    # the end mark's last newline; not the full stop, not the batch's last position
    assert right(answers.exercise_5(), 4) and not right(2, 4) and not right(23, 4)


def test_the_answers_to_chapter_01_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("01_data")
    text, _, train_data, val_data = load_dataset()
    n = int(0.9 * len(text))
    assert right(answers.exercise_1(text), len(set(text.split())))
    assert not right(len(text.split()), len(set(text.split())))  # every word, not distinct ones
    assert right(answers.exercise_2(text), set(text[:n]) - set(text[n:]))
    assert not right(set(text[n:]) - set(text[:n]), set(text[:n]) - set(text[n:]))  # the other way
    assert right(answers.exercise_3(val_data), len(val_data) - 1)
    assert not right(len(val_data), len(val_data) - 1)
    assert right(answers.exercise_4(train_data), len(train_data) - 8)
    assert not right(len(train_data), len(train_data) - 8)
    assert right(answers.exercise_5(train_data), True) and not right(False, True)


def test_a_count_must_be_exact_and_a_measure_close():
    assert verdict(111_539, 111_539, hint="h").startswith("Correct")
    assert verdict(111_540, 111_539, hint="h").startswith("Not yet")  # off by one is wrong
    assert verdict(8192.0, 8192, hint="h").startswith("Correct")
    assert "expected a whole number" in verdict("many", 3, hint="h")
    assert verdict(0.15452, 0.1545, hint="h").startswith("Correct")  # a measure: within 0.1%


def test_the_answers_to_chapter_02_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib.bigram import CountBigramModel

    answers = solutions_of("02_bigram")
    text, tokenizer, train_data, val_data = load_dataset()
    V = tokenizer.vocab_size
    losses, best = answers.exercise_1(train_data, val_data, V)
    assert right(best, 1.0) and not right(0.1, 1.0) and not right(10.0, 1.0)
    assert losses[1.0] < losses[0.1] < losses[10.0]
    size, trigram = answers.exercise_2(train_data, val_data, V)
    assert right(size, V**3) and not right(V**2, V**3)
    assert min(trigram.values()) < 2.1 < 2.48  # two characters of context beat one
    curves = answers.exercise_3(train_data, val_data, V)
    assert curves[1e-3][3000] > curves[1e-1][3000]  # too small a step is still far off
    steps = answers.exercise_4(train_data, val_data, V)
    assert steps[0.02] is not None and steps[1.0] is not None and steps[1.0] >= steps[0.02]
    P = CountBigramModel.from_data(train_data, V).probs
    expected = torch.softmax(P[tokenizer.stoi["h"]].log() / 0.5, dim=-1)[tokenizer.stoi["e"]].item()
    assert right(answers.exercise_5(P, tokenizer.stoi), expected)
    assert not right(P[tokenizer.stoi["h"], tokenizer.stoi["e"]].item(), expected)  # temperature 1
    assert not right(answers.exercise_5(P, tokenizer.stoi, 2.0), expected)  # 1 / 0.5 the wrong way


def test_the_answers_to_chapter_06_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib.model import GPTConfig

    answers = solutions_of("06_transformer")
    grads = answers.exercise_1()
    first = {order: g[0] for order, g in grads.items()}
    assert first["plain"] < first["post-norm"] < first["pre-norm"]  # post-norm: between the two
    losses = answers.exercise_2(steps=40)
    assert set(losses) == {"gelu", "relu"} and all(loss < 3.6 for loss in losses.values())  # both learn
    assert right(answers.exercise_3(), 124_412_160)
    assert not right(124_439_808, 124_412_160)  # GPT-2's own count, with its query/key/value biases
    big = GPTConfig()
    assert right(answers.exercise_4(), big.vocab_size * big.n_embd)
    assert not right(big.vocab_size * big.n_embd + big.vocab_size, big.vocab_size * big.n_embd)  # + bias
    assert right(answers.exercise_5(), False) and not right(True, False)
    assert answers.last_outputs_agree(n_layer=1)  # one layer alone cannot tell the order


def test_the_answers_to_chapter_04_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("04_masking_and_scaling")
    cheater = answers.exercise_1(steps=1000)
    assert cheater["loss peeking"] < 0.5 < 3.0 < cheater["loss with the mask"]  # lost without the future
    assert right(answers.exercise_2(), 1 / 16)
    assert not right(1.0, 1 / 16) and not right(1 / 4, 1 / 16)  # the √ scale's variance; 1/√16
    runs = answers.exercise_3(steps=5)
    assert runs["unscaled"]["peak weight at start"] > 2 * runs["scaled"]["peak weight at start"]
    assert right(answers.exercise_4(), False) and not right(True, False)
    assert right(answers.exercise_5(), 1.2) and not right(0.6, 1.2) and not right(0.3, 1.2)


def test_the_answers_to_chapter_05_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("05_positional_embeddings")
    assert right(answers.exercise_1(), 0) and not right(7, 0)
    losses = answers.exercise_2()  # the shipped models, nothing trained
    assert losses["learned, table zeroed"] > losses["trained without positions"] > losses["learned"]
    assert right(answers.exercise_3(), False) and not right(True, False)
    alibi = answers.exercise_4(steps=100, long=64)
    assert all(loss < 3.5 for loss in alibi.values())  # it learns (a uniform guess: 4.17)
    assert alibi["window 64"] < alibi["window 32"] + 0.1  # and keeps it past its training length
    assert right(answers.exercise_5(), 10) and not right(0, 10) and not right(11, 10)


def test_the_answers_to_chapter_08_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("08_sampling")
    greedy = answers.exercise_1(n=40)  # asserts inside: by hand equals top_k=1
    assert right(greedy["top_k"], 1) and not right(0, 1)
    kept = answers.exercise_2(temperatures=(0.5, 2.0), n=128)
    assert 1 <= kept[0.5] < kept[2.0]  # a flatter distribution needs more characters for 90%
    steps = answers.exercise_3(contexts=(32, 256))
    assert [steps[L]["fed without"] for L in (32, 256)] == [33, 256] and steps[256]["fed with"] == 1
    surprise = answers.exercise_4()
    assert right(surprise["most surprising"], "G") and not right("B", "G")
    assert min(surprise["probabilities"]) == surprise["probabilities"][surprise["at"] - 1]
    costs = answers.exercise_5(n=150)
    assert abs(costs["sliding"] - costs["jumping"]) < 0.5 and 0.5 < costs["sliding"] < 3
    assert right(answers.exercise_6(), 127) and not right(128, 127)


def test_the_answers_to_chapter_03_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("03_self_attention_math")
    assert right(answers.exercise_1(), 8 / 15)
    assert not right(0.25, 8 / 15) and not right(0.5, 8 / 15)  # uniform; half-life thinking
    assert right(answers.exercise_2(), 0.25) and not right(5.0, 0.25)
    losses = answers.exercise_3(heads=(1, 4), steps=150)
    assert all(loss < 3.5 for loss in losses.values())  # every variant learns
    assert right(answers.exercise_4(), 0) and not right(1, 0)
    without = answers.exercise_5(steps=150)
    assert without["loss"] < 3.5 and 0 < without["mean weight on the previous character"] < 1


def test_the_answers_to_chapter_07_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("07_training")
    assert right(answers.exercise_1_check(), 6e-5)
    assert not right(3e-3, 6e-5) and not right(0.0, 6e-5)  # the peak; no step at all
    losses = answers.exercise_1(steps=20)
    assert set(losses) == {"preset", "no warmup", "constant"} and all(loss < 4.0 for loss in losses.values())
    blocks = answers.exercise_2(steps=10)
    assert blocks[32]["seconds per step"] > 0 and blocks[64]["full validation loss"] < 4.2
    assert right(24 * 64, 1536) and not right(24 * 32, 1536)  # the notebook's check for exercise 2
    rates = answers.exercise_3(rates=(3e-3, 1e3), steps=10)
    assert isinstance(rates[3e-3], float) and isinstance(rates[1e3], str)  # an absurd rate diverges
    gaps = answers.exercise_4(steps=20)
    assert set(gaps) == {0.1, 0.0}
    assert answers.exercise_5(steps=20) < 4.0
