"""Chapter 07: training a GPT. AdamW with weight decay on matrices only, a learning
rate that warms up then follows a cosine down, gradient clipping, evaluation (a quick
estimate and the full validation loss), a progress bar, and checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from gptlib.data import get_batch
from gptlib.distributed import Distributed


@dataclass
class TrainConfig:
    """How to train. The defaults are those of the course's ``gpu`` preset."""

    batch_size: int = 64
    max_iters: int = 5000
    learning_rate: float = 3e-4
    min_lr: float = 3e-5  # where the cosine ends
    warmup_iters: int = 100
    lr_decay_iters: int = 5000  # the cosine reaches min_lr here; usually max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 500
    eval_iters: int = 50  # batches per quick estimate
    seed: int = 1337

    def __post_init__(self):
        for f in ("batch_size", "max_iters", "eval_interval", "eval_iters", "lr_decay_iters"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f} must be a positive whole number, got {value!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(
                f"min_lr must be between 0 and learning_rate ({self.learning_rate}), got {self.min_lr!r}"
            )
        for f in ("beta1", "beta2"):
            if not 0 <= getattr(self, f) < 1:
                raise ValueError(f"{f} must be in [0, 1), got {getattr(self, f)!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)


def configure_optimizer(model, config: TrainConfig, device_type: str = "cpu"):
    """AdamW with weight decay on the weight matrices and embeddings only.

    Decay pulls weights towards zero. That regularises matrices, which mix
    channels; biases and LayerNorm gains (all 1-D) only shift and scale, and
    decaying them just hurts, so they form a group without decay.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel does the update of every tensor in one pass (CPU and CUDA).
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=device_type in ("cpu", "cuda"),
    )


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warmup for ``warmup_iters`` steps, then a cosine from learning_rate to min_lr."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / config.warmup_iters
    if step >= config.lr_decay_iters:
        return config.min_lr
    progress = (step - config.warmup_iters) / max(1, config.lr_decay_iters - config.warmup_iters)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + cosine * (config.learning_rate - config.min_lr)


@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, batch_size: int, iters: int,
                  generator: torch.Generator | None = None) -> float:
    """A quick estimate: the mean loss over ``iters`` random batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block_size = model.config.block_size
    losses = [model(*get_batch(data, batch_size, block_size, device, generator))[1].item()
              for _ in range(iters)]
    model.train(was_training)
    return sum(losses) / len(losses)


def _summed_loss(model, data, starts, length, device) -> float:
    """Sum of the losses of predicting ``data[s+1 : s+1+length]`` from ``data[s : s+length]``."""
    x = torch.stack([data[s : s + length] for s in starts]).to(device)
    y = torch.stack([data[s + 1 : s + 1 + length] for s in starts]).to(device)
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()


@torch.no_grad()
def full_loss(model, data: torch.Tensor, batch_size: int = 64) -> float:
    """The loss over a whole split: every position predicted exactly once.

    The split is cut into non-overlapping windows of ``block_size`` tokens; in
    each window position t is predicted from positions 0..t of that window.
    The mean is over all ``len(data) - 1`` predictions (the last window is
    shorter). This one number is what the course's tables quote.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block_size = model.config.block_size
    n_targets = len(data) - 1
    n_full, rest = divmod(n_targets, block_size)
    starts = [i * block_size for i in range(n_full)]
    total = 0.0
    for i in range(0, n_full, batch_size):
        total += _summed_loss(model, data, starts[i : i + batch_size], block_size, device)
    if rest:
        total += _summed_loss(model, data, [n_full * block_size], rest, device)
    model.train(was_training)
    return total / n_targets


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the matrix products run in: ``auto``, ``float32``, ``bfloat16`` or ``float16``.

    ``auto`` is bfloat16 on a GPU that has it (every NVIDIA GPU since the A100),
    float16 on an older one, and float32 elsewhere. The weights and the optimizer
    always stay float32; autocast only runs the products in the smaller type.
    """
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in choices:
        raise ValueError(f"unknown precision {precision!r}; use auto, {', '.join(choices)}")
    if precision == "float16" and device.type != "cuda":
        raise ValueError("float16 training needs a CUDA GPU; use bfloat16 or float32 here")
    return choices[precision]


def train(
    model,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    config: TrainConfig,
    *,
    optimizer=None,
    start_step: int = 0,
    generator: torch.Generator | None = None,
    history: dict | None = None,
    on_eval=None,
    progress: bool = True,
    should_stop=None,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    distributed: Distributed | None = None,
) -> dict:
    """Train ``model`` in place from ``start_step`` to ``config.max_iters``; return the history.

    Every step: set the learning rate, draw a batch, forward, backward, clip the
    gradient, step. Every ``eval_interval`` steps (and at the end) the loss is
    estimated on both splits and ``on_eval(step, history)`` is called: the place
    for a live plot or a checkpoint. To resume, pass the saved optimizer, step,
    batch generator and history.

    The history holds the loss and learning rate of every step, and the
    estimates at every evaluation. ``should_stop()``, if given, is asked after
    every step; when it says yes, training ends there (the command line's Ctrl-C
    handling uses it to save a checkpoint). Interrupting a notebook cell leaves
    the model with the weights of the last finished step.

    For speed on a GPU: ``dtype`` bfloat16 or float16 runs the forward pass under
    autocast (float16 with a gradient scaler, whose range is too small for
    gradients otherwise); ``compile`` trains through ``torch.compile(model)``.
    ``distributed`` (see ``gptlib.distributed``): each process draws the same
    global batch of ``batch_size`` rows and trains on its share; DDP averages the
    gradients; only process 0 evaluates, reports and calls ``on_eval``.
    """
    # The plain text bar: live in a terminal and in a notebook, and what a saved
    # notebook shows is the final state (tqdm's widget bar saves its first state).
    from tqdm import tqdm

    device = next(model.parameters()).device
    distributed = distributed or Distributed()
    rows = distributed.shard(config.batch_size)
    optimizer = optimizer or configure_optimizer(model, config, device.type)
    generator = generator or torch.Generator().manual_seed(config.seed)
    history = history or {"step": [], "loss": [], "lr": [], "eval_step": [],
                          "train_loss": [], "val_loss": []}
    block_size = model.config.block_size
    net = torch.compile(model) if compile else model  # what the training steps run through
    if distributed.enabled:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()
    bar = tqdm(range(start_step, config.max_iters), initial=start_step, total=config.max_iters,
               disable=not progress or not distributed.is_main, unit="step")
    for step in bar:
        lr = learning_rate_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, config.batch_size, block_size, device, generator)
        with autocast:
            _, loss = net(x[rows], y[rows])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        # One number per process for the log, and whether any process was asked to stop.
        stop_requested = should_stop is not None and should_stop()
        mean_loss, stops = distributed.mean([loss.item(), float(stop_requested)], device)
        history["step"].append(step + 1)
        history["loss"].append(mean_loss)
        history["lr"].append(lr)
        evaluate = (step + 1) % config.eval_interval == 0 or step + 1 == config.max_iters
        if evaluate and distributed.is_main:
            # The same batches at every evaluation, so that the estimates compare.
            batches = torch.Generator().manual_seed(config.seed + 1)
            history["eval_step"].append(step + 1)
            with autocast:
                history["train_loss"].append(
                    estimate_loss(model, train_data, config.batch_size, config.eval_iters, batches))
                history["val_loss"].append(
                    estimate_loss(model, val_data, config.batch_size, config.eval_iters, batches))
            bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}",
                            val=f"{history['val_loss'][-1]:.3f}")
            if on_eval is not None:
                on_eval(step + 1, history)
        if stops > 0:
            break
    bar.close()
    return history
