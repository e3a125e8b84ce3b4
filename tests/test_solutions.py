"""The self-checking exercises: the registry of their answers (gptlib.answers), the check
cells of the chapters that use it, and the worked answers in solutions/ checked by it.

Every check goes through the registry's own entry (``right("05.1", answer)``), so these
tests test the very answers, hints and judges that the chapters use.
"""

import doctest
import importlib.util
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import gptlib.exercises
from gptlib import answers as registry
from gptlib.data import load_dataset
from gptlib.exercises import assess, check, verdict

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def solutions_of(chapter: str):
    spec = importlib.util.spec_from_file_location(f"solutions_{chapter}", SOLUTIONS / f"{chapter}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def right(exercise: str, answer) -> bool:
    """Whether the chapter's check of ``exercise`` accepts ``answer`` (its registry entry)."""
    return assess(exercise, answer).startswith("Correct")


def check_calls():
    """(notebook, cell index, line) of every line of a code cell that calls check(."""
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                for line in "".join(cell["source"]).splitlines():
                    if re.search(r"\bcheck\(", line):
                        yield path, index, line


def test_check_hints_while_missing_says_when_wrong_and_confirms_when_right(capsys):
    hint = registry.answer("05.1").hint
    assert check("05.1", None) is None
    assert capsys.readouterr().out == f"Not attempted yet (the answer is None). Hint: {hint}\n"
    check("05.1", 7)
    assert capsys.readouterr().out == f"Not yet: 7 is not it. Hint: {hint}\n"
    check("05.1", 0)
    assert capsys.readouterr().out == f"Correct: 0. {registry.answer('05.1').why}\n"
    assert verdict(2.5, 2.0, hint="divide by ln 2") == "Not yet: 2.5 is not it. Hint: divide by ln 2"
    assert "expected a number, got 'two'" in verdict("two", 2.0, hint="h")
    assert verdict(2.0005, 2.0, hint="h", why="Because.") == "Correct: 2.0005. Because."
    assert verdict(" Bigram (counts) ", "bigram (counts)", hint="h").startswith("Correct")
    assert verdict("unigram", "bigram (counts)", hint="h").startswith("Not yet")
    assert right("09.3", " Bigram (Counts) ") and not right("09.3", "unigram")


def test_a_count_must_be_exact_and_a_measure_close():
    assert verdict(111_539, 111_539, hint="h").startswith("Correct")
    assert verdict(111_540, 111_539, hint="h").startswith("Not yet")  # off by one is wrong
    assert verdict(8192.0, 8192, hint="h").startswith("Correct")
    assert "expected a whole number" in verdict("many", 3, hint="h")
    assert verdict(0.15452, 0.1545, hint="h").startswith("Correct")  # a measure: within 0.1%


def test_the_module_docstring_example_holds():
    result = doctest.testmod(gptlib.exercises)
    assert result.attempted >= 1 and result.failed == 0


def test_every_check_cell_names_its_exercise_and_passes_only_the_answer():
    for path, index, line in check_calls():
        # The expected answer, hint and reason are in gptlib.answers, not in the cell.
        match = re.fullmatch(r'check\("(\d\d)\.(\d+)", answer_(\d+)\)', line)
        assert match, f"{path.name}, cell {index}: {line!r}"
        chapter, number, variable = match.groups()
        assert chapter == path.name[:2] and number == variable, f"{path.name}, cell {index}: {line!r}"


def test_every_exercise_in_the_registry_is_checked_by_one_cell_of_its_chapter():
    calls = {}
    for path, index, line in check_calls():
        exercise = re.fullmatch(r'check\("(\d\d\.\d+)", answer_\d+\)', line).group(1)
        assert exercise in registry.ANSWERS, f"{path.name}, cell {index}: no entry for {exercise}"
        calls.setdefault(exercise, []).append((path.name, index))
    for exercise in registry.ANSWERS:
        cells = calls.get(exercise, [])
        assert len({cell for cell in cells}) == 1 == len(cells), f"{exercise} is checked by {cells}"
        assert cells[0][0].startswith(exercise[:2]), exercise
    assert all(re.fullmatch(r"\d\d\.\d+", exercise) for exercise in registry.ANSWERS)


def test_an_unknown_exercise_is_a_one_line_value_error_naming_the_chapters_own():
    with pytest.raises(ValueError) as error:
        check("05.2", 0)
    assert "\n" not in str(error.value) and "05.1, 05.3, 05.5" in str(error.value)
    for unknown in ("14.1", "5.1", None):
        with pytest.raises(ValueError) as error:
            assess(unknown, 0)
        assert "\n" not in str(error.value) and "'CC.N'" in str(error.value)


def test_importing_the_checks_loads_nothing_heavy():
    code = "import sys, gptlib.exercises; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_nothing_is_computed_for_a_missing_answer(monkeypatch):
    def not_now():
        raise AssertionError("computed for a missing answer")

    monkeypatch.setitem(registry.ANSWERS, "11.4", registry.Answer(registry.Computed(not_now), hint="h"))
    monkeypatch.setattr(registry, "_computed", {})
    assert assess("11.4", None) == "Not attempted yet (the answer is None). Hint: h"


def test_no_hint_shows_its_answer():
    for exercise, entry in registry.ANSWERS.items():
        value = registry.expected(exercise)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            shown = [rf"(?<![\d.]){value}(?![\d.])", re.escape(f"{value:,}")]
        elif isinstance(value, float):
            shown = [re.escape(f"{value:.3g}")] + [re.escape(f"{value:.2f}")] * (abs(value) >= 0.1)
        else:
            shown = [rf"(?<!\w){re.escape(str(value))}(?!\w)"]  # as a word: 'G', not the g of "gives"
        for pattern in shown:
            assert not re.search(pattern, entry.hint, re.I), (exercise, entry.hint)
    assert "Columns {} to {}:".format(*registry.expected("12.2")) in registry.answer("12.2").why


def test_the_computed_answers_are_what_the_chapters_compute():
    """Each value the registry computes, computed again as its chapter's cell computed it
    (the chapters' own variable names), and, where a chapter prints it, read from its output."""
    from gptlib.bigram import CountBigramModel, bigram_counts, full_loss
    from gptlib.checkpoint import load_checkpoint
    from gptlib.data import CharTokenizer, load_shakespeare
    from gptlib.evaluate import evaluate, metrics_from_losses, unigram_losses
    from gptlib.model import GPT, GPTConfig
    from gptlib.presets import get_preset
    from gptlib.tokenizers import gpt2_tokenizer, tokenize_dataset
    from gptlib.train import learning_rate_at

    expected = registry.expected
    assets = ROOT / "assets"
    # 01
    text = load_shakespeare()
    data = torch.tensor(CharTokenizer(text).encode(text), dtype=torch.long)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    assert expected("01.1") == len(set(text.split()))
    assert expected("01.2") == set(text[:n]) - set(text[n:])
    assert expected("01.3") == len(val_data) - 1
    assert expected("01.4") == len(train_data) - 8
    # 02
    vocab_size = 65
    losses = {k: full_loss(CountBigramModel.from_data(train_data, vocab_size, smoothing=k), val_data)
              for k in (0.1, 1.0, 10.0)}
    assert expected("02.1") == min(losses, key=losses.get)
    assert expected("02.2") == vocab_size**3
    P = (bigram_counts(train_data, vocab_size) + 1).float()
    P = P / P.sum(dim=1, keepdim=True)
    stoi = CharTokenizer(text).stoi
    assert expected("02.5") == torch.softmax(P[stoi["h"]].log() / 0.5, dim=-1)[stoi["e"]].item()
    # 06
    with torch.device("meta"):
        gpt2_shape = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                                   dropout=0.0, tied_head=True))
    assert expected("06.3") == gpt2_shape.num_parameters()
    big = GPTConfig()
    assert expected("06.4") == big.vocab_size * big.n_embd
    # 07
    _, train_config = get_preset("cpu", vocab_size=vocab_size)
    assert expected("07.1") == learning_rate_at(0, train_config)
    assert expected("07.2") == train_config.batch_size * 64
    # 08
    checkpoint = load_checkpoint(assets / "shakespeare-laptop")
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    line_4 = "BAPTISTA:\nGood morrow, neighbour Gremio.\nGod save you, gentlemen!\n"
    ids_4 = torch.tensor([tokenizer.encode(line_4)])
    with torch.no_grad():
        p_4 = torch.softmax(model(ids_4)[0][0, :-1], dim=-1)[torch.arange(len(line_4) - 1), ids_4[0, 1:]]
    assert expected("08.4") == line_4[p_4.argmin().item() + 1]
    assert expected("08.6") == model.config.block_size - 1
    # 09
    unigram = metrics_from_losses(unigram_losses(train_data, val_data, vocab_size))
    assert expected("09.2") == unigram.perplexity
    assert (f"unigram {unigram.nats:.4f} nats {unigram.bits_per_char:.3f} bits/char perplexity "
            f"{expected('09.2'):.2f}") in " ".join(outputs_of("09_evaluation").split())
    # 11
    gpt2 = gpt2_tokenizer()
    assert expected("11.1") == (len("日本語".encode("utf-8")), len(gpt2.encode("日本語")))
    small = text[:n][:10_000]
    ids = list(small.encode("utf-8"))
    assert expected("11.2") == Counter(zip(ids, ids[1:])).most_common(1)[0][1]
    assert f"{expected('11.2')} times, " in outputs_of("11_tokenization")  # the first merge's printout
    shipped = load_checkpoint(assets / "tokenization" / "bpe-1024")
    bpe_data = tokenize_dataset(shipped.tokenizer)
    shipped_metrics = evaluate(shipped.model, bpe_data.val, characters=bpe_data.val_characters)
    assert expected("11.4") == shipped_metrics.bits_per_char
    assert f"{expected('11.4'):.4f} bits per character" in outputs_of("11_tokenization")
    # 12
    with torch.device("meta"):
        medium = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024,
                               qkv_bias=True, tied_head=True, gelu="tanh")).num_parameters()
    assert expected("12.1") == medium
    C = json.loads((assets / "hf-gpt2-shakespeare" / "config.json").read_text())["n_embd"]
    assert expected("12.2") == (2 * C, 3 * C)
    assert f"a header of {expected('12.3'):,}, then the tensors" in outputs_of("12_pretrained_weights")
    # 13
    assert f"{expected('13.3')} reply characters" in outputs_of("13_finetuning")
    from gptlib import finetune as ft

    splits = ft.play_splits(ft.speeches(text))
    assert expected("13.4") == sum(s.play == 0 for s in splits["val"]) / len(splits["val"])


