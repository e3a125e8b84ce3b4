"""Chapter 07: training. AdamW with weight decay on matrices only, a learning rate that
warms up then follows a cosine down, gradient clipping, evaluation (a quick estimate
and the full validation loss), and the loop that puts them together.

The loop, :func:`train`, trains any model whose ``forward(idx, targets)`` returns
``(logits, loss)``: the bigram of chapter 02, the attention model of chapters 03-05,
the GPT. Running it on a GPU, in lower precision, compiled or on several devices is
``gptlib.runtime``'s job: it wraps the loop and leaves it as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from gptlib.data import get_batch


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number: the learning rate is usually too high."""


@dataclass
class TrainConfig:
    """How to train. The defaults are those of the course's ``gpu`` preset."""

    batch_size: int = field(default=64, metadata={"help": "windows per step"})
    max_iters: int = field(default=3500, metadata={"help": "optimizer steps in all"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    min_lr: float = field(default=3e-5, metadata={"help": "learning rate at the end of the cosine"})
    warmup_iters: int = field(default=100, metadata={"help": "steps of linear warmup"})
    lr_decay_iters: int | None = field(
        default=None, metadata={"help": "step where the cosine reaches min_lr"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW's decay, on matrices only"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW's first-moment decay"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW's second-moment decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "largest gradient norm; 0: no clipping"})
    eval_interval: int = field(default=500, metadata={"help": "steps between evaluations"})
    eval_iters: int = field(default=50, metadata={"help": "batches per loss estimate"})
    log_interval: int = field(
        default=10, metadata={"help": "steps between reading the loss off the device"})
    seed: int = field(default=1337, metadata={"help": "seed of the weights and the batches"})

    def __post_init__(self):
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            _check_positive(name, getattr(self, name))
        if self.lr_decay_iters is not None:
            _check_positive("lr_decay_iters", self.lr_decay_iters)
        if isinstance(self.warmup_iters, bool) or not isinstance(self.warmup_iters, int) \
                or self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be a whole number >= 0, got {self.warmup_iters!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"min_lr must be between 0 and learning_rate "
                             f"({self.learning_rate}), got {self.min_lr!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_seed(self.seed)
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be >= 0, got {value!r}")

    @property
    def decay_iters(self) -> int:
        """Where the cosine ends: ``lr_decay_iters`` if set, else the last step."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**values)


def check_seed(seed) -> None:
    """Raise ValueError unless ``seed`` is a whole number a torch.Generator takes."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")


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
    if step >= config.decay_iters:
        return config.min_lr
    progress = (step - config.warmup_iters) / max(1, config.decay_iters - config.warmup_iters)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + cosine * (config.learning_rate - config.min_lr)


def model_block_size(model) -> int:
    """The longest window a model reads: ``model.block_size``, or its config's."""
    size = getattr(model, "block_size", None) or getattr(getattr(model, "config", None),
                                                         "block_size", None)
    if size is None:
        raise ValueError("this model has no block_size: pass block_size= to say how long "
                         "its training windows are")
    return size


@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, batch_size: int, iters: int,
                  generator: torch.Generator | None = None, block_size: int | None = None) -> float:
    """A quick estimate: the mean loss over ``iters`` random batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block_size = block_size or model_block_size(model)
    losses = [model(*get_batch(data, batch_size, block_size, device, generator))[1]
              for _ in range(iters)]
    model.train(was_training)
    return torch.stack(losses).mean().item()


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
    block_size = model_block_size(model)
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


def new_history() -> dict:
    """Per step: loss and learning rate. Per evaluation: the train and val estimates."""
    return {"step": [], "loss": [], "lr": [], "eval_step": [], "train_loss": [], "val_loss": []}


@dataclass
class TrainState:
    """Everything a run needs to go on where it stopped; ``gptlib.checkpoint`` saves it.

    The optimizer (AdamW's moments), the generator that draws the batches (where in
    the data the run stands), how many steps are done, and the history. The random
    numbers that dropout draws come from torch's global generators: a checkpoint
    saves those too (:func:`random_states`).
    """

    optimizer: torch.optim.Optimizer
    batches: torch.Generator
    step: int = 0
    history: dict = field(default_factory=new_history)

    @classmethod
    def start(cls, model, config: TrainConfig) -> "TrainState":
        device = next(model.parameters()).device
        return cls(configure_optimizer(model, config, device.type),
                   torch.Generator().manual_seed(config.seed))


def random_states() -> dict[str, torch.Tensor]:
    """torch's global random states: the CPU's, and each CUDA GPU's once CUDA is in use."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = state
    return states


def set_random_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    for name, state in states.items():
        if name.startswith("cuda.") and torch.cuda.is_available():
            index = int(name.split(".")[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, index)


def training_step(model, optimizer, x, y, grad_clip: float) -> torch.Tensor:
    """Forward, backward, clip, step. Returns the loss, still on the device."""
    _, loss = model(x, y)                      # 1. how wrong are we?
    optimizer.zero_grad(set_to_none=True)
    loss.backward()                            # 2. which way is downhill, for every weight?
    if grad_clip > 0:                          # 3. no step longer than grad_clip
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()                           # 4. move the weights a little that way
    return loss.detach()


def train(model, train_data: torch.Tensor, val_data: torch.Tensor, config: TrainConfig,
          state: TrainState | None = None, *, block_size: int | None = None, on_eval=None,
          should_stop=None, progress: bool = True, step_fn=training_step) -> TrainState:
    """Train ``model`` in place until step ``config.max_iters``; return the :class:`TrainState`.

    Every step: set the learning rate, draw a batch, take a :func:`training_step`.
    Every ``log_interval`` steps the losses are read off the device into the history
    (a GPU would wait for each one read sooner); every ``eval_interval`` steps and at
    the end, both splits are estimated and ``on_eval(step, history)`` is called (a
    live plot, a checkpoint). ``state`` continues a run; ``should_stop()``, asked every
    step, ends it early (the command line's Ctrl-C). A loss that is not a finite number
    raises :class:`TrainingDiverged` before anything else sees it. Interrupting a
    notebook cell leaves the model with the weights of the last finished step.
    """
    from tqdm import tqdm  # the plain text bar: a saved notebook shows its final state

    state = state or TrainState.start(model, config)
    block_size = block_size or model_block_size(model)
    device = next(model.parameters()).device
    pending = []  # (step, learning rate, loss) of the steps whose loss is still on the device
    model.train()
    bar = tqdm(initial=state.step, total=config.max_iters, disable=not progress, unit="step")
    try:
        for step in range(state.step, config.max_iters):
            lr = learning_rate_at(step, config)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(train_data, config.batch_size, block_size, device, state.batches)
            loss = step_fn(model, state.optimizer, x, y, config.grad_clip)
            state.step = step + 1
            pending.append((state.step, lr, loss))
            bar.update()
            stop = should_stop is not None and should_stop()
            evaluate = state.step % config.eval_interval == 0 or state.step == config.max_iters
            if evaluate or stop or state.step % config.log_interval == 0:
                _log(state, pending, bar)
            if evaluate:
                _evaluate(model, train_data, val_data, config, state, block_size)
                _show(bar, state.history)
                if on_eval is not None:
                    on_eval(state.step, state.history)
            if stop:
                break
    except KeyboardInterrupt:  # a notebook's interrupt: keep the losses of the finished steps
        _log(state, pending, bar)
        raise
    finally:
        bar.close()
    _log(state, pending, bar)
    return state


def _log(state: TrainState, pending: list, bar) -> None:
    """Read the pending losses off the device (one wait) into the history; stop at a NaN."""
    if not pending:
        return
    steps, rates, losses = zip(*pending)
    losses = torch.stack(losses).float().tolist()
    pending.clear()
    for step, loss in zip(steps, losses):
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {step}: training "
                                   f"diverged (try a lower learning_rate)")
    state.history["step"].extend(steps)
    state.history["lr"].extend(rates)
    state.history["loss"].extend(losses)
    _show(bar, state.history)


def _show(bar, history: dict) -> None:
    """The latest loss and validation estimate, beside the progress bar."""
    shown = {"loss": f"{history['loss'][-1]:.3f}"}
    if history["val_loss"]:
        shown["val"] = f"{history['val_loss'][-1]:.3f}"
    bar.set_postfix(shown, refresh=False)


def estimate_losses(model, train_data: torch.Tensor, val_data: torch.Tensor, config: TrainConfig,
                    block_size: int | None = None) -> dict[str, float]:
    """The train and validation estimates that training records at every evaluation.

    The same batches every time (drawn from ``config.seed + 1``, never from the training
    batches' generator), so that estimates taken at different steps compare, and taking
    one, say before the first step, changes nothing in the training.
    """
    estimates = {}
    for name, data in (("train_loss", train_data), ("val_loss", val_data)):
        batches = torch.Generator().manual_seed(config.seed + 1)
        estimates[name] = estimate_loss(model, data, config.batch_size, config.eval_iters,
                                        batches, block_size)
    return estimates


def _evaluate(model, train_data, val_data, config, state, block_size) -> None:
    estimates = estimate_losses(model, train_data, val_data, config, block_size)
    for name, value in estimates.items():
        if not math.isfinite(value):
            raise TrainingDiverged(f"the {name.replace('_', ' ')} estimate became "
                                   f"{value} at step {state.step}: training diverged "
                                   f"(try a lower learning_rate)")
    state.history["eval_step"].append(state.step)
    for name, value in estimates.items():
        state.history[name].append(value)
