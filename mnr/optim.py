"""Optimisers and learning-rate schedules from a config's `optim` and `scheduler` sections.

torch's own classes, chosen by name; the engine steps a `onecycle` schedule per batch and the
others per epoch (`mnr.engine.fit`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from mnr.config import ExperimentConfig
from mnr.errors import MnrError

__all__ = ["make_optimizer", "make_scheduler", "restore_scheduler"]


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


def restore_scheduler(
    scheduler: Any, checkpoint: dict[str, Any], *, config: ExperimentConfig
) -> None:
    """Put a resumed run's `scheduler` where the run stands, after its optimizer is restored.

    `checkpoint` is the engine's (`FitContext.checkpoint`): the scheduler's state, saved by a run
    configured for the checkpoint's `train.epochs`, and where the run stood. With the same epoch
    count, or a step schedule (whose shape does not depend on it), the state is loaded as it is.
    A cosine or onecycle schedule spans `train.epochs`, and a resume that changes it (`mnr train
    --resume RUN --epochs 60`) cannot keep the old one: past its end a cosine climbs back up and
    a onecycle raises. Such a schedule is rebuilt for the new epoch count and moved to the
    resumed epoch (step, for onecycle), as if the run had been started with the new count, as
    timm's resume does. Extending a finished cosine run is then a warm restart: the learning
    rate jumps from the old schedule's end to the longer one's value at that epoch and decays to
    `scheduler.min_lr` by the new last epoch.
    """
    state = checkpoint.get("scheduler")
    if scheduler is None or state is None:
        return
    spans_epochs = config.scheduler.name in ("cosine", "onecycle")
    if not spans_epochs or checkpoint["config"]["train"]["epochs"] == config.train.epochs:
        scheduler.load_state_dict(state)
        return
    for group in scheduler.optimizer.param_groups:
        group["lr"] = group["initial_lr"]  # where the fresh `scheduler` started, before the load
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose
        warnings.simplefilter("ignore", UserWarning)
        per_batch = config.scheduler.name == "onecycle"
        for _ in range(checkpoint["global_step"] if per_batch else checkpoint["epoch"]):
            scheduler.step()
