"""Chapter 13: the task labels, the classifier's last-token choice, LoRA and its merge, the
masked reply loss, the four methods, adapter files and the command line."""

import copy
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib import finetune as ft
from gptlib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gptlib.cli import main
from gptlib.data import DATA_FILENAME, PLAYS, CharTokenizer, data_dir, load_shakespeare
from gptlib.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def text():
    return load_shakespeare()


@pytest.fixture(scope="module")
def speeches(text):
    return ft.speeches(text)


@pytest.fixture(scope="module")
def tokenizer(text):
    return CharTokenizer(text)


def tiny_gpt(block_size=128, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=65, block_size=block_size, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.0))


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    """A tiny 'pretrained' checkpoint that reads 128 characters."""
    out = tmp_path_factory.mktemp("base")
    save_checkpoint(out, tiny_gpt(), tokenizer)
    return out


# --- the labels -------------------------------------------------------------------------


def test_the_corpus_has_7110_speeches_each_with_its_name_line_and_play(text, speeches):
    assert len(speeches) == 7110
    for speech in speeches:
        assert text.startswith(f"{speech.speaker}:\n{speech.text}", speech.start)
        assert speech.text and not speech.text.endswith("\n")
        assert f"\n{speech.speaker}:\n" not in speech.text
    assert speeches[0].speaker == "First Citizen" and speeches[0].title == "Coriolanus"
    assert speeches[-1].title == "The Tempest"
    # Each play's first speech is the one PLAYS pins.
    firsts = {}
    for speech in speeches:
        firsts.setdefault(speech.play, speech.start)
    assert [firsts[i] for i in range(len(PLAYS))] == [start for _, start in PLAYS]


def test_speeches_per_play_are_pinned(speeches):
    counts = torch.bincount(torch.tensor([s.play for s in speeches])).tolist()
    assert counts == [1100, 1075, 551, 827, 793, 735, 873, 877, 279]


def test_a_text_that_is_not_tiny_shakespeare_is_refused():
    with pytest.raises(ValueError, match="offsets in Tiny Shakespeare"):
        ft.speeches("ROMEO:\nHello.\n")


def test_splits_are_contiguous_runs_inside_each_play_and_cover_every_play(speeches):
    splits = ft.play_splits(speeches)
    assert {k: len(v) for k, v in splits.items()} == {"train": 5691, "val": 712, "test": 707}
    assert sum(len(v) for v in splits.values()) == len(speeches)
    assert len({s.start for v in splits.values() for s in v}) == len(speeches)
    for split in splits.values():
        assert {s.play for s in split} == set(range(len(PLAYS)))
    # Walking through the file, the split changes only at a run's edge: 20 runs a play,
    # so at most 4 changes (train, val, test, train, ...) per ten runs, 8 per play.
    where = {s.start: name for name, v in splits.items() for s in v}
    changes = sum(where[a.start] != where[b.start] for a, b in zip(speeches, speeches[1:]))
    assert changes <= 8 * len(PLAYS)


def test_split_of_puts_a_tenth_in_validation_and_a_tenth_in_test():
    names = [ft.split_of(i, 1000) for i in range(1000)]
    assert names.count("val") == 100 and names.count("test") == 100
    assert names[400:450] == ["val"] * 50 and names[450:500] == ["test"] * 50


def test_reply_pairs_follow_the_template_and_fit_the_window(speeches):
    examples = ft.reply_examples(speeches, 128)
    assert len(examples) == 7051
    assert examples[0].prompt == "First Citizen said:\nwe proceed any further, hear me speak.\nAll replies:\n"
    assert examples[0].reply == "Speak, speak.\n\n"
    for example in examples:
        assert len(example.prompt) + len(example.reply) <= 129
        assert example.prompt.endswith(" replies:\n")
    # A whole reply ends with the end mark; a cut one (most) does not.
    whole = [e for e in examples if e.reply.endswith(ft.REPLY_END)]
    assert len(whole) == 3054
    # Never a speaker answering himself, never across plays.
    by_start = {s.start: s for s in speeches}
    previous = {b.start: a for a, b in zip(speeches, speeches[1:])}
    for example in examples[:500]:
        reply, said = by_start[example.start], previous[example.start]
        assert reply.speaker != said.speaker and reply.play == said.play
        assert example.prompt.startswith(f"{said.speaker} said:\n")


def test_reply_splits_are_before_and_after_the_pretraining_split(speeches, text):
    examples = ft.reply_examples(speeches, 128)
    splits = ft.reply_splits(examples, int(len(text) * 0.9))
    assert len(splits["train"]) + len(splits["val"]) == len(examples)
    assert max(e.start for e in splits["train"]) < int(len(text) * 0.9) <= min(e.start for e in splits["val"])


