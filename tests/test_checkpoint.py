import json

import pytest
import torch

from gptlib.checkpoint import (
    FILENAME,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from gptlib.data import CharTokenizer
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig, configure_optimizer, train

CONFIG = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
TOKENIZER = CharTokenizer("abcdefg")


def trained(steps=20):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    config = TrainConfig(batch_size=4, max_iters=steps, eval_interval=10, eval_iters=2,
                         lr_decay_iters=steps, warmup_iters=2)
    optimizer = configure_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)
    history = train(model, torch.arange(300) % 7, torch.arange(100) % 7, config,
                    optimizer=optimizer, generator=generator, progress=False)
    return model, config, optimizer, generator, history


def test_a_checkpoint_restores_everything(tmp_path):
    model, config, optimizer, generator, history = trained()
    path = save_checkpoint(tmp_path / "run", model, TOKENIZER, train_config=config,
                           optimizer=optimizer, step=20, generator=generator, history=history)
    assert path == tmp_path / "run" / FILENAME
    ckpt = load_checkpoint(tmp_path / "run")
    for (name, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert ckpt.model.config == CONFIG and not ckpt.model.training
    assert ckpt.tokenizer.vocab == "abcdefg"
    assert ckpt.step == 20 and ckpt.train_config == config and ckpt.history == history
    assert torch.equal(ckpt.generator_state, generator.get_state())
    fresh = configure_optimizer(ckpt.model, config)
    ckpt.restore_optimizer(fresh)
    original = optimizer.state_dict()
    restored = fresh.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][index][key], value)


def test_a_checkpoint_is_safetensors_with_json_metadata(tmp_path):
    from safetensors import safe_open

    model, *_ = trained(steps=10)
    path = save_checkpoint(tmp_path, model, TOKENIZER)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        assert json.loads(meta["model_config"])["n_embd"] == 16
        assert "model.lm_head.weight" in f.keys()


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    model, *_ = trained(steps=10)
    save_checkpoint(tmp_path, model, TOKENIZER)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.optimizer_state is None and ckpt.train_config is None
    with pytest.raises(CheckpointError, match="no optimizer state"):
        ckpt.restore_optimizer(torch.optim.AdamW(ckpt.model.parameters()))


def test_saving_again_replaces_the_file_and_leaves_no_temporary(tmp_path):
    model, *_ = trained(steps=10)
    save_checkpoint(tmp_path, model, TOKENIZER, step=1)
    save_checkpoint(tmp_path, model, TOKENIZER, step=2)
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    assert load_checkpoint(tmp_path).step == 2


def test_missing_and_damaged_checkpoints_give_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path)
    model, *_ = trained(steps=10)
    path = save_checkpoint(tmp_path, model, TOKENIZER)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_checkpoint_path_accepts_a_directory_or_a_file(tmp_path):
    assert checkpoint_path(tmp_path) == tmp_path / FILENAME
    assert checkpoint_path(tmp_path / "x.safetensors") == tmp_path / "x.safetensors"
    assert checkpoint_path(tmp_path / "new-run") == tmp_path / "new-run" / FILENAME


def test_random_states_are_saved_and_restored(tmp_path):
    import random

    import numpy as np

    model, *_ = trained(steps=10)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    save_checkpoint(tmp_path, model, TOKENIZER)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    load_checkpoint(tmp_path).restore_rng()
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


KILLED_MID_SAVE = """
import sys, time
import safetensors.torch
import torch
from gptlib.checkpoint import save_checkpoint
from gptlib.data import CharTokenizer
from gptlib.model import GPT, GPTConfig

run = sys.argv[1]
model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
save_checkpoint(run, model, CharTokenizer("abcdefg"), step=1)

def half_then_hang(tensors, filename, metadata=None):
    with open(filename, "wb") as f:      # half a file, then the process is killed
        f.write(b"\\x00" * 1000)
        f.flush()
        print("writing", flush=True)
        time.sleep(600)

safetensors.torch.save_file = half_then_hang
import gptlib.checkpoint
gptlib.checkpoint.save_file = half_then_hang
save_checkpoint(run, model, CharTokenizer("abcdefg"), step=2)
"""


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_whole(tmp_path):
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=30)
    assert load_checkpoint(tmp_path).step == 1  # the earlier save, intact


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model, *_ = trained(steps=10)
    path = save_checkpoint(tmp_path, model, TOKENIZER)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["model_config"])
    metadata["model_config"] = json.dumps({**config, "n_embd": 32})
    save_file(load_file(path), path, metadata=metadata)
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_checkpoint(tmp_path)
