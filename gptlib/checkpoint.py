"""Checkpoints: one safetensors file per run, written atomically, loaded without pickle.

Everything is in ``checkpoint.safetensors``: the model's weights, the optimizer's
state, the batch generator's state (where in the data the run stands) and torch's
and numpy's random states as tensors; the model and training configs, the
tokenizer's vocabulary, the step, Python's random state and the loss history as
JSON in the file's metadata. safetensors holds plain tensors and strings, so loading runs no code.
The file is written under a temporary name and renamed, so a crash mid-save leaves
the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from gptlib.data import CharTokenizer
from gptlib.model import GPT, GPTConfig
from gptlib.train import TrainConfig

FILENAME = "checkpoint.safetensors"
FORMAT = "gptlib-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or does not fit. The message says which."""


def checkpoint_path(path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    return path / FILENAME if path.is_dir() or path.suffix != ".safetensors" else path


def save_checkpoint(path, model: GPT, tokenizer: CharTokenizer, *, train_config=None,
                    optimizer=None, step: int = 0, generator=None, history=None,
                    data_path=None) -> Path:
    """Write a checkpoint atomically. ``path`` is a run directory (created if needed) or a file."""
    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(model.config.to_dict()),
        "vocab": json.dumps(tokenizer.vocab),
        "step": str(step),
        "data": "" if data_path is None else str(Path(data_path).resolve()),
    }
    if train_config is not None:
        metadata["train_config"] = json.dumps(train_config.to_dict())
    if history is not None:
        metadata["history"] = json.dumps(history)
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        metadata["optim_param_groups"] = json.dumps(state["param_groups"])
    if generator is not None:
        tensors["rng.batches"] = generator.get_state()
    # The global random states too (dropout draws from torch's), so a resumed run
    # continues exactly where this one stopped.
    tensors["rng.torch"] = torch.get_rng_state()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_keys.astype(np.int64))
    metadata["rng_numpy"] = json.dumps([np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)])
    metadata["rng_python"] = json.dumps(random.getstate())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: CharTokenizer
    step: int
    train_config: TrainConfig | None
    history: dict | None
    optimizer_state: dict | None
    generator_state: torch.Tensor | None
    rng_state: dict | None = None
    data_path: str | None = None  # the text it was trained on; None: Tiny Shakespeare

    def restore_rng(self) -> None:
        """Set torch's, numpy's and Python's global random states to those saved."""
        if not self.rng_state:
            raise CheckpointError("this checkpoint holds no random states")
        torch.set_rng_state(self.rng_state["torch"])
        kind, pos, has_gauss, gauss = self.rng_state["numpy_meta"]
        keys = self.rng_state["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((kind, keys, pos, has_gauss, gauss))
        version, internal, gauss_next = self.rng_state["python"]
        random.setstate((version, tuple(internal), gauss_next))

    def restore_optimizer(self, optimizer) -> None:
        if self.optimizer_state is None:
            raise CheckpointError("this checkpoint holds no optimizer state, so training cannot resume")
        optimizer.load_state_dict(self.optimizer_state)


def load_checkpoint(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` into a ready model (in eval mode)."""
    file = checkpoint_path(path)
    if not file.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected the file {file})")
    try:
        with safe_open(file, framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not a readable checkpoint ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a gptlib checkpoint (format {metadata.get('format')!r})")
    try:
        config = GPTConfig.from_dict(json.loads(metadata["model_config"]))
        tokenizer = CharTokenizer(json.loads(metadata["vocab"]))
        model = GPT(config)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file} is damaged or does not match its config ({error})") from None
    optimizer_state = None
    if "optim_param_groups" in metadata:
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(device)
        groups = json.loads(metadata["optim_param_groups"])
        for group in groups:  # JSON has no tuples
            group.update({k: tuple(v) for k, v in group.items() if k == "betas"})
        optimizer_state = {"state": state, "param_groups": groups}
    train_config = None
    if "train_config" in metadata:
        train_config = TrainConfig.from_dict(json.loads(metadata["train_config"]))
    return Checkpoint(
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        step=int(metadata.get("step", 0)),
        train_config=train_config,
        history=json.loads(metadata["history"]) if "history" in metadata else None,
        optimizer_state=optimizer_state,
        generator_state=tensors.get("rng.batches"),
        rng_state=_rng_state(tensors, metadata),
        data_path=metadata.get("data") or None,
    )


def _rng_state(tensors: dict, metadata: dict) -> dict | None:
    if "rng.torch" not in tensors:
        return None
    return {"torch": tensors["rng.torch"], "numpy_keys": tensors["rng.numpy"],
            "numpy_meta": json.loads(metadata["rng_numpy"]),
            "python": json.loads(metadata["rng_python"])}