def outputs_of(chapter: str) -> str:
    """All the text a committed chapter printed."""
    cells = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text(encoding="utf-8"))["cells"]
    return "".join("".join(output.get("text", "")) for cell in cells if cell["cell_type"] == "code"
                   for output in cell["outputs"])


def test_the_answers_to_chapter_01_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("01_data")
    text, _, train_data, val_data = load_dataset()
    n = int(0.9 * len(text))
    assert right("01.1", answers.exercise_1(text))
    assert not right("01.1", len(text.split()))  # every word, not distinct ones
    assert right("01.2", answers.exercise_2(text))
    assert not right("01.2", set(text[n:]) - set(text[:n]))  # the other way
    assert right("01.3", answers.exercise_3(val_data))
    assert not right("01.3", len(val_data))
    assert right("01.4", answers.exercise_4(train_data))
    assert not right("01.4", len(train_data))
    assert right("01.5", answers.exercise_5(train_data)) and not right("01.5", False)


def test_the_answers_to_chapter_02_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib.bigram import CountBigramModel

    answers = solutions_of("02_bigram")
    text, tokenizer, train_data, val_data = load_dataset()
    V = tokenizer.vocab_size
    losses, best = answers.exercise_1(train_data, val_data, V)
    assert right("02.1", best) and not right("02.1", 0.1) and not right("02.1", 10.0)
    assert losses[1.0] < losses[0.1] < losses[10.0]
    size, trigram = answers.exercise_2(train_data, val_data, V)
    assert right("02.2", size) and not right("02.2", V**2)
    assert min(trigram.values()) < 2.1 < 2.48  # two characters of context beat one
    curves = answers.exercise_3(train_data, val_data, V)
    assert curves[1e-3][3000] > curves[1e-1][3000]  # too small a step is still far off
    steps = answers.exercise_4(train_data, val_data, V)
    assert steps[0.02] is not None and steps[1.0] is not None and steps[1.0] >= steps[0.02]
    P = CountBigramModel.from_data(train_data, V).probs
    assert right("02.5", answers.exercise_5(P, tokenizer.stoi))
    assert not right("02.5", P[tokenizer.stoi["h"], tokenizer.stoi["e"]].item())  # temperature 1
    assert not right("02.5", answers.exercise_5(P, tokenizer.stoi, 2.0))  # 1 / 0.5 the wrong way


