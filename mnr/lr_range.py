"""The learning-rate range test (Smith 2015; fastai's `lr_find`, Lightning's `Tuner.lr_find`).

The module is `lr_range`, not `lr_find`, so that a package-level `mnr.lr_find(...)` function can
never be overwritten by importing a submodule of the same name (the reason for `mnr.tuning`).

A throwaway copy of the configured model trains on the configured data while the learning rate
grows geometrically from `start_lr` to `end_lr`, one mini-batch per step. The loss is smoothed
as fastai smooths it (an exponential moving average, beta 0.98, with bias correction) and the
sweep stops once it exceeds 4x the best seen: past that the model has diverged and the rest
of the curve says nothing. The suggestion is the learning rate where the smoothed loss falls
fastest (the steepest negative slope against log lr, skipping the first 10 and the last
point), which is fastai's classic "steep" pick and Lightning's default: a rate the model still
learns fast at, usually 3-10x below where the loss bottoms out.

Why not `mnr.engine.fit`: its hooks are per epoch, and the sweep needs the lr set before, and
the loss read after, every batch. Everything else is the engine's: the model, data, device,
seed, optimizer (`make_optimizer`), input scaling and augmentation are built exactly as a
training run builds them (only mixed precision is left off: a sweep is short), so the
suggestion applies to `mnr train` with the same config. The model is made here and dropped
here; no other run sees its weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mnr import tracking
from mnr.config import ExperimentConfig
from mnr.console import note
from mnr.console import progress as progress_bar
from mnr.data import TrainingData
from mnr.device import resolve_device, seed_everything
from mnr.errors import MnrError
from mnr.optim import make_optimizer
from mnr.training import build_model, load_data
from mnr.transforms import augment_batch, to_model_input

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LrFindResult", "caveats", "lr_find", "suggest_lr"]

SMOOTHING = 0.98  # fastai's beta for the loss's moving average
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times the best
_SKIP_BEGIN, _SKIP_END = 10, 1  # Lightning's: the first points are noise, the last may diverge


@dataclass
class LrFindResult:
    """One sweep: the learning rate and smoothed loss of each step, and the suggestion."""

    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    run_id: str | None = None
    seconds: float = 0.0
    caveats: list[str] = dataclasses.field(default_factory=list)  # see `caveats`
    model_name: str = ""  # the architecture swept, for the `mnr train --model` hint

    def to_csv(self) -> str:
        """`step,lr,loss` lines, the data behind the picture."""
        rows = [
            f"{i},{lr:.6g},{loss:.6f}"
            for i, (lr, loss) in enumerate(zip(self.lrs, self.losses, strict=True))
        ]
        return "\n".join(["step,lr,loss", *rows]) + "\n"

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None) -> Figure:
        """Smoothed loss against learning rate (log axis), the suggestion marked; saved to
        `path` when given. A bare matplotlib `Figure`: a notebook shows it inline."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 4.2), dpi=100)
        axis = figure.subplots()
        axis.plot(self.lrs, self.losses)
        axis.set_xscale("log")
        axis.set_xlabel("learning rate")
        axis.set_ylabel("training loss (smoothed)")
        at = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggestion))))
        axis.plot(
            [self.suggestion], [self.losses[at]], "o", color="red",
            label=f"suggestion {self.suggestion:.2g} (steepest descent)",
        )  # fmt: skip
        axis.legend()
        axis.set_title(title or "learning-rate range test", fontsize=10)
        figure.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path)
        return figure


