"""Training on several devices at once: PyTorch DistributedDataParallel, started by torchrun.

    torchrun --nproc_per_node=N -m gptlib train ...

torchrun starts N copies of the command and tells each, through environment
variables, who it is: ``RANK`` (0..WORLD_SIZE-1 over all machines), ``LOCAL_RANK``
(its number on this machine, which picks its GPU) and ``WORLD_SIZE``. Every process
holds a full copy of the model and works on its own slice of each batch; after
the backward pass DDP averages the gradients over all processes, so every copy
takes the same optimizer step and the copies stay identical. Process 0 alone
writes checkpoints and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
        """Process 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process works on."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of "
                             f"processes ({self.world_size}): each takes an equal share")
        per_process = batch_size // self.world_size
        return slice(self.rank * per_process, (self.rank + 1) * per_process)

    def mean(self, values: list[float], device) -> list[float]:
        """The mean of each value over all processes (the values themselves when alone)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()


def from_environment() -> Distributed:
    """Read what torchrun set; a process started without torchrun is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    return Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ["LOCAL_RANK"]),
                       world_size=world_size)


def init_processes(info: Distributed, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU processes."""
    if info.enabled:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                                device_id=device if device.type == "cuda" else None)


def end_processes(info: Distributed) -> None:
    """Leave the process group (every process, at the end)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