def test_the_answers_to_chapter_03_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("03_self_attention_math")
    assert right("03.1", answers.exercise_1())
    assert not right("03.1", 0.25) and not right("03.1", 0.5)  # uniform; half-life thinking
    assert right("03.2", answers.exercise_2()) and not right("03.2", 5.0)
    losses = answers.exercise_3(heads=(1, 4), steps=150)
    assert all(loss < 3.5 for loss in losses.values())  # every variant learns
    assert right("03.4", answers.exercise_4()) and not right("03.4", 1)
    without = answers.exercise_5(steps=150)
    assert without["loss"] < 3.5 and 0 < without["mean weight on the previous character"] < 1


def test_the_answers_to_chapter_04_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("04_masking_and_scaling")
    cheater = answers.exercise_1(steps=1000)
    assert cheater["loss peeking"] < 0.5 < 3.0 < cheater["loss with the mask"]  # lost without the future
    assert right("04.2", answers.exercise_2())
    assert not right("04.2", 1.0) and not right("04.2", 1 / 4)  # the √ scale's variance; 1/√16
    runs = answers.exercise_3(steps=5)
    assert runs["unscaled"]["peak weight at start"] > 2 * runs["scaled"]["peak weight at start"]
    assert right("04.4", answers.exercise_4()) and not right("04.4", True)
    assert right("04.5", answers.exercise_5()) and not right("04.5", 0.6) and not right("04.5", 0.3)


