"""Where tensors run, and how reproducibly: the device, the seeds, mixed precision.

Kept apart from the engine because prediction, the learning-rate finder and the benchmarks need
them without a training loop.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from mnr.errors import MnrError

__all__ = ["autocast", "resolve_device", "seed_everything"]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; naming an unavailable device is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
            )
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnrError("train.device=cuda but no CUDA GPU is available; use train.device=auto")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise MnrError("train.device=mps but MPS is not available; use train.device=auto")
    return torch.device(name)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed torch and numpy; with `deterministic`, also force deterministic kernels."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported), a no-op elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
