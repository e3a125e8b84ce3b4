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