def test_the_answers_to_chapter_05_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("05_positional_embeddings")
    assert right("05.1", answers.exercise_1()) and not right("05.1", 7)
    losses = answers.exercise_2()  # the shipped models, nothing trained
    assert losses["learned, table zeroed"] > losses["trained without positions"] > losses["learned"]
    assert right("05.3", answers.exercise_3()) and not right("05.3", True)
    alibi = answers.exercise_4(steps=100, long=64)
    assert all(loss < 3.5 for loss in alibi.values())  # it learns (a uniform guess: 4.17)
    assert alibi["window 64"] < alibi["window 32"] + 0.1  # and keeps it past its training length
    assert right("05.5", answers.exercise_5()) and not right("05.5", 0) and not right("05.5", 11)


def test_the_answers_to_chapter_06_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib.model import GPTConfig

    answers = solutions_of("06_transformer")
    grads = answers.exercise_1()
    first = {order: g[0] for order, g in grads.items()}
    assert first["plain"] < first["post-norm"] < first["pre-norm"]  # post-norm: between the two
    losses = answers.exercise_2(steps=40)
    assert set(losses) == {"gelu", "relu"} and all(loss < 3.6 for loss in losses.values())  # both learn
    assert right("06.3", answers.exercise_3()) and answers.exercise_3() == 124_412_160
    assert not right("06.3", 124_439_808)  # GPT-2's own count, with its query/key/value biases
    big = GPTConfig()
    assert right("06.4", answers.exercise_4())
    assert not right("06.4", big.vocab_size * big.n_embd + big.vocab_size)  # with a bias
    assert right("06.5", answers.exercise_5()) and not right("06.5", True)
    assert answers.last_outputs_agree(n_layer=1)  # one layer alone cannot tell the order


