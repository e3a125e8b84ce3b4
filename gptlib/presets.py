"""Named training recipes: a model shape (GPTConfig) and a way to train it (TrainConfig)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gptlib.model import GPTConfig
from gptlib.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    description: str
    model: GPTConfig  # its vocab_size is replaced by the tokenizer's
    train: TrainConfig


PRESETS = {
    # Measured on 2 cores (benchmarks/train_speed.py, README): against classic-cpu,
    # two layers instead of four (each step costs half), a block of 32 with a batch
    # of 24 (twice the windows per step for the same characters), a learning rate
    # three times higher, and fewer evaluations.
    "cpu": Preset(
        "the default on a laptop: tuned to reach the classic recipe's quality in "
        "half its time (about 30 s on 2 cores)",
        GPTConfig(block_size=32, n_layer=2, n_head=4, n_embd=128, dropout=0.0),
        TrainConfig(batch_size=24, max_iters=1500, learning_rate=3e-3, min_lr=3e-4,
                    warmup_iters=50, eval_interval=500, eval_iters=20),
    ),
    "classic-cpu": Preset(
        "the classic laptop recipe for this corpus (nanoGPT's shakespeare_char on CPU)",
        GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
        TrainConfig(batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=1e-4,
                    warmup_iters=100, eval_interval=250, eval_iters=20),
    ),
    # The search in benchmarks/laptop_recipe.py (README): of 14 shapes and batches and
    # 3 schedules, each trained for the steps its 2-core step time fits in 55 minutes,
    # this reached the lowest full validation loss.
    "laptop": Preset(
        "a laptop with patience: under an hour on 2 cores (49 min here) for a model that writes "
        "convincing Shakespeare (3.2M parameters)",
        GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.0),
        TrainConfig(batch_size=16, max_iters=4800, learning_rate=2e-3, min_lr=2e-4,
                    warmup_iters=200, eval_interval=480, eval_iters=20),
    ),
    # nanoGPT's shakespeare_char shape. Its 5,000 steps overfit (the validation loss
    # turns up after 3,000; full validation loss 1.4909 on an H100): the cosine ends
    # at 3,500 instead, for 1.4601 in 58 s (README, Benchmarks).
    "gpu": Preset(
        "the course's full model (about 10.7M parameters), for a GPU",
        GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        TrainConfig(batch_size=64, max_iters=3500, learning_rate=3e-4, min_lr=3e-5,
                    warmup_iters=100, eval_interval=500, eval_iters=50),
    ),
}


def get_preset(name: str, vocab_size: int = 65, **overrides) -> tuple[GPTConfig, TrainConfig]:
    """``(GPTConfig, TrainConfig)`` of a preset, with any field overridden by keyword.

    Both configs check themselves, so an impossible setting raises ValueError here.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    model_fields = set(GPTConfig.__dataclass_fields__) - {"vocab_size"}
    train_fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - model_fields - train_fields)
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}")
    model = replace(preset.model, vocab_size=vocab_size,
                    **{k: v for k, v in overrides.items() if k in model_fields})
    train = replace(preset.train, **{k: v for k, v in overrides.items() if k in train_fields})
    return model, train
