"""Checkpoints: one safetensors file per run, written atomically, loaded without pickle.

Everything is in ``checkpoint.safetensors``: the model's weights and, to resume
training, the :class:`gptlib.train.TrainState` (AdamW's moments, the batch
generator, the step, the history) with torch's random states (CPU, and CUDA when
used), as tensors; the configs, the tokenizer (a character vocabulary, or a BPE's
merges in its text format), the preset's name and the history as JSON in the file's
metadata. safetensors holds plain tensors and
strings, so loading runs no code. The file is written under a temporary name and
renamed, so a crash mid-save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from gptlib.data import CharTokenizer, write_atomically
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizers import BPETokenizer
from gptlib.train import (
    TrainConfig,
    TrainState,
    configure_optimizer,
    random_states,
    set_random_states,
)

FILENAME = "checkpoint.safetensors"
FORMAT = "gptlib-checkpoint-2"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or does not fit. The message says which."""


def checkpoint_path(path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_file() or (path.suffix == ".safetensors" and not path.is_dir()):
        return path
    return path / FILENAME


def save_checkpoint(path, model: GPT, tokenizer: CharTokenizer | BPETokenizer, *, train_config=None,
                    state: TrainState | None = None, preset: str | None = None,
                    data_path=None, weights_dtype: torch.dtype | None = None,
                    step: int | None = None, history: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``path`` is a run directory (created if needed) or a file.

    With ``state`` (and its ``train_config``) the run can be resumed from it; without,
    it holds the weights alone (``step`` and ``history`` then say where they come
    from). ``weights_dtype`` (e.g. ``torch.float16``) stores the weights smaller;
    loading turns them back into the model's float32.
    """
    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = model.state_dict()
    if model.config.tied_head:  # the head is the embedding: stored once (safetensors refuses twins)
        del weights["lm_head.weight"]
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in weights.items()}
    if weights_dtype is not None:
        tensors = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    history = state.history if state is not None else history
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(model.config.to_dict()),
        "step": str(state.step if state else step or 0),
        "data": "" if data_path is None else str(Path(data_path).resolve()),
        "preset": preset or "",
    }
    if isinstance(tokenizer, CharTokenizer):
        metadata["vocab"] = json.dumps(tokenizer.vocab)
    else:
        metadata["tokenizer"] = tokenizer.dumps()  # a BPE: its merges, as readable text
    if train_config is not None:
        metadata["train_config"] = json.dumps(train_config.to_dict())
    if history is not None:
        metadata["history"] = json.dumps(history)
    if state is not None:
        tensors.update(optimizer_tensors(state.optimizer))
        metadata["optim_param_groups"] = json.dumps(state.optimizer.state_dict()["param_groups"])
        tensors["rng.batches"] = state.batches.get_state()
        # Dropout draws from torch's global generators: a resumed run goes on with the
        # same random numbers as one that never stopped.
        tensors.update({f"rng.{name}": value for name, value in random_states().items()})
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's state (AdamW's moments and step counts) as tensors named
    ``optim.<parameter index>.<name>``, the way a safetensors file holds them."""
    tensors = {}
    for index, param_state in optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors


def optimizer_moments(tensors: dict, device) -> dict[int, dict]:
    """The ``state`` part of an optimizer's state dict, back from :func:`optimizer_tensors`."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    return state


def read_safetensors(file: Path, what: str, device="cpu") -> tuple[dict, dict]:
    """The metadata and the tensors of a safetensors file, or one CheckpointError saying
    that it is not a readable ``what``."""
    try:
        with safe_open(file, framework="pt") as f:
            metadata = f.metadata() or {}
        return metadata, load_file(file, device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not a readable {what} ({error})") from None


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: CharTokenizer | BPETokenizer
    step: int
    train_config: TrainConfig | None
    history: dict | None
    preset: str | None = None
    data_path: str | None = None  # the text it was trained on; None: Tiny Shakespeare
    tensors: dict | None = None  # the optimizer's and the random states, for resuming
    optim_param_groups: list | None = None

    @property
    def can_resume(self) -> bool:
        return self.optim_param_groups is not None and self.train_config is not None

    def train_state(self, train_config: TrainConfig | None = None) -> TrainState:
        """The :class:`TrainState` to resume from, with torch's random states set back.

        ``train_config`` may change how training goes on (more steps, another
        learning rate, weight decay or betas); the optimizer's moments carry over.
        """
        if not self.can_resume:
            raise CheckpointError("this checkpoint holds the weights only (no optimizer "
                                  "state), so training cannot resume from it")
        config = train_config or self.train_config
        device = next(self.model.parameters()).device
        optimizer = configure_optimizer(self.model, config, device.type)
        state = optimizer_moments(self.tensors, device)
        groups = [dict(g, betas=tuple(g["betas"])) for g in self.optim_param_groups]  # JSON: no tuples
        # The moments come from the checkpoint; the settings (weight decay, betas) from the
        # config, which a resumed run may have changed (the loop sets lr at every step).
        settings = [{k: v for k, v in g.items() if k not in ("params", "lr")}
                    for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"the optimizer state does not fit the model ({error})") from None
        for group, configured in zip(optimizer.param_groups, settings):
            group.update(configured)
        batches = torch.Generator()
        batches.set_state(self.tensors["rng.batches"])
        set_states = {k[len("rng."):]: v for k, v in self.tensors.items()
                      if k.startswith("rng.") and k != "rng.batches"}
        set_random_states(set_states)
        return TrainState(optimizer, batches, self.step, self.history)


def load_checkpoint(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` into a ready model (in eval mode)."""
    file = checkpoint_path(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {path} (expected the file {file})")
    metadata, tensors = read_safetensors(file, "checkpoint")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a gptlib checkpoint of this version "
                              f"(format {metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        config = GPTConfig.from_dict(json.loads(metadata["model_config"]))
        if "tokenizer" in metadata:
            tokenizer = BPETokenizer.loads(metadata["tokenizer"], source=f"the tokenizer in {file}")
        else:
            tokenizer = CharTokenizer(json.loads(metadata["vocab"]))
        model = GPT(config)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        if config.tied_head and "token_embedding.weight" in weights:
            weights["lm_head.weight"] = weights["token_embedding.weight"]
        model.load_state_dict(weights)
        train_config = None
        if "train_config" in metadata:
            train_config = TrainConfig.from_dict(json.loads(metadata["train_config"]))
        step = int(metadata.get("step", 0))
        history = json.loads(metadata["history"]) if "history" in metadata else None
        groups = json.loads(metadata["optim_param_groups"]) \
            if "optim_param_groups" in metadata else None
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{file} is damaged or does not match its config ({error})") from None
    return Checkpoint(
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        step=step,
        train_config=train_config,
        history=history,
        preset=metadata.get("preset") or None,
        data_path=metadata.get("data") or None,
        tensors={k: v for k, v in tensors.items() if not k.startswith("model.")},
        optim_param_groups=groups,
    )