def test_tail_starts_at_a_word():
    assert ft.tail("short", 40) == "short"
    assert ft.tail("one two three four", 10) == "three four"
    assert ft.tail("one two three four", 12) == "three four"
    assert ft.tail("one two three four", 9) == "four"


# --- the classifier reads the last real token ------------------------------------------


def test_padding_never_changes_a_texts_logits_and_the_last_real_token_is_read(tokenizer):
    model = ft.GPTClassifier(tiny_gpt(), 9)
    nn.init.normal_(model.head.weight)
    texts = ["Go.", "What say you, my lord?", "O Romeo, Romeo!"]
    idx, lengths = ft.collate_texts(texts, tokenizer, 128)
    assert lengths.tolist() == [3, 22, 15] and idx.shape == (3, 22)
    batched, _ = model(idx, lengths)
    for row, text in enumerate(texts):
        alone = torch.tensor([tokenizer.encode(text)])
        logits, _ = model(alone, torch.tensor([len(text)]))
        assert torch.allclose(batched[row], logits[0], atol=1e-5)
        hidden = model.gpt.hidden_states(alone)[0, -1]
        assert torch.allclose(model.features(alone, torch.tensor([len(text)]))[0], hidden)
    # Whatever fills the padding, the answer is the same.
    other = idx.clone()
    other[0, 3:] = 7
    assert torch.allclose(model(other, lengths)[0], batched, atol=1e-6)
    # Reading the last position instead (padding, for a short text) would differ.
    last = model.head(model.gpt.hidden_states(idx)[:, -1])
    assert not torch.allclose(last[0], batched[0], atol=1e-3)


def test_a_long_text_keeps_its_end_and_an_empty_one_is_refused(tokenizer):
    idx, lengths = ft.collate_texts(["b" + "a" * 300 + "z"], tokenizer, 128)
    assert idx.shape == (1, 128) and lengths.tolist() == [128]
    assert tokenizer.decode(idx[0].tolist()) == "a" * 127 + "z"
    with pytest.raises(ValueError, match="empty"):
        ft.collate_texts(["a", ""], tokenizer, 128)


def test_speeches_end_with_the_blank_line_the_classifier_reads(tokenizer):
    idx, lengths = ft.collate_speeches(["Go.", "Speak, speak."], tokenizer, 128)
    assert lengths.tolist() == [5, 15]
    assert tokenizer.decode(idx[0, :5].tolist()) == "Go.\n\n"
    long = "x" * 200
    idx, lengths = ft.collate_speeches([long], tokenizer, 128)
    assert tokenizer.decode(idx[0].tolist()) == "x" * 126 + "\n\n"


# --- LoRA ---------------------------------------------------------------------------------


def test_lora_starts_as_the_pretrained_layer_and_trains_only_a_and_b():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    lora = ft.LoRALinear(copy.deepcopy(base), rank=3, alpha=6.0)
    x = torch.randn(5, 12)
    assert torch.equal(lora(x), base(x))  # B starts at zero
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert sorted(trainable) == ["A", "B"]
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == 3 * (12 + 20)
    assert lora.scale == 2.0


def test_a_merged_lora_layer_equals_the_unmerged_one():
    torch.manual_seed(0)
    lora = ft.LoRALinear(nn.Linear(12, 20), rank=3, alpha=6.0)
    nn.init.normal_(lora.B)
    x = torch.randn(5, 12)
    merged = lora.merged()
    assert isinstance(merged, nn.Linear)
    assert torch.allclose(merged(x), lora(x), atol=1e-6)
    assert torch.linalg.matrix_rank(lora.delta()).item() <= 3
    assert torch.allclose(merged.weight - lora.base.weight, lora.delta(), atol=1e-6)


def test_a_gpt_with_lora_merged_gives_the_same_logits_and_is_a_plain_gpt():
    gpt = tiny_gpt()
    wrapped = ft.add_lora(gpt, rank=4, alpha=8.0)
    assert len(wrapped) == 2 * 4  # two blocks, four projections each
    for layer in wrapped:
        nn.init.normal_(layer.B, std=0.05)
    idx = torch.randint(65, (2, 40))
    before, _ = gpt(idx)
    ft.merge_lora(gpt)
    assert not any(isinstance(m, ft.LoRALinear) for m in gpt.modules())
    after, _ = gpt(idx)
    assert torch.allclose(before, after, atol=1e-5)
    assert set(gpt.state_dict()) == set(tiny_gpt().state_dict())


