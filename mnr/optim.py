"""Optimisers and learning-rate schedules from a config's `optim` and `scheduler` sections.

torch's own classes, chosen by name; the engine steps a `onecycle` schedule per batch and the
others per epoch (`mnr.engine.fit`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mnr.config import ExperimentConfig
from mnr.errors import MnrError

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module, config: ExperimentConfig) -> torch.optim.Optimizer:
    """sgd (momentum, nesterov), adam or adamw from `config.optim`."""
    opt = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.lr <= 0 or not math.isfinite(opt.lr):
        raise MnrError(f"optim.lr must be a positive number, got {opt.lr}")
    if opt.name == "sgd":
        if opt.nesterov and opt.momentum <= 0:
            raise MnrError("optim.nesterov needs optim.momentum > 0")
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: ExperimentConfig, *, steps_per_epoch: int
) -> Any:
    """none, step, cosine (per epoch) or onecycle (per batch) from `config.scheduler`."""
    sched, epochs = config.scheduler, config.train.epochs
    if sched.name == "none":
        return None
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=sched.step_size, gamma=sched.gamma
        )
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, epochs), eta_min=sched.min_lr
        )
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.optim.lr,
        epochs=max(1, epochs),
        steps_per_epoch=max(1, steps_per_epoch),
        pct_start=sched.pct_start,
    )