def test_the_answers_to_chapter_07_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("07_training")
    assert right("07.1", answers.exercise_1_check())
    assert not right("07.1", 3e-3) and not right("07.1", 0.0)  # the peak; no step at all
    losses = answers.exercise_1(steps=20)
    assert set(losses) == {"preset", "no warmup", "constant"} and all(loss < 4.0 for loss in losses.values())
    blocks = answers.exercise_2(steps=10)
    assert blocks[32]["seconds per step"] > 0 and blocks[64]["full validation loss"] < 4.2
    assert right("07.2", 24 * 64) and not right("07.2", 24 * 32)  # the first question of exercise 2
    rates = answers.exercise_3(rates=(3e-3, 1e3), steps=10)
    assert isinstance(rates[3e-3], float) and isinstance(rates[1e3], str)  # an absurd rate diverges
    gaps = answers.exercise_4(steps=20)
    assert set(gaps) == {0.1, 0.0}
    assert answers.exercise_5(steps=20) < 4.0


def test_the_answers_to_chapter_08_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("08_sampling")
    greedy = answers.exercise_1(n=40)  # asserts inside: by hand equals top_k=1
    assert right("08.1", greedy["top_k"]) and not right("08.1", 0)
    kept = answers.exercise_2(temperatures=(0.5, 2.0), n=128)
    assert 1 <= kept[0.5] < kept[2.0]  # a flatter distribution needs more characters for 90%
    steps = answers.exercise_3(contexts=(32, 256))
    assert [steps[L]["fed without"] for L in (32, 256)] == [33, 256] and steps[256]["fed with"] == 1
    surprise = answers.exercise_4()
    assert right("08.4", surprise["most surprising"]) and not right("08.4", "B")
    assert min(surprise["probabilities"]) == surprise["probabilities"][surprise["at"] - 1]
    costs = answers.exercise_5(n=150)
    assert abs(costs["sliding"] - costs["jumping"]) < 0.5 and 0.5 < costs["sliding"] < 3
    assert right("08.6", answers.exercise_6()) and not right("08.6", 128)


def test_the_answers_to_chapter_09_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("09_evaluation")
    text, tokenizer, train_data, val_data = load_dataset()
    assert right("09.1", answers.exercise_1())
    assert not right("09.1", 3.30 * 1000 / 4100)  # nats per character, not bits
    perplexity = answers.exercise_2(train_data, val_data, tokenizer.vocab_size)
    frequencies = torch.bincount(train_data, minlength=65).double() + 1
    unigram = math.exp(-torch.log(frequencies / frequencies.sum())[val_data[1:]].mean().item())
    assert right("09.2", perplexity) and right("09.2", unigram) and 10 < perplexity < 65
    assert not right("09.2", math.log(perplexity)) and not right("09.2", 65)  # the loss; uniform
    assert right("09.3", answers.exercise_3()) and not right("09.3", "unigram")
    hardest = answers.exercise_4(text, torch.tensor([0.5, 9.0, 0.1]), len(train_data), k=1)
    assert hardest == [f"{text[len(train_data) + 2 - 30 : len(train_data) + 2]!r} -> "
                       f"{text[len(train_data) + 2]!r} (9.0 nats)"]


def test_the_answers_to_chapter_10_pass_its_checks_and_the_checks_reject_wrong_ones():
    import numpy as np

    from gptlib import numpy_gpt as ng

    answers = solutions_of("10_backprop_by_hand")
    # Exercises 1 to 3: the answer is the function, which the check calls on inputs of its own.
    assert right("10.1", answers.exercise_1)
    assert not right("10.1", lambda dy, x: ng.gelu_backward(dy, ng.gelu_forward(x)[1]))  # the exact GELU's
    assert not right("10.1", lambda dy, x: dy * 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * x)))  # half of it
    assert assess("10.1", lambda dy, x: None).startswith("Not attempted")
    assert right("10.2", answers.exercise_2)
    assert not right("10.2", lambda dy: dy.sum(axis=0))  # over the batch only: shape (T, V)
    assert not right("10.2", lambda dy: dy.mean(axis=(0, 1)))
    assert right("10.3", answers.exercise_3)
    assert not right("10.3", lambda s, dp, tau: answers.exercise_3(s, dp, tau) * tau)  # without the 1/tau
    with pytest.raises(TypeError, match="function"):
        assess("10.3", np.zeros(6))  # an array where the function is expected
    assert right("10.4", answers.exercise_4()) and not right("10.4", 24 * 4 * 32 * 32)  # one layer
    errors = answers.exercise_5()
    assert errors["right"] < 1e-7 < 1e-2 < errors["broken"]