def suggest_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The learning rate where the smoothed loss falls fastest against log lr (see the module
    docstring); with too few points to skip the noisy start, the one with the lowest loss."""
    lrs_a, losses_a = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if len(lrs_a) == 0:
        raise MnrError("the learning-rate sweep recorded no steps; give it more steps")
    if len(lrs_a) < _SKIP_BEGIN + _SKIP_END + 3:
        return float(lrs_a[int(np.argmin(losses_a))])
    window = slice(_SKIP_BEGIN, len(lrs_a) - _SKIP_END)
    slope = np.gradient(losses_a[window], np.log(lrs_a[window]))
    return float(lrs_a[window][int(np.argmin(slope))])


def caveats(lrs: Sequence[float], losses: Sequence[float]) -> list[str]:
    """Why a suggestion may mislead: a loss that hardly fell (the model had not started
    learning within the sweep: a net without batch norm under SGD can sit at chance for hundreds
    of steps, and its steepest point is then noise or the sweep's very end), or a loss still
    falling at the sweep's end, so the curve does not show where it turns."""
    notes = []
    if losses and min(losses) > 0.9 * losses[0]:
        notes.append(
            f"the loss fell less than 10 % over the sweep ({losses[0]:.3f} -> {min(losses):.3f}): "
            "the model had hardly started learning, so the suggestion is a guess; try more --steps"
        )
    tail = max(2, len(losses) // 20)  # the last 5 % of the sweep
    if len(losses) > tail and int(np.argmin(losses)) >= len(losses) - tail:
        notes.append(
            f"the loss was still falling at lr {lrs[-1]:g}, the sweep's end; raise --end-lr "
            "to see where it turns"
        )
    return notes


def _batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Full shuffled batches, epoch after epoch, for as many steps as the sweep takes."""
    if count < 2:
        raise MnrError(f"the learning-rate sweep needs at least 2 training images, got {count}")
    batch_size = min(batch_size, count)
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _sweep(
    model: nn.Module,
    config: ExperimentConfig,
    data: TrainingData,
    *,
    start_lr: float,
    end_lr: float,
    steps: int,
    progress: bool,
) -> tuple[list[float], list[float]]:
    train = config.train
    device = resolve_device(train.device)
    model = model.to(device)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(
        model, dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=start_lr))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    generator = torch.Generator().manual_seed(train.seed)
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    mean, std = model.input_config.mean, model.input_config.std
    ratio = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    batches = _batches(len(images), train.batch_size, generator)
    with progress_bar(total=steps, desc="lr-find", unit="step", disable=not progress) as bar:
        for step in range(steps):
            lr = start_lr * ratio**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = next(batches)
            x = to_model_input(
                images.index_select(0, index).to(device),
                mean=mean,
                std=std,
                channels_last=train.channels_last,
            )
            x = augment_batch(x, train.augment, generator=generator)
            loss = criterion(model(x), labels.index_select(0, index).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            value = loss.item()
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > DIVERGED * best:
                break
    return lrs, losses


def lr_find(
    config: ExperimentConfig,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 200,
    data: TrainingData | None = None,
    track: bool = True,
    progress: bool = True,
) -> LrFindResult:
    """Sweep the learning rate for `config`'s model and data and suggest one (module docstring).

    With `track`, one MLflow run in `config.tracking.experiment`, tagged ``mnr.role=lr-find``,
    holds the config's params, the sweep's settings, the suggestion (param `lr_find.suggestion`
    and metric `lr_find/suggestion`), the curve `lr_find.png` and its data `lr_find.csv`.

    Example::

        result = lr_find(resolve_config(model="bn_cnn"), steps=100)
        result.plot()  # in a notebook: the curve, inline
        resolve_config(model="bn_cnn", options={"optim.lr": result.suggestion})
    """
    if not 0 < start_lr < end_lr or not math.isfinite(end_lr):
        raise MnrError(f"need 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}")
    if steps < 2:
        raise MnrError(f"--steps must be at least 2, got {steps}")
    if track:
        tracking.configure_tracking(check=True)  # an unreachable server fails before any work
    if data is None:
        data = load_data(config, progress=progress)
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    model = build_model(config, layout=data.layout)
    if not track:
        return _run(
            model,
            config,
            data,
            start_lr=start_lr,
            end_lr=end_lr,
            steps=steps,
            progress=progress,
            run_id=None,
        )
    with tracking.tracked_run(
        experiment=config.tracking.experiment,
        run_name=f"lr-find {config.model.name}",
        tags={"mnr.role": "lr-find", "model": config.model.name, "data.digest": data.digest},
        description=(
            f"Learning-rate range test of {config.model.name} on {data.paths.train}: "
            f"{config.optim.name}, batch {config.train.batch_size}, lr {start_lr:g} to "
            f"{end_lr:g} over at most {steps} steps."
        ),
        source="mnr lr-find",
    ) as run_id:
        tracking.log_params(run_id, config)
        tracking.log_new_params(
            run_id,
            {"lr_find.start_lr": start_lr, "lr_find.end_lr": end_lr, "lr_find.steps": steps},
        )
        result = _run(
            model,
            config,
            data,
            start_lr=start_lr,
            end_lr=end_lr,
            steps=steps,
            progress=progress,
            run_id=run_id,
        )
        if result.caveats:
            tracking.set_tags(run_id, {"mnr.lr_find.caveats": "; ".join(result.caveats)})
        tracking.log_new_params(run_id, {"lr_find.suggestion": f"{result.suggestion:.6g}"})
        tracking.log_metrics(
            run_id,
            {"lr_find/suggestion": result.suggestion, "lr_find/steps_run": len(result.lrs)},
        )
        tracking.log_text(run_id, result.to_csv(), "lr_find.csv")
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "lr_find.png"
            result.plot(image, title=f"{config.model.name}: learning-rate range test")
            tracking.log_artifact(run_id, image)
    return result


def _run(
    model: nn.Module,
    config: ExperimentConfig,
    data: TrainingData,
    *,
    start_lr: float,
    end_lr: float,
    steps: int,
    progress: bool,
    run_id: str | None,
) -> LrFindResult:
    started = time.perf_counter()
    lrs, losses = _sweep(
        model, config, data, start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress
    )
    result = LrFindResult(
        lrs=lrs,
        losses=losses,
        suggestion=suggest_lr(lrs, losses),
        run_id=run_id,
        seconds=time.perf_counter() - started,
        caveats=caveats(lrs, losses),
        model_name=config.model.name,
    )
    for text in result.caveats:
        note(f"lr-find: {text}")
    return result