def test_lora_refuses_a_bad_rank_or_alpha():
    with pytest.raises(ValueError, match="rank"):
        ft.LoRALinear(nn.Linear(4, 4), rank=0)
    with pytest.raises(ValueError, match="rank must be at most 4, the smaller side of the 6x4 weight"):
        ft.LoRALinear(nn.Linear(4, 6), rank=5)
    with pytest.raises(ValueError, match="alpha"):
        ft.LoRALinear(nn.Linear(4, 4), rank=2, alpha=float("nan"))


# --- what each method trains --------------------------------------------------------------


@pytest.mark.parametrize("method, expected", [
    ("probe", 16 * 9 + 9),
    ("last-block", None),
    ("lora", 2 * (4 * 8 * (16 + 16)) + 16 * 9 + 9),
    ("scratch", None),
])
def test_each_method_trains_what_it_says(method, expected):
    gpt = tiny_gpt()
    model = ft.build(gpt, "play", method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if expected is not None:
        assert ft.trainable_parameters(model) == expected
    if method == "probe":
        assert trainable == {"head.weight", "head.bias"}
    if method == "last-block":
        assert trainable == {n for n, _ in model.named_parameters()
                             if n.startswith(("gpt.blocks.1.", "gpt.ln_f.", "head."))}
    if method == "scratch":
        assert trainable == {n for n, _ in model.named_parameters() if not n.startswith("gpt.lm_head.")}
        assert not torch.equal(model.gpt.token_embedding.weight, tiny_gpt().token_embedding.weight)


def test_an_unknown_method_or_task_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        ft.build(tiny_gpt(), "play", "everything")
    with pytest.raises(ValueError, match="unknown task"):
        ft.build(tiny_gpt(), "poetry", "lora")


# --- the masked reply loss -----------------------------------------------------------------


def test_reply_targets_mask_the_prompt_and_the_padding(tokenizer):
    examples = [ft.ReplyExample("A said:\nhi\nB replies:\n", "Yes.\n\n", 0),
                ft.ReplyExample("C said:\nno\nD replies:\n", "Go on, then.\n\n", 0)]
    x, y = ft.collate_replies(examples, tokenizer)
    for row, example in enumerate(examples):
        n_prompt, n_reply = len(example.prompt), len(example.reply)
        ids = tokenizer.encode(example.prompt + example.reply)
        assert x[row, :n_prompt + n_reply - 1].tolist() == ids[:-1]
        assert (y[row, :n_prompt - 1] == ft.IGNORE).all()
        assert y[row, n_prompt - 1:n_prompt + n_reply - 1].tolist() == tokenizer.encode(example.reply)
        assert (y[row, n_prompt + n_reply - 1:] == ft.IGNORE).all()  # padding
    # The loss is the mean over the reply tokens alone, whatever the prompt's targets were.
    model = tiny_gpt()
    _, loss = model(x, y)
    logits, _ = model(x)
    keep = y != ft.IGNORE
    by_hand = F.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(loss, by_hand)
    assert keep.sum().item() == sum(len(e.reply) for e in examples)
    assert abs(ft.reply_loss(model, tokenizer, examples) - by_hand.item()) < 1e-5


def test_gradients_do_not_depend_on_the_prompts_next_tokens(tokenizer):
    """Changing only the prompt part of the targets (masked) leaves the loss unchanged."""
    example = ft.ReplyExample("A said:\nhi\nB replies:\n", "Yes.\n\n", 0)
    x, y = ft.collate_replies([example], tokenizer)
    model = tiny_gpt()
    _, loss = model(x, y)
    y2 = y.clone()
    y2[0, :5] = ft.IGNORE
    assert torch.equal(model(x, y2)[1], loss)


# --- training, adapters and baselines -------------------------------------------------------


def test_finetuning_lowers_the_loss_and_an_adapter_rebuilds_the_same_model(tmp_path, base, speeches,
                                                                           tokenizer):
    splits = ft.play_splits(speeches)
    ckpt = load_checkpoint(base)
    model = ft.build(ckpt.model, "play", "lora", rank=2, alpha=4.0)
    config = ft.default_config("play", "lora", max_iters=30, batch_size=8, eval_interval=30,
                               learning_rate=1e-2, min_lr=1e-3)
    state = ft.finetune(model, tokenizer, splits["train"], splits["val"][:50], config, progress=False)
    losses = state.history["loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert state.history["eval_step"] == [30] and 0 <= state.history["val_accuracy"][0] <= 1
    info = {"task": "play", "method": "lora", "rank": 2, "alpha": 4.0, "base": str(base)}
    path = ft.save_finetuned(tmp_path / "tune", model, info, config, state)
    assert path.stat().st_size < 100_000  # LoRA's A and B and the head, not the model
    loaded = ft.load_finetuned(tmp_path / "tune", load_checkpoint(base).model, tokenizer)
    texts = [s.text for s in splits["test"][:20]]
    assert torch.allclose(ft.predict(loaded.model, tokenizer, texts), ft.predict(model, tokenizer, texts),
                          atol=1e-6)
    assert loaded.step == 30 and loaded.info == info
    # Merged, the classifier answers the same.
    merged = ft.merge_lora(copy.deepcopy(loaded.model))
    assert torch.allclose(ft.predict(merged, tokenizer, texts), ft.predict(model, tokenizer, texts),
                          atol=1e-5)


def test_an_adapter_on_the_wrong_base_or_a_damaged_file_is_one_error(tmp_path, tokenizer):
    model = ft.build(tiny_gpt(), "play", "probe")
    ft.save_finetuned(tmp_path / "t", model, {"task": "play", "method": "lora", "rank": 8, "alpha": 16.0},
                      ft.default_config("play", "probe"))
    with pytest.raises(CheckpointError, match="does not fit"):  # saved as probe, labelled lora
        ft.load_finetuned(tmp_path / "t", tiny_gpt(), tokenizer)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ft.FILENAME).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable fine-tune"):
        ft.load_finetuned(tmp_path / "bad", tiny_gpt(), tokenizer)


def test_the_baselines(speeches, tokenizer):
    splits = ft.play_splits(speeches)
    majority = ft.majority_baseline(splits["train"], splits["test"])
    coriolanus = sum(s.play == 0 for s in splits["test"]) / len(splits["test"])
    assert majority == pytest.approx(coriolanus)  # Coriolanus has the most speeches
    accuracy, predictions = ft.bag_of_characters_baseline(splits["train"][::4], splits["val"],
                                                          splits["test"], tokenizer, steps=50)
    assert len(predictions) == len(splits["test"])
    assert majority < accuracy < 0.5  # better than guessing the biggest play, far from reading


def test_confusion_matrix_counts_true_by_predicted():
    m = ft.confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


# --- the command line ------------------------------------------------------------------------

QUICK = ["--max_iters", "4", "--batch_size", "4", "--eval_interval", "2", "--warmup_iters", "1",
         "--quiet"]


def test_finetune_writes_an_adapter_and_classify_uses_it(tmp_path, base, capsys):
    out = tmp_path / "tune"
    assert main(["finetune", "--checkpoint", str(base), "--task", "play", "--method", "lora",
                 "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "on 707 speeches" in printed
    found = ft.open_finetuned(out)
    assert found.step == 4 and found.info["method"] == "lora" and found.history["eval_step"] == [2, 4]
    assert main(["classify", "--checkpoint", str(out), "--text", "O Romeo, Romeo!"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.split("  ", 1)[1] in ft.PLAY_TITLES for line in lines)
    assert main(["classify", "--checkpoint", str(out), "--text", "Ça va"]) == 2
    assert "characters the model does not know: 'Ç'" in capsys.readouterr().err
    # Resuming goes on from step 4.
    assert main(["finetune", "--checkpoint", str(base), "--task", "play", "--method", "lora",
                 "--out", str(out), "--resume", *QUICK[:-1][2:], "--max_iters", "6"]) == 0
    assert ft.open_finetuned(out).step == 6


def test_a_reply_finetune_also_writes_a_plain_checkpoint_that_samples(tmp_path, base, capsys):
    out = tmp_path / "reply"
    assert main(["finetune", "--checkpoint", str(base), "--task", "reply", "--method", "lora",
                 "--out", str(out), *QUICK]) == 0
    assert "validation reply loss" in capsys.readouterr().out
    merged = load_checkpoint(out)
    tuned = ft.open_finetuned(out)
    idx = torch.randint(65, (1, 50))
    assert torch.allclose(merged.model(idx)[0], tuned.model(idx)[0], atol=1e-5)
    assert main(["sample", "--checkpoint", str(out), "--tokens", "5"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--method", "lora", "--rank", "0"], "rank must be a positive"),
    (["--method", "lora", "--rank", "100000"], "more than this model's n_embd"),
    (["--method", "probe", "--rank", "4"], "--rank only applies to --method lora, not --method probe"),
    (["--method", "last-block", "--rank", "4", "--alpha", "8"], "--rank and --alpha only apply"),
    (["--method", "probe", "--max_iters", "0"], "max_iters must be a positive"),
    (["--method", "probe", "--checkpoint", "nowhere"], "no checkpoint at nowhere"),
    (["--method", "probe", "--batch_size", "100000"],
     "--batch_size 100000 is more than the 5,691 training examples of the play task"),
])
def test_bad_finetune_input_is_one_line_and_leaves_nothing(tmp_path, base, capsys, args, message):
    out = tmp_path / "tune"
    argv = ["finetune", "--checkpoint", str(base), "--task", "play", "--out", str(out), "--quiet"]
    assert main(argv + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_finetune_refuses_to_overwrite_or_resume_wrongly(tmp_path, base, capsys):
    out = tmp_path / "tune"
    argv = ["finetune", "--checkpoint", str(base), "--task", "play", "--method", "probe", "--out", str(out)]
    assert main(argv + ["--resume", *QUICK]) == 2
    assert "no fine-tune in" in capsys.readouterr().err
    assert main(argv + QUICK) == 0
    before = ft.finetuned_path(out).read_bytes()
    assert main(argv + QUICK) == 2
    assert "already holds a fine-tune" in capsys.readouterr().err
    assert main(["finetune", "--checkpoint", str(base), "--task", "play", "--method", "lora",
                 "--out", str(out), "--resume", "--max_iters", "8", "--quiet"]) == 2
    assert "keeps its task and method" in capsys.readouterr().err
    other = tmp_path / "other"
    save_checkpoint(other, tiny_gpt(seed=1), load_checkpoint(base).tokenizer)
    assert main(["finetune", "--checkpoint", str(other), "--task", "play", "--method", "probe",
                 "--out", str(out), "--resume", "--max_iters", "8", "--quiet"]) == 2
    assert "was trained on another checkpoint" in capsys.readouterr().err
    assert ft.finetuned_path(out).read_bytes() == before


def test_finetune_and_classify_leave_the_files_they_read_byte_identical(tmp_path, base, digests,
                                                                         capsys):
    read = [base, data_dir() / DATA_FILENAME]
    before = digests(*read)
    for task in ("play", "reply"):
        assert main(["finetune", "--checkpoint", str(base), "--task", task, "--method", "lora",
                     "--out", str(tmp_path / task), *QUICK]) == 0
    assert main(["finetune", "--checkpoint", str(base), "--task", "play", "--method", "lora",
                 "--out", str(tmp_path / "play"), "--resume", *QUICK[:-1][2:], "--max_iters", "6"]) == 0
    assert main(["classify", "--checkpoint", str(tmp_path / "play"), "--text", "O Romeo!"]) == 0
    assert digests(*read) == before
    capsys.readouterr()


@pytest.mark.parametrize("top", ["0", "10"])
def test_classify_refuses_a_top_outside_the_plays(tmp_path, capsys, top):
    assert main(["classify", "--checkpoint", str(tmp_path), "--text", "Hello", "--top", top]) == 2
    err = capsys.readouterr().err
    assert f"--top must be from 1 to the 9 plays, got {top}" in err and err.count("\n") == 1


def test_a_model_too_short_for_replies_is_refused(tmp_path, tokenizer, capsys):
    short = tmp_path / "short"
    save_checkpoint(short, tiny_gpt(block_size=16), tokenizer)
    assert main(["finetune", "--checkpoint", str(short), "--task", "reply", "--method", "lora",
                 "--out", str(tmp_path / "t"), "--quiet"]) == 2
    assert "too few for the replies task" in capsys.readouterr().err


def test_classify_refuses_unknown_characters_and_a_reply_finetune(tmp_path, base, capsys):
    out = tmp_path / "reply"
    assert main(["finetune", "--checkpoint", str(base), "--task", "reply", "--method", "probe",
                 "--out", str(out), *QUICK]) == 0
    capsys.readouterr()
    assert main(["classify", "--checkpoint", str(out), "--text", "Hello"]) == 2
    assert "not a classifier" in capsys.readouterr().err


def test_ctrl_c_saves_the_finetune_and_says_how_to_resume(tmp_path, base, wait_for_checkpoint):
    out = tmp_path / "tune"
    command = [sys.executable, "-m", "gptlib", "finetune", "--checkpoint", str(base), "--task", "play",
               "--method", "probe", "--out", str(out), "--quiet", "--max_iters", "1000000",
               "--batch_size", "4", "--eval_interval", "5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(out, process, filename=ft.FILENAME)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert ft.open_finetuned(out).step >= 5
