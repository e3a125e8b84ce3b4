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
from gptlib.train import TrainConfig, train

CONFIG = GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
TOKENIZER = CharTokenizer("abcdefg")


def trained(steps=20):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    config = TrainConfig(batch_size=4, max_iters=steps, eval_interval=10, eval_iters=2,
                         warmup_iters=2)
    state = train(model, torch.arange(300) % 7, torch.arange(100) % 7, config, progress=False)
    return model, config, state


def test_a_checkpoint_restores_everything(tmp_path):
    model, config, state = trained()
    path = save_checkpoint(tmp_path / "run", model, TOKENIZER, train_config=config, state=state,
                           preset="cpu")
    assert path == tmp_path / "run" / FILENAME
    ckpt = load_checkpoint(tmp_path / "run")
    for (name, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert ckpt.model.config == CONFIG and not ckpt.model.training
    assert ckpt.tokenizer.vocab == "abcdefg" and ckpt.preset == "cpu"
    assert ckpt.step == 20 and ckpt.train_config == config and ckpt.history == state.history
    restored = ckpt.train_state()
    assert restored.step == 20 and restored.history == state.history
    assert torch.equal(restored.batches.get_state(), state.batches.get_state())
    original, loaded = state.optimizer.state_dict(), restored.optimizer.state_dict()
    assert loaded["param_groups"] == original["param_groups"]
    for index, param_state in original["state"].items():
        for key, value in param_state.items():
            assert torch.equal(loaded["state"][index][key], value)


def test_a_resumed_run_takes_weight_decay_and_betas_from_its_new_config(tmp_path):
    model, config, state = trained()
    save_checkpoint(tmp_path, model, TOKENIZER, train_config=config, state=state)
    changed = TrainConfig(**{**config.to_dict(), "weight_decay": 0.5, "beta1": 0.8, "beta2": 0.9})
    groups = load_checkpoint(tmp_path).train_state(changed).optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]  # matrices decay, the rest not
    assert all(g["betas"] == (0.8, 0.9) for g in groups)


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
    assert not ckpt.can_resume and ckpt.train_config is None and ckpt.step == 0
    with pytest.raises(CheckpointError, match="weights only"):
        ckpt.train_state()


def test_saving_again_replaces_the_file_and_leaves_no_temporary(tmp_path):
    model, config, state = trained(steps=10)
    save_checkpoint(tmp_path, model, TOKENIZER)
    save_checkpoint(tmp_path, model, TOKENIZER, train_config=config, state=state)
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    assert load_checkpoint(tmp_path).step == 10


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


def test_torch_random_state_is_saved_and_restored(tmp_path):
    # Dropout draws from torch's global generator; numpy's and Python's are not used.
    model, config, state = trained(steps=10)
    torch.manual_seed(5)
    save_checkpoint(tmp_path, model, TOKENIZER, train_config=config, state=state)
    expected = torch.rand(3)
    torch.manual_seed(99)
    load_checkpoint(tmp_path).train_state()
    assert torch.equal(torch.rand(3), expected)


def test_a_checkpoint_of_another_format_is_refused_with_its_name(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / FILENAME, metadata={"format": "other-1"})
    with pytest.raises(CheckpointError, match="format 'other-1'"):
        load_checkpoint(tmp_path)


KILLED_MID_SAVE = """
import sys, time
import safetensors.torch
import torch
from gptlib.checkpoint import save_checkpoint
from gptlib.data import CharTokenizer
from gptlib.model import GPT, GPTConfig

run = sys.argv[1]
model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
save_checkpoint(run, model, CharTokenizer("abcdefg"))

def half_then_hang(tensors, filename, metadata=None):
    with open(filename, "wb") as f:      # half a file, then the process is killed
        f.write(b"\\x00" * 1000)
        f.flush()
        print("writing", flush=True)
        time.sleep(600)

safetensors.torch.save_file = half_then_hang
import gptlib.checkpoint
gptlib.checkpoint.save_file = half_then_hang
model.lm_head.bias.data.fill_(1.0)
save_checkpoint(run, model, CharTokenizer("abcdefg"))
"""


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_whole(tmp_path):
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=30)
    # The earlier save, intact (the second would have had a bias of ones).
    assert load_checkpoint(tmp_path).model.lm_head.bias.abs().max() == 0


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


def test_a_tied_head_is_stored_once_and_comes_back_tied(tmp_path):
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0,
                       qkv_bias=True, tied_head=True, gelu="tanh")
    model = GPT(config)
    path = save_checkpoint(tmp_path, model, CharTokenizer("abcde"))
    back = load_checkpoint(path).model
    assert back.lm_head.weight is back.token_embedding.weight
    idx = torch.tensor([[0, 1, 2, 3]])
    torch.testing.assert_close(back(idx)[0], model(idx)[0])