def test_the_answers_to_chapter_11_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib.checkpoint import load_checkpoint
    from gptlib.data import load_shakespeare
    from gptlib.evaluate import evaluate
    from gptlib.tokenizers import TokenWindows, gpt2_tokenizer, tokenize_dataset

    answers = solutions_of("11_tokenization")
    gpt2 = gpt2_tokenizer()
    assert right("11.1", answers.exercise_1(gpt2)) and not right("11.1", (3, 6))  # characters, not bytes
    text = load_shakespeare()
    assert right("11.2", answers.exercise_2(text[:10_000])) and not right("11.2", 9_708)  # the tokens left
    assert right("11.3", answers.exercise_3()) and right("11.3", len(TokenWindows(range(1000), 32, 16)))
    assert not right("11.3", (1000 - 32) // 16)  # without the + 1
    shipped = load_checkpoint(ROOT / "assets" / "tokenization" / "bpe-1024")
    data = tokenize_dataset(shipped.tokenizer)
    metrics = evaluate(shipped.model, data.val, characters=data.val_characters)
    per_token = data.val_characters / len(data.val)
    assert right("11.4", answers.exercise_4(metrics.nats, per_token))
    assert not right("11.4", metrics.nats / per_token)  # nats, not bits
    assert not right("11.4", metrics.nats * per_token / math.log(2))
    compression = answers.exercise_5(text[:200_000], text[200_000:260_000], vocab_size=400)
    assert compression["gpt4"] > compression["gpt2"] > 1.5


def test_the_answers_to_chapter_12_pass_its_checks_and_the_checks_reject_wrong_ones():
    answers = solutions_of("12_pretrained_weights")
    assert right("12.1", answers.exercise_1()) and answers.exercise_1() == 354_823_168
    assert not right("12.1", 354_823_168 - 24 * 3 * 1024)  # without the query/key/value biases
    assert right("12.2", answers.exercise_2()) and right("12.2", [384, 576])  # a list will do
    assert not right("12.2", (192, 384)) and not right("12.2", 384)  # the keys; a number
    assert right("12.3", answers.exercise_3())
    assert not right("12.3", answers.exercise_3() + 8)  # the length field counted in
    assert right("12.4", answers.exercise_4()) and not right("12.4", True)


def test_the_answers_to_chapter_13_pass_its_checks_and_the_checks_reject_wrong_ones():
    from gptlib import finetune as ft
    from gptlib.data import load_shakespeare

    answers = solutions_of("13_finetuning")
    assert right("13.1", answers.exercise_1())
    assert not right("13.1", 4 * 2 * 256 * 256)  # the full matrices' count
    assert right("13.2", answers.exercise_2)  # the function, called on the check's own layer
    assert not right("13.2", lambda lora: lora.base.weight + lora.B @ lora.A)  # forgot the scale
    assert not right("13.2", lambda lora: lora.base.weight + lora.scale * lora.A.T @ lora.B.T)  # transposed
    assert assess("13.2", lambda lora: None).startswith("Not attempted")
    state = torch.random.get_rng_state()
    right("13.2", answers.exercise_2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the learner's random numbers untouched
    text = load_shakespeare()
    replies = ft.reply_splits(ft.reply_examples(ft.speeches(text), 128), int(0.9 * len(text)))
    example = replies["val"][0]  # the chapter's `example`
    assert right("13.3", answers.exercise_3(example))
    assert not right("13.3", len(example.prompt) + len(example.reply) - 1)  # every position
    assert right("13.4", answers.exercise_4())
    assert not right("13.4", 1 / 9)  # a uniform guess
    # the end mark's last newline; not the full stop, not the batch's last position
    assert right("13.5", answers.exercise_5()) and not right("13.5", 2) and not right("13.5", 23)
