"""Where and how fast the training loop runs: device, precision, torch.compile, several GPUs.

Chapter 07's :func:`gptlib.train.train` is the loop a learner reads. :class:`Runtime`
wraps it without changing it: it hands the loop its own version of a training step
(the forward pass autocast to bfloat16 or float16, the model compiled or wrapped in
DistributedDataParallel), makes every process agree on when to stop, and lets only
process 0 print and save.

Several devices: PyTorch DistributedDataParallel, started by torchrun::

    torchrun --nproc_per_node=N -m gptlib train ...

torchrun starts N copies of the command and tells each, through environment
variables, who it is: ``RANK`` (0..WORLD_SIZE-1 over all machines), ``LOCAL_RANK``
(its number on this machine, which picks its GPU) and ``WORLD_SIZE``. Every process
holds a full copy of the model and works on its own slice of each batch; after the
backward pass DDP averages the gradients over all processes, so every copy takes
the same optimizer step and the copies stay identical.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gptlib.train import TrainConfig, TrainState, train

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if there is a GPU, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but PyTorch sees no CUDA GPU here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}, but there are only "
                             f"{torch.cuda.device_count()} CUDA GPUs here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps, but Apple's MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the matrix products run in: ``auto``, ``float32``, ``bfloat16`` or ``float16``.

    ``auto`` is bfloat16 on a GPU that has it (every NVIDIA GPU since the A100),
    float16 on an older one, and float32 elsewhere. The weights and the optimizer
    always stay float32; autocast only runs the products in the smaller type.
    """
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type != "cuda":
        raise ValueError("float16 training needs a CUDA GPU; use bfloat16 or float32 here")
    return PRECISIONS[precision]


@dataclass
class Distributed:
    """Who this process is among those training together (a lone process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes checkpoints and prints."""
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process works on."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of "
                             f"processes ({self.world_size}): each takes an equal share")
        per_process = batch_size // self.world_size
        return slice(self.rank * per_process, (self.rank + 1) * per_process)


def from_environment() -> Distributed:
    """Read what torchrun set; a process started without torchrun is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    return Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]),
                       world_size=world_size)


@dataclass
class Runtime:
    """How the loop runs: on which device, in which precision, compiled or not, alone or not."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    compile: bool = False
    distributed: Distributed = field(default_factory=Distributed)
    backend: str = "torch"  # or "numpy": chapter 10's GPT, backward by hand (numpy_training_step)

    def __enter__(self) -> "Runtime":
        """Join the process group (NCCL between GPUs, gloo between CPU processes)."""
        if self.distributed.enabled:
            cuda = self.device.type == "cuda"
            dist.init_process_group("nccl" if cuda else "gloo", rank=self.distributed.rank,
                                    world_size=self.distributed.world_size,
                                    device_id=self.device if cuda else None)
        return self

    def __exit__(self, *exc) -> None:
        if self.distributed.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def train(self, model, train_data, val_data, config: TrainConfig,
              state: TrainState | None = None, *, on_eval=None, should_stop=None,
              progress: bool = True) -> TrainState:
        """:func:`gptlib.train.train`, with this runtime's training step."""
        main = self.distributed.is_main
        return train(model, train_data, val_data, config, state,
                     on_eval=on_eval if main else None,
                     should_stop=self.agreed(should_stop, config.log_interval)
                     if self.distributed.enabled else should_stop,
                     progress=progress and main, step_fn=self.training_step(model, config))

    def training_step(self, model, config: TrainConfig):
        """The step of :func:`gptlib.train.training_step`, with autocast, compile and DDP."""
        if self.backend == "numpy":
            return numpy_training_step(model)
        net = torch.compile(model) if self.compile else model
        if self.distributed.enabled:
            cuda = self.device.type == "cuda"
            net = DistributedDataParallel(net, device_ids=[self.device] if cuda else None)
        rows = self.distributed.shard(config.batch_size)  # this process's share of a batch
        autocast = torch.autocast(self.device.type, dtype=self.dtype,
                                  enabled=self.dtype != torch.float32)
        # float16's range is too small for small gradients: scale the loss up before
        # backward, and the gradients back down before they are clipped and used.
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

        def step(model, optimizer, x, y, grad_clip: float) -> torch.Tensor:
            with autocast:
                _, loss = net(x[rows], y[rows])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss = loss.detach().float()
            if self.distributed.enabled:  # the history shows the mean over all processes
                dist.all_reduce(loss)
                loss /= self.distributed.world_size
            return loss

        return step

    def agreed(self, should_stop, every: int):
        """Stop when any process is asked to, all at the same step (else the others would
        wait for ever in the next gradient exchange). The processes vote every ``every``
        steps: each vote makes them wait for one another."""
        steps = 0

        def any_process_stops() -> bool:
            nonlocal steps
            steps += 1
            if steps % every:
                return False
            vote = torch.tensor([float(should_stop is not None and should_stop())],
                                device=self.device)
            dist.all_reduce(vote)
            return vote.item() > 0

        return any_process_stops

    def seed_dropout(self, seed: int, step: int) -> None:
        """Each process draws its own dropout masks (a lone process keeps torch's state)."""
        if self.distributed.enabled:
            torch.manual_seed(seed + step + self.distributed.rank)


def training_memory(config, batch_size: int) -> int:
    """A lower bound on the bytes one training step of a GPT needs, in float32.

    The weights, their gradients and AdamW's two moments (4 numbers per parameter),
    and what the forward pass keeps for the backward: per layer about 18 numbers
    per position and channel (the LayerNorms, queries, keys, values, the attention's
    output, the feed-forward's 4x wider hidden layer before and after GELU); the logits
    and their gradient. The fused attention keeps no T x T weights, so none are counted.
    """
    B, T, C, L = batch_size, config.block_size, config.n_embd, config.n_layer
    parameters = config.vocab_size * C * 2 + T * C + L * 12 * C * C
    activations = L * 18 * B * T * C + 3 * B * T * config.vocab_size
    return 4 * (4 * parameters + activations)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a training run on ``device``; None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux: what can be had without swapping
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def numpy_training_step(model):
    """Chapter 10's backend: the loop's training step computed by :mod:`gptlib.numpy_gpt`.

    The NumPy arrays are views of the model's parameters and of AdamW's moments (a CPU
    tensor shares its memory with ``.numpy()``), so the update by hand changes the very
    weights and optimizer state that the loop evaluates, checkpoints and resumes: nothing
    else in the loop knows. The forward and backward passes, clipping and AdamW are
    NumPy's; torch only draws the batches and scores the model at each evaluation.
    """
    from gptlib.numpy_gpt import NumpyGPT, adamw_update, clip_grad_norm

    names = {p: name for name, p in model.named_parameters()}
    net = NumpyGPT({name: p.detach().numpy() for name, p in model.named_parameters()},
                   model.config.n_head)

    def step(model, optimizer, x, y, grad_clip: float) -> torch.Tensor:
        loss, grads = net.loss_and_grads(x.numpy(), y.numpy())
        if not math.isfinite(loss):
            return torch.tensor(loss)  # the loop stops on it, before any update
        if grad_clip > 0:
            clip_grad_norm(grads, grad_clip)
        for group in optimizer.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                state = optimizer.state[p]
                if not state:  # what torch's AdamW makes at its first step
                    state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p),
                                 exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                adamw_update(p.detach().numpy(), grads[names[p]], state["exp_avg"].numpy(),
                             state["exp_avg_sq"].numpy(), int(state["step"].item()), group["lr"],
                             beta1, beta2, group["eps"], group["weight_decay"])
        return torch.tensor(loss)

    return step
