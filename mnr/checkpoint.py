"""The checkpoint format: one dict of tensors and primitives, written atomically, read safely.

Every file mnr writes with model weights in it, whether a training checkpoint (`last.pt`,
`best.pt`) or the weights a logged predictor carries, is built by `model_state` and read by
`load_checkpoint`. A training checkpoint adds what `--resume` needs (optimizer, scheduler, epoch,
RNG states, callback states) to the same dict, in the spirit of torchvision's reference
`train.py`: one dict, restored as a whole.

Checkpoints are saved with `torch.save` and loaded with `weights_only=True`, so opening one
never runs code from the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnr.errors import MnrError
from mnr.files import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "model_state", "save_checkpoint", "weights_only"]

CHECKPOINT_FORMAT = "mnr-checkpoint-1"
_MODEL_KEYS = ("format", "model_name", "input_config", "model", "config", "run_id")


def model_state(
    model: nn.Module, *, config: dict[str, Any], run_id: str | None = None
) -> dict[str, Any]:
    """What prediction needs of a trained model: its name, input config, weights (on the CPU)
    and the experiment config it was trained with. `model` may be wrapped in DDP."""
    raw = getattr(model, "module", model)
    input_config = getattr(raw, "input_config", None)
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": getattr(raw, "model_name", type(raw).__name__),
        "input_config": input_config.to_dict() if input_config is not None else None,
        "model": {key: value.detach().cpu() for key, value in raw.state_dict().items()},
        "config": config,
        "run_id": run_id,
    }


def weights_only(state: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint without its training state (optimizer, RNG, history): what a
    logged predictor or an ensemble member carries."""
    return {key: state[key] for key in _MODEL_KEYS if key in state}


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    buffer = io.BytesIO()
    # in memory: torch turns a failed file write into a vague RuntimeError
    torch.save(state, buffer)
    try:
        with atomic_write(path) as fh:
            fh.write(buffer.getbuffer())
    except OSError as exc:
        raise MnrError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}. Free disk space or point "
            "MNR_CHECKPOINT_DIR at a writable folder; checkpoints already written are kept."
        ) from None
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise MnrError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MnrError(f"checkpoint {path} cannot be loaded ({exc}); it may be truncated") from None
    if not isinstance(state, dict) or "model" not in state:
        raise MnrError(f"{path} is not an mnr checkpoint")
    return state
