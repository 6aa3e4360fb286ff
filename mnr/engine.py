"""One training engine for every registered model: `fit()` around `train_one_epoch` and `evaluate`.

The loop is short on purpose (torchvision's reference `train.py`, nanoGPT): side concerns live in
callbacks with a handful of hooks (`on_fit_start`, `on_epoch_end`, `on_fit_end`), in the spirit of
Lightning's `ModelCheckpoint` and `EarlyStopping` without its depth. A plain run, an Optuna trial
and a data-parallel rank all go through this same loop; what differs is the list of callbacks.

Speed on a CPU comes from the data path: batches are gathered from the decode-once uint8 tensors
in memory, converted to float and normalised per batch, with no DataLoader worker processes and no
per-step host synchronisation beyond the finite-loss check (free on CPU, batched on GPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mnr.checkpoint import model_state
from mnr.config import ExperimentConfig, to_dict
from mnr.device import autocast, resolve_device, seed_everything
from mnr.errors import MnrError
from mnr.optim import make_optimizer, make_scheduler, restore_scheduler
from mnr.transforms import augment_batch, to_model_input

__all__ = [
    "Callback",
    "DivergedError",
    "FitContext",
    "FitResult",
    "evaluate",
    "fit",
    "predict_logits",
    "train_one_epoch",
]


class DivergedError(MnrError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class Callback:
    """Hooks the engine calls; override the ones you need.

    A callback that has state to survive `--resume` returns it from `state_dict` (saved in every
    checkpoint under its `state_key`) and takes it back in `load_state_dict`.
    """

    @property
    def state_key(self) -> str:
        """Its state's key in a checkpoint: the class name, plus what tells two of a class apart
        (Lightning's `state_key`), e.g. `EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}`."""
        return type(self).__name__

    def _generate_state_key(self, **distinct: Any) -> str:
        return f"{type(self).__name__}{distinct!r}"

    def on_fit_start(self, ctx: FitContext) -> None:
        """Before the first epoch (also after a resume)."""

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        """After each epoch's validation; may set `ctx.should_stop`."""

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        """Always, once: status is FINISHED, KILLED (interrupt) or FAILED."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class FitContext:
    """Everything a callback may read: the model and optimizer, progress, and the history."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: ExperimentConfig
    device: torch.device
    generator: torch.Generator
    callbacks: list[Callback]
    epoch: int = 0  # completed epochs
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    should_stop: bool = False
    stop_reason: str = ""
    rank: int = 0
    world_size: int = 1
    run_id: str | None = None  # the MLflow run this fit is recorded in, if any
    # scores of the finished model, added by callbacks in `on_fit_end` (the best weights' evaluation)
    final_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def raw_model(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    def checkpoint(self) -> dict[str, Any]:
        """One dict with all the state `--resume` needs; loadable with weights_only=True."""
        # the run id: `--resume PATH` continues this run
        state = model_state(self.model, config=to_dict(self.config), run_id=self.run_id)
        state.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            epoch=self.epoch,
            global_step=self.global_step,
            history=list(self.history),
            rng={"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            callbacks={cb.state_key: cb.state_dict() for cb in self.callbacks},
        )
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state


@dataclass
class FitResult:
    """What `fit` returns: the history and how it ended."""

    history: list[dict[str, float]]
    status: str
    epochs: int
    # why a callback stopped it before train.epochs (early stopping, target); "" if none did
    stop_reason: str = ""
    final_metrics: dict[str, float] = field(default_factory=dict)  # FitContext.final_metrics


def _input_norm(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    raw = getattr(model, "module", model)
    cfg = getattr(raw, "input_config", None)
    if cfg is None:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return cfg.mean, cfg.std


def _batches(
    count: int, batch_size: int, order: torch.Tensor, *, min_last: int
) -> Iterator[torch.Tensor]:
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        if len(index) < min_last:  # a 1-image batch breaks batch norm in training mode
            return
        yield index


def _rank_batch_size(batch_size: int, world_size: int) -> int:
    """Images per step on each rank: `train.batch_size` is the global batch, split evenly."""
    if batch_size % world_size:
        raise MnrError(
            f"train.batch_size={batch_size} is the global batch, split evenly over {world_size} "
            f"processes; make it a multiple of {world_size}"
        )
    return batch_size // world_size


def _epoch_order(ctx: FitContext, count: int) -> torch.Tensor:
    """This epoch's shuffled indices for this rank, laid out in per-rank batches.

    Every rank draws the same permutation. A single process takes it in batches of
    `train.batch_size`; with W ranks each such global batch is cut into W equal slices and rank r
    takes slice r, so step k of a data-parallel run trains on exactly the images of step k of a
    single-process run, and DDP's averaged gradient is that batch's gradient. A short last batch
    whose size W does not divide is padded by repeating its own images, so that every rank runs
    the same number of steps; like a single process, a 1-image last batch is dropped.
    """
    order = torch.randperm(count, generator=ctx.generator)
    if ctx.world_size == 1:
        return order
    batch_size = ctx.config.train.batch_size  # a multiple of world_size: `fit` checks
    slices = []
    for start in range(0, count, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < 2:
            break
        share = math.ceil(len(batch) / ctx.world_size)  # batch_size / W, except for the last batch
        padded = batch[torch.arange(share * ctx.world_size) % len(batch)]
        slices.append(padded[ctx.rank * share : (ctx.rank + 1) * share])
    return torch.cat(slices) if slices else order[:0]


def _average_buffers(model: nn.Module, world_size: int) -> None:
    """Average float buffers (BatchNorm running statistics) over ranks, so every rank evaluates
    the same model. The running means become exactly a single process's (they are linear in the
    batch means); the running variances miss the spread between ranks' slices, a small bias."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world_size)


def train_one_epoch(
    ctx: FitContext,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    criterion: nn.Module,
    scaler: torch.amp.GradScaler,
) -> dict[str, float]:
    """One pass over the training tensors; returns train/loss and train/acc for the epoch."""
    model, optimizer, config = ctx.model, ctx.optimizer, ctx.config
    train_cfg = config.train
    mean, std = _input_norm(model)
    model.train()
    per_batch_scheduler = config.scheduler.name == "onecycle"
    # A NaN check every step would sync a GPU each step; on CPU the step is already synchronous.
    check_every = 1 if ctx.device.type == "cpu" else 25
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
    seen = 0
    order = _epoch_order(ctx, len(images))
    batch_size = _rank_batch_size(train_cfg.batch_size, ctx.world_size)
    # with several ranks `_epoch_order` drops by global batch
    min_last = 2 if ctx.world_size == 1 else 1
    for step, index in enumerate(
        _batches(len(order), batch_size, order, min_last=min_last), start=1
    ):
        # index_select copies whole images; images[index] (advanced indexing) goes element by
        # element and costs 10x more on a CPU (benchmarks/speed.py). Same values either way.
        rows = index.to(images.device)
        x = to_model_input(
            images.index_select(0, rows).to(ctx.device, non_blocking=True),
            mean=mean,
            std=std,
            channels_last=train_cfg.channels_last,
        )
        x = augment_batch(x, train_cfg.augment, generator=ctx.generator)
        y = labels.index_select(0, rows.to(labels.device)).to(ctx.device, non_blocking=True)
        with autocast(ctx.device, train_cfg.amp):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if per_batch_scheduler and ctx.scheduler is not None:
            ctx.scheduler.step()
        ctx.global_step += 1
        loss_sum += loss.detach().to(torch.float64) * len(index)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(index)
        if step % check_every == 0 and not torch.isfinite(loss_sum):
            raise DivergedError(
                f"training diverged: the loss became {loss.item()} at epoch {ctx.epoch + 1}, step {step} "
                f"(global step {ctx.global_step}); lower optim.lr (now {config.optim.lr:g}). "
                "The last good checkpoint is kept."
            )
    totals = torch.stack(
        [
            loss_sum,
            correct.to(torch.float64),
            torch.tensor(float(seen), dtype=torch.float64, device=ctx.device),
        ]
    )
    if ctx.world_size > 1:
        dist.all_reduce(totals)
        _average_buffers(ctx.raw_model, ctx.world_size)
    loss_total, correct_total, seen_total = totals.tolist()
    if not math.isfinite(loss_total):
        raise DivergedError(
            f"training diverged: the loss became {loss_total} in epoch {ctx.epoch + 1} "
            f"(by global step {ctx.global_step}); lower optim.lr (now {config.optim.lr:g}). "
            "The last good checkpoint is kept."
        )
    return {
        "train/loss": loss_total / max(seen_total, 1),
        "train/acc": correct_total / max(seen_total, 1),
    }


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 512,
    device: torch.device | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """Float32 logits (on CPU) for uint8 N x 3 x H x W images, in large inference batches."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    device = device or next(model.parameters()).device
    mean, std = _input_norm(model)
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True)
        x = to_model_input(batch, mean=mean, std=std, channels_last=channels_last)
        with autocast(device, device.type == "cuda"):
            outputs.append(model(x).float().cpu())
    model.train(was_training)
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | None = None,
    channels_last: bool = True,
    prefix: str = "val",
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss, accuracy and top-5 accuracy on a labelled set, plus the logits for further metrics."""
    logits = predict_logits(
        model, images, batch_size=batch_size, device=device, channels_last=channels_last
    )
    labels = labels.cpu()
    loss = nn.functional.cross_entropy(logits, labels).item()
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return (
        {
            f"{prefix}/loss": loss,
            f"{prefix}/acc": (logits.argmax(1) == labels).double().mean().item(),
            f"{prefix}/top5": (top5 == labels.view(-1, 1)).any(1).double().mean().item(),
        },
        logits,
    )


def fit(
    model: nn.Module,
    *,
    config: ExperimentConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    callbacks: Sequence[Callback] = (),
    resume: dict[str, Any] | None = None,
    device: torch.device | None = None,
    run_id: str | None = None,
) -> FitResult:
    """Train `model` for `config.train.epochs` epochs (or until a callback stops it: stopping at
    `train.target` is the `mnr.callbacks.StopAtTarget` callback).

    `run_id` is the MLflow run the fit is recorded in: callbacks read it from the context (the
    checkpoint folder is named after it) and every checkpoint stores it.

    `resume` is a checkpoint dict (see `FitContext.checkpoint`): model, optimizer, scheduler,
    RNG states and callback states are restored, so a resumed CPU run with a seed ends with the
    same metrics as one that was never interrupted. A KeyboardInterrupt (Ctrl-C, or SIGTERM
    turned into one by the CLI) ends the fit with status KILLED after the callbacks have saved
    what they hold; it is then re-raised.
    """
    train_cfg = config.train
    device = device or resolve_device(train_cfg.device)
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    seed_everything(train_cfg.seed, deterministic=train_cfg.deterministic)
    model = model.to(device)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    optimizer = make_optimizer(model, config)
    _rank_batch_size(train_cfg.batch_size, world_size)  # an uneven split fails before any work
    # global batches, any world size
    steps_per_epoch = math.ceil(len(train_images) / train_cfg.batch_size)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=steps_per_epoch)
    if device.type != "cpu":
        train_images, train_labels = train_images.to(device), train_labels.to(device)
    ctx = FitContext(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        config=config,
        device=device,
        generator=generator,
        callbacks=list(callbacks),
        rank=rank,
        world_size=world_size,
        run_id=run_id,
    )
    if resume is not None:
        _restore(ctx, resume)
    if world_size > 1:
        # Buffers are averaged once per epoch (`_average_buffers`) rather than copied from rank 0
        # before every forward pass.
        ctx.model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )
    criterion = nn.CrossEntropyLoss(label_smoothing=train_cfg.label_smoothing)
    scaler = torch.amp.GradScaler(
        "cuda",
        enabled=device.type == "cuda" and train_cfg.amp and not torch.cuda.is_bf16_supported(),
    )
    status = "FAILED"
    for cb in ctx.callbacks:
        cb.on_fit_start(ctx)
    try:
        while ctx.epoch < train_cfg.epochs and not ctx.should_stop:
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            metrics = train_one_epoch(
                ctx, train_images, train_labels, criterion=criterion, scaler=scaler
            )
            train_seconds = time.perf_counter() - started
            val_metrics, _ = evaluate(
                ctx.raw_model,
                val_images,
                val_labels,
                batch_size=train_cfg.eval_batch_size,
                device=device,
                channels_last=train_cfg.channels_last,
            )
            metrics.update(val_metrics)
            if scheduler is not None and config.scheduler.name != "onecycle":
                scheduler.step()
            ctx.epoch += 1
            elapsed = time.perf_counter() - started
            metrics.update(
                {
                    "train/lr": lr,
                    "train/epoch_seconds": elapsed,
                    "train/images_per_second": len(train_images) / max(train_seconds, 1e-9),
                    "epoch": float(ctx.epoch),
                }
            )
            ctx.history.append(metrics)
            for cb in ctx.callbacks:
                cb.on_epoch_end(ctx, metrics)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for cb in ctx.callbacks:
            cb.on_fit_end(ctx, status)
    return FitResult(
        history=ctx.history,
        status=status,
        epochs=ctx.epoch,
        stop_reason=ctx.stop_reason,
        final_metrics=ctx.final_metrics,
    )


def _restore(ctx: FitContext, state: dict[str, Any]) -> None:
    ctx.raw_model.load_state_dict(state["model"])
    ctx.optimizer.load_state_dict(state["optimizer"])
    ctx.epoch = int(state["epoch"])
    ctx.global_step = int(state["global_step"])
    restore_scheduler(ctx.scheduler, state, config=ctx.config)
    ctx.history = list(state.get("history", []))
    torch.set_rng_state(state["rng"]["torch"])
    ctx.generator.set_state(state["rng"]["generator"])
    if "cuda" in state["rng"] and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], ctx.device)
    saved = state.get("callbacks", {})
    for cb in ctx.callbacks:
        if cb.state_key in saved:
            cb.load_state_dict(saved[cb.state_key])
