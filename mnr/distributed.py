"""Data-parallel training with torch.distributed, as launched by `torchrun`.

mnr adds no launcher or scheduler of its own: `torchrun --nproc_per_node=N -m mnr train ...`
sets RANK, WORLD_SIZE and MASTER_ADDR/PORT, and this module only joins the process group that
describes (gloo on CPU, NCCL on GPU). The engine deals each epoch's permutation out across ranks
like `DistributedSampler` and wraps the model in `DistributedDataParallel`; only rank 0 logs to
MLflow and writes checkpoints, so a distributed run is one MLflow run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["distributed_session", "is_main_process", "launched_by_torchrun"]


def is_main_process() -> bool:
    """True on rank 0, the process that reports, logs to MLflow and writes checkpoints (and in
    any process that is not one rank of several)."""
    return (dist.get_rank() if dist.is_initialized() else 0) == 0


def launched_by_torchrun() -> bool:
    """True when WORLD_SIZE > 1 says this process is one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def distributed_session() -> Iterator[None]:
    """Join the process group for the duration of a command; a no-op for a single process."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()
