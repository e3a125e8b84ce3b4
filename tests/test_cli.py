"""The command line, run in-process (fast) and once as a real `python -m gptlib` process."""

import contextlib
import math
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from gptlib import cli
from gptlib.checkpoint import FILENAME, load_checkpoint
from gptlib.cli import main
from gptlib.data import DATA_FILENAME, DATA_N_CHARS, data_dir, load_shakespeare
from gptlib.tokenizers import BPETokenizer, tokenize_dataset

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
        "--batch_size", "4", "--max_iters", "6", "--eval_interval", "3", "--eval_iters", "2",
        "--warmup_iters", "2", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run directory, made by the CLI."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--preset", "cpu", "--out", str(out), "--overwrite", *TINY]) == 0
    return out



def test_presets_lists_every_preset_with_its_size(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("cpu", "classic-cpu", "gpu"):
        assert f"\n{name} " in "\n" + out
    assert "10.79M parameters" in out


def test_train_writes_a_checkpoint_with_the_overridden_shape(run):
    ckpt = load_checkpoint(run)
    assert ckpt.model.config.n_embd == 16 and ckpt.model.config.block_size == 16
    assert ckpt.step == 6 and ckpt.train_config.max_iters == 6
    assert ckpt.history["eval_step"] == [3, 6]


def printed_loss(text: str) -> float:
    """The loss `python -m gptlib eval` prints."""
    return float(re.search(r"^loss \(nats per character\) +([0-9.]+)$", text, re.M).group(1))


def test_eval_prints_loss_bits_per_character_and_perplexity(run, capsys):
    assert main(["eval", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    loss = printed_loss(out)
    assert 2.5 < loss < 4.5  # six steps of training: not much better than a uniform guess (4.17)
    bits = float(re.search(r"^bits per character +([0-9.]+)$", out, re.M).group(1))
    perplexity = float(re.search(r"^perplexity +([0-9.]+)$", out, re.M).group(1))
    assert bits == pytest.approx(loss / math.log(2), abs=2e-4)
    assert perplexity == pytest.approx(math.exp(loss), rel=1e-3)
    assert "111,539 predictions" in out


def test_sample_writes_the_prompt_then_the_requested_characters(run, capsys):
    assert main(["sample", "--checkpoint", str(run), "--prompt", "ROMEO:", "--tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 40 + 1


def test_sample_is_reproducible_with_a_seed(run, capsys):
    texts = []
    for seed in ("1", "1", "2"):
        main(["sample", "--checkpoint", str(run), "--tokens", "30", "--seed", seed])
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] != texts[2]


def test_the_cache_and_no_cache_write_the_same_text(run, capsys):
    main(["sample", "--checkpoint", str(run), "--tokens", "40", "--prompt", "To be"])
    cached = capsys.readouterr().out
    main(["sample", "--checkpoint", str(run), "--tokens", "40", "--prompt", "To be", "--no-cache"])
    assert capsys.readouterr().out == cached


def test_unknown_prompt_characters_are_named_and_can_be_dropped(run, capsys):
    assert main(["sample", "--checkpoint", str(run), "--prompt", "Romeo — ½", "--tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "'—'" in err and "'½'" in err and "--drop-unknown" in err
    assert main(["sample", "--checkpoint", str(run), "--prompt", "Romeo — ½", "--tokens", "5",
                 "--drop-unknown"]) == 0
    assert capsys.readouterr().out.startswith("Romeo  ")


def test_a_long_prompt_is_cropped_with_a_note(run, capsys):
    assert main(["sample", "--checkpoint", str(run), "--prompt", "a" * 40, "--tokens", "3"]) == 0
    assert "only the last 16 characters" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--tokens", "0"], "--tokens must be a positive"),
    (["--tokens", "-3"], "--tokens must be a positive"),
    (["--prompt", ""], "prompt is empty"),
    (["--temperature", "0"], "temperature must be a number > 0"),
    (["--temperature", "inf"], "temperature must be a number > 0"),
    (["--top-k", "0"], "top_k must be between 1 and the vocabulary size 65"),
    (["--top-k", "66"], "top_k must be between 1"),
    (["--top-p", "1.5"], r"top_p must be in (0, 1]"),
    (["--top-p", "0"], r"top_p must be in (0, 1]"),
    (["--window-shift", "0"], "window_shift must be a whole number from 1 to block_size (16)"),
    (["--window-shift", "17"], "window_shift must be a whole number from 1 to block_size (16)"),
    (["--seed", str(2**64)], "seed must be a whole number from 0 to 2**63 - 1"),
    (["--seed", "-1"], "seed must be a whole number from 0 to 2**63 - 1"),
])
def test_bad_sampling_input_is_one_line_and_exit_2(run, capsys, args, message):
    assert main(["sample", "--checkpoint", str(run), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""  # not even the prompt


@pytest.mark.parametrize("args, message", [
    (["--n_embd", "30", "--n_head", "4"], "must be divisible by n_head"),
    (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    (["--learning_rate", "0"], "learning_rate must be > 0"),
    (["--n_layer", "-1"], "n_layer must be a positive"),
    (["--learning_rate", "nan"], "learning_rate must be > 0"),
    (["--grad_clip", "inf"], "grad_clip must be >= 0"),
    (["--precision", "float16", "--device", "cpu"], "float16 training needs a CUDA GPU"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--lr_decay_iters", "0"], "lr_decay_iters must be a positive"),
    (["--seed", str(2**70)], "seed must be a whole number from 0 to 2**63 - 1"),
    (["--n_embd", "16384", "--n_head", "16", "--n_layer", "48", "--block_size", "1024",
      "--batch_size", "64"], "a training step of this model needs at least"),
])
def test_bad_training_input_is_one_line_and_changes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "two"], "argument --batch_size: invalid int value: 'two'"),
    (["--n_layr", "2"], "unknown option --n_layr (did you mean --n_layer?); "
                        "see 'python -m gptlib train --help'"),
    (["--learning-rate", "2"], "unknown option --learning-rate (did you mean --learning_rate?)"),
    (["--max_it", "2"], "unknown option --max_it (did you mean --max_iters?)"),
    (["--eval", "2"], "unknown option --eval (did you mean --eval_interval or --eval_iters?)"),
    (["--lr", "2"], "unknown option --lr; see"),  # no far-fetched guess such as --min_lr
    (["stray"], "unexpected argument 'stray'"),
])
def test_option_mistakes_are_one_line_with_a_suggestion(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        main(["train", "--out", str(out), *args])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_help_lists_every_setting_of_both_configs_with_its_default_and_meaning(capsys):
    from dataclasses import fields

    from gptlib.presets import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    cpu = PRESETS["cpu"]
    for config in (cpu.model, cpu.train):
        for f in fields(config):
            if f.name == "vocab_size":
                assert "--vocab_size" not in text  # the data decides it
                continue
            default = getattr(config, f.name)
            shown = "max_iters" if default is None else default
            if f.type == "bool":  # --name / --no-name
                option = f"--{f.name}, --no-{f.name}"
            else:
                kind = "INT" if f.type.startswith("int") else "STR" if f.type == "str" else "FLOAT"
                option = f"--{f.name} {kind}"
            assert f"{option} {f.metadata['help']} (default: {shown})" in text, f.name


def test_train_refuses_to_overwrite_a_run_unless_asked(run, capsys):
    before = (run / FILENAME).read_bytes()
    assert main(["train", "--out", str(run), *TINY]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (run / FILENAME).read_bytes() == before


def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY]) == 0
    assert main(["train", "--out", str(out), "--resume", "--max_iters", "9",
                 "--lr_decay_iters", "9", "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt.step == 9 and len(ckpt.history["loss"]) == 9
    assert main(["train", "--out", str(out), "--resume", "--n_layer", "3"]) == 2
    assert "cannot change the model's shape" in capsys.readouterr().err


def test_an_option_with_an_equals_sign_works_too(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--max_iters=3", "--eval_interval=3"]) == 0
    assert load_checkpoint(out).step == 3


def test_python_dash_m_gptlib_runs_as_a_program(run):
    done = subprocess.run([sys.executable, "-m", "gptlib", "eval", "--checkpoint", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    printed_loss(done.stdout)
    bad = subprocess.run([sys.executable, "-m", "gptlib", "sample", "--checkpoint",
                          str(run / "nowhere")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: no checkpoint at") and "Traceback" not in bad.stderr


# --- stopping and resuming --------------------------------------------------------------


def test_resume_is_bit_identical_to_training_straight_through(tmp_path):
    # Dropout on, so the global random state matters too.
    shape = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
             "--batch_size", "4", "--eval_interval", "4", "--eval_iters", "2",
             "--warmup_iters", "2", "--lr_decay_iters", "8", "--dropout", "0.1", "--quiet",
             "--log_interval", "3"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert main(["train", "--out", str(straight), "--max_iters", "8", *shape]) == 0
    assert main(["train", "--out", str(halves), "--max_iters", "4", *shape]) == 0
    assert main(["train", "--out", str(halves), "--resume", "--max_iters", "8", "--quiet"]) == 0
    a, b = load_checkpoint(straight), load_checkpoint(halves)
    assert a.step == b.step == 8
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.history == b.history  # every step's loss and learning rate, and the estimates


def start_training(out, *extra):
    """A real `python -m gptlib train` process that would run for a long time."""
    command = [sys.executable, "-m", "gptlib", "train", "--out", str(out), "--quiet",
               "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
               "--batch_size", "4", "--max_iters", "1000000", "--lr_decay_iters", "1000000",
               "--eval_interval", "20", "--eval_iters", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, sig, wait_for_checkpoint,
                                                            capsys):
    out = tmp_path / "run"
    process = start_training(out)
    wait_for_checkpoint(out, process)
    time.sleep(0.5)  # a few steps past the first evaluation
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"python -m gptlib train --out {out} --resume" in stderr
    ckpt = load_checkpoint(out)
    assert 20 <= ckpt.step < 1_000_000 and len(ckpt.history["loss"]) == ckpt.step
    if sig == signal.SIGTERM:
        return  # resuming after either is the same: checked once, after SIGINT
    # A run resumed from that checkpoint (not an evaluation's) that diverges keeps it.
    assert main(["train", "--out", str(out), "--resume", "--learning_rate", "1e6", "--min_lr", "0",
                 "--grad_clip", "0", "--log_interval", "1", "--max_iters", str(ckpt.step + 50),
                 "--eval_interval", str(ckpt.step + 100)]) == 2  # no evaluation saves meanwhile
    assert f"the checkpoint of step {ckpt.step} is kept" in capsys.readouterr().err
    process = start_training(out, "--resume", "--max_iters", str(ckpt.step + 3))
    process.communicate(timeout=120)
    assert process.returncode == 0 and load_checkpoint(out).step == ckpt.step + 3


def test_two_quick_interrupts_leave_a_whole_checkpoint(tmp_path, wait_for_checkpoint):
    out = tmp_path / "run"
    process = start_training(out)
    wait_for_checkpoint(out, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)  # may land before or after the first is handled
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert load_checkpoint(out).step >= 20  # whichever save finished last, it is whole


def test_a_second_interrupt_quits_at_once():
    program = ("import signal; from gptlib.cli import StopRequest; stop = StopRequest(); "
               "stop.handle(signal.SIGINT, None); stop.handle(signal.SIGINT, None); print('went on')")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and "went on" not in done.stdout
    assert "second interrupt: quitting now" in done.stderr


def test_training_past_the_end_of_a_run_is_refused(run, capsys):
    assert main(["train", "--out", str(run), "--resume"]) == 2
    assert "already at step 6" in capsys.readouterr().err


# --- other texts, and bad data ---------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"aaaaaaaaaa", "single distinct character ('a')"),
    (b"caf\xe9 au lait", "is not UTF-8 text (byte 3"),
])
def test_a_bad_data_file_is_one_line_and_changes_nothing(tmp_path, capsys, content, message):
    data = tmp_path / "text.txt"
    data.write_bytes(content)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(data), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_corpus_that_fails_its_checksum_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinyshakespeare.txt").write_text("To be, or not to be")
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path))
    assert main(["train", "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "is not Tiny Shakespeare" in err and "delete it" in err and err.count("\n") == 1


def test_train_and_eval_on_another_text(tmp_path, capsys):
    data = tmp_path / "sonnet.txt"
    data.write_text("Shall I compare thee to a summer's day?\n" * 40)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(data), *TINY]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.data_path == str(data.resolve()) and ckpt.tokenizer.vocab_size == len(set(data.read_text()))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0  # evaluates on the same text
    printed_loss(capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "tiny", "--out", "x"], "invalid choice: 'tiny'"),
    (["sample"], "the following arguments are required: --checkpoint"),
    (["fly"], "invalid choice: 'fly'"),
    (["sample", "--checkpoint", "x", "--tokens", "ten"], "invalid int value: 'ten'"),
    (["sample", "--checkpoint", "x", "--top_k", "3"], "unknown option --top_k (did you mean --top-k?)"),
    (["eval", "--checkpoint", "x", "--n_layer", "3"], "unknown option --n_layer"),
])
def test_argument_mistakes_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


# --- bad input, found by trying: one line, exit 2, nothing changed ---------------------------


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    assert main(["train", "--out", str(out), *TINY]) == 2
    assert "is a file; name a directory" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_a_data_folder_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").write_text("")
    monkeypatch.setenv("GPTLIB_DATA_DIR", str(tmp_path / "data"))
    assert main(["train", "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "GPTLIB_DATA_DIR=" in err and "is a file" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_at_once_and_keeps_its_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    shape = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16",
             "--batch_size", "4", "--eval_iters", "1", "--quiet", "--warmup_iters", "0",
             "--log_interval", "1"]
    assert main(["train", "--out", str(out), *shape, "--max_iters", "4", "--eval_interval", "4",
                 "--lr_decay_iters", "1000"]) == 0
    good = (out / FILENAME).read_bytes()
    capsys.readouterr()
    # Resumed with a learning rate so large that the weights blow up at once.
    assert main(["train", "--out", str(out), "--resume", "--max_iters", "1000",
                 "--learning_rate", "1e6", "--min_lr", "0", "--grad_clip", "0",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "the checkpoint of step 4 is kept" in err
    assert err.count("\n") == 1 and re.search(r"at step (5|6|7|8)\b", err)
    assert (out / FILENAME).read_bytes() == good


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "runs" / "new" / "run"  # nor the parents it made
    assert main(["train", "--out", str(out), *TINY, "--learning_rate", "1e6", "--min_lr", "0",
                 "--grad_clip", "0", "--warmup_iters", "0", "--log_interval", "1"]) == 2
    assert "nothing was saved" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_never_removes_a_folder_that_another_run_made_meanwhile(tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "run"
    others = contextlib.ExitStack()
    real_load = cli.tokenize_dataset

    def another_run_starts_meanwhile(*args, **kwargs):
        out.mkdir()
        others.enter_context(cli.run_lock(out))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(cli, "tokenize_dataset", another_run_starts_meanwhile)
    with others:
        assert main(["train", "--out", str(out), *TINY]) == 2
        assert "another training run is writing to" in capsys.readouterr().err
        assert out.is_dir()  # still there for the run that holds it


def test_training_longer_keeps_the_cosine_where_it_ended(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    assert main(["train", "--out", str(run), "--resume", "--max_iters", "9", "--quiet"]) == 0
    assert "cosine still ends at step 6" in capsys.readouterr().out
    ckpt = load_checkpoint(run)
    assert ckpt.train_config.lr_decay_iters == 6
    assert ckpt.history["lr"][6:] == [ckpt.train_config.min_lr] * 3  # no jump back up


def test_a_second_run_on_the_same_folder_is_refused_and_a_crashed_run_leaves_no_lock(
        tmp_path, capsys, wait_for_checkpoint):
    out = tmp_path / "run"
    process = start_training(out)
    try:
        wait_for_checkpoint(out, process)
        assert main(["train", "--out", str(out), "--overwrite", *TINY]) == 2
        assert "another training run is writing to" in capsys.readouterr().err
    finally:
        process.kill()  # a crash: no clean-up at all
        process.wait(timeout=30)
    assert main(["train", "--out", str(out), "--resume", "--max_iters",
                 str(load_checkpoint(out).step + 2), "--quiet"]) == 0


def test_resume_with_another_preset_is_refused(run, capsys):
    before = (run / FILENAME).read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--preset", "gpu",
                 "--max_iters", "10"]) == 2
    err = capsys.readouterr().err
    assert "was trained with the preset cpu" in err and "drop --preset gpu" in err
    assert (run / FILENAME).read_bytes() == before


def test_a_byte_order_mark_is_not_part_of_the_vocabulary(tmp_path):
    data = tmp_path / "bom.txt"
    data.write_bytes(("\ufeff" + "To be, or not to be: that is the question.\n" * 20).encode())
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(data), *TINY]) == 0
    assert "\ufeff" not in load_checkpoint(out).tokenizer.vocab


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["train", "--out", str(tmp_path / "file" / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot make the run directory" in err and err.count("\n") == 1


def test_a_checkpoint_option_naming_another_kind_of_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert main(["eval", "--checkpoint", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is not a readable checkpoint" in err and err.count("\n") == 1


def test_export_writes_16_bit_weights_that_sample_and_evaluate_but_do_not_resume(run, tmp_path,
                                                                                capsys):
    out = tmp_path / "shared"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert "in float16" in capsys.readouterr().out
    original, exported = load_checkpoint(run), load_checkpoint(out)
    assert (out / FILENAME).stat().st_size < (run / FILENAME).stat().st_size / 4  # no AdamW, 16 bits
    assert not exported.can_resume and exported.step == original.step
    assert exported.history == original.history and exported.train_config == original.train_config
    for (name, a), b in zip(original.model.state_dict().items(), exported.model.state_dict().values()):
        assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert printed_loss(capsys.readouterr().out) == pytest.approx(printed_loss_of(run, capsys), abs=1e-3)
    assert main(["train", "--out", str(out), "--resume", "--max_iters", "9"]) == 2
    assert "holds weights only" in capsys.readouterr().err
    before = (out / FILENAME).read_bytes()
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (out / FILENAME).read_bytes() == before


def test_sample_eval_and_export_leave_the_files_they_read_byte_identical(run, tmp_path, digests,
                                                                          capsys):
    read = [run, load_checkpoint(run).data_path or data_dir() / DATA_FILENAME]
    before = digests(*read)
    assert main(["sample", "--checkpoint", str(run), "--tokens", "20"]) == 0
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "exported")]) == 0
    assert main(["export", "--checkpoint", str(run / FILENAME), "--out", str(tmp_path / "bf16"),
                 "--dtype", "bfloat16"]) == 0
    assert digests(*read) == before
    capsys.readouterr()


def printed_loss_of(run, capsys) -> float:
    assert main(["eval", "--checkpoint", str(run)]) == 0
    return printed_loss(capsys.readouterr().out)


# --- sub-word tokens (chapter 11) ---------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe-run")
    assert main(["train", "--out", str(out), "--overwrite", "--tokenizer", "bpe-300", *TINY]) == 0
    return out


def test_a_bpe_run_keeps_its_tokenizer_in_the_checkpoint(bpe_run):
    ckpt = load_checkpoint(bpe_run)
    assert isinstance(ckpt.tokenizer, BPETokenizer) and len(ckpt.tokenizer.merges) == 44
    assert ckpt.model.config.vocab_size == 300
    text = load_shakespeare()
    expected = BPETokenizer.train(text[: int(0.9 * len(text))], 300)  # trained on train alone
    assert ckpt.tokenizer.merges == expected.merges


def test_a_bpe_run_samples_and_scores_in_bits_per_character(bpe_run, capsys):
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(bpe_run), "--prompt", "ROMEO:", "--tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["eval", "--checkpoint", str(bpe_run)]) == 0
    out = capsys.readouterr().out
    nats = float(re.search(r"loss \(nats per token\)\s+([\d.]+)", out).group(1))
    bits = float(re.search(r"bits per character\s+([\d.]+)", out).group(1))
    data = tokenize_dataset(load_checkpoint(bpe_run).tokenizer)
    # the same total information, counted per token or per character
    assert bits == pytest.approx(nats * len(data.val) / data.val_characters / math.log(2), rel=1e-3)
    assert data.val_characters == DATA_N_CHARS - int(0.9 * DATA_N_CHARS)


def test_a_saved_tokenizer_file_trains_and_a_resume_keeps_the_tokenizer(tmp_path, bpe_run, capsys):
    path = load_checkpoint(bpe_run).tokenizer.save(tmp_path / "shakespeare.bpe")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--tokenizer", str(path), *TINY]) == 0
    assert load_checkpoint(out).tokenizer.dumps() == path.read_text()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--tokenizer", "char",
                 "--max_iters", "8", "--quiet"]) == 2
    assert "keeps the tokenizer it was trained with" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--max_iters", "8", "--quiet"]) == 0
    assert load_checkpoint(out).step == 8


@pytest.mark.parametrize("spec,message", [("bpe-100", "at least 256"),
                                          ("words", "must be char, bpe-N"),
                                          ("{data}", "not a gptlib BPE tokenizer")])
def test_a_bad_tokenizer_is_one_line_and_leaves_nothing(tmp_path, capsys, spec, message):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("hello\n")
    out = tmp_path / "runs" / "run"
    assert main(["train", "--out", str(out), "--tokenizer", spec.format(data=foreign), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


# --- the numpy backend (chapter 10) --------------------------------------------------------


def test_the_numpy_backend_trains_the_same_model_as_torch(tmp_path):
    runs = {}
    for backend in ("torch", "numpy"):
        out = tmp_path / backend
        assert main(["train", "--out", str(out), "--backend", backend, *TINY]) == 0
        runs[backend] = load_checkpoint(out)
    for name, weight in runs["torch"].model.state_dict().items():
        torch.testing.assert_close(runs["numpy"].model.state_dict()[name], weight, rtol=1e-3, atol=1e-4)
    assert runs["numpy"].history["train_loss"] == pytest.approx(runs["torch"].history["train_loss"], abs=1e-3)


def test_a_numpy_run_resumes_with_either_backend(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--backend", "numpy", *TINY]) == 0
    assert main(["train", "--out", str(out), "--resume", "--max_iters", "8", "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--backend", "numpy", "--max_iters", "10",
                 "--quiet"]) == 0
    assert load_checkpoint(out).step == 10


@pytest.mark.parametrize("option,message", [
    (["--compile"], "no torch graph"), (["--precision", "bfloat16"], "computes in float32"),
    (["--device", "cuda"], "runs on the CPU"), (["--dropout", "0.1"], "add --dropout 0"),
    (["--tied_head", "--gelu", "tanh"], "without GPT-2's switches (tied_head, gelu)"),
])
def test_the_numpy_backend_refuses_what_it_cannot_do(tmp_path, capsys, option, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--backend", "numpy", *TINY, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()
