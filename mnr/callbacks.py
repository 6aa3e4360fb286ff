"""The engine's stock callbacks, named as Lightning names them: ModelCheckpoint, EarlyStopping,
StopAtTarget (`train.target`), and the ProgressBar that shows epochs as they pass.

Checkpoint files are written in the one format `mnr.checkpoint` defines.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from mnr import settings
from mnr.checkpoint import load_checkpoint, save_checkpoint
from mnr.console import is_live, say
from mnr.engine import Callback, FitContext
from mnr.errors import MnrError
from mnr.monitor import Monitor

__all__ = ["EarlyStopping", "ModelCheckpoint", "ProgressBar", "StopAtTarget"]


class ModelCheckpoint(Callback):
    """Save `last.pt` every epoch and `best.pt` whenever the monitored metric improves; at the end
    of a finished fit, put the best weights back in the model (`restore_best`), so that what is
    evaluated, logged and returned is the best epoch's model, as Keras's `restore_best_weights`.

    `dirpath=None` is `MNR_CHECKPOINT_DIR/<run id>` (`local-<pid>` for a run not recorded), which
    is where `--resume RUN_ID` looks. Only the main process (rank 0) writes. On an interrupt the
    last completed epoch is already on disk: a partly-run epoch cannot be resumed exactly, so it
    is not saved.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        *,
        monitor: str = "val/acc",
        mode: str = "max",
        save_last: bool = True,
        save_best: bool = True,
        restore_best: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.restore_best = restore_best
        self.monitor, self.mode = monitor, mode
        self._monitor = Monitor(monitor, mode)
        self.save_last, self.save_best = save_last, save_best
        self.best_value: float | None = None
        self.best_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    @property
    def last_path(self) -> Path:
        return self._folder() / "last.pt"

    @property
    def best_path(self) -> Path:
        return self._folder() / "best.pt"

    def _folder(self) -> Path:
        if self.dirpath is None:
            raise RuntimeError("ModelCheckpoint(dirpath=None) has its folder once the fit starts")
        return self.dirpath

    def on_fit_start(self, ctx: FitContext) -> None:
        if self.dirpath is None:
            self.dirpath = settings.MNR_CHECKPOINT_DIR.path() / (
                ctx.run_id or f"local-{os.getpid()}"
            )
        if not ctx.is_main:
            return
        try:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            probe = self.dirpath / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise MnrError(
                f"checkpoint folder {self.dirpath} is not writable ({exc.strerror or exc}); "
                "set MNR_CHECKPOINT_DIR to a writable folder"
            ) from None

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        improved = (
            value is not None
            and math.isfinite(value)
            and self._monitor.better(value, self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch = value, ctx.epoch
        if not ctx.is_main:
            return
        state = ctx.checkpoint()
        if self.save_best and improved:
            save_checkpoint(state, self.best_path)
        if self.save_last:
            save_checkpoint(state, self.last_path)

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        if status == "FINISHED" and self.restore_best and self.best_path.is_file():
            ctx.raw_model.load_state_dict(load_checkpoint(self.best_path)["model"])

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch")


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(
        self,
        *,
        monitor: str = "val/loss",
        patience: int = 5,
        mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self._monitor = Monitor(monitor, mode)
        self.best: float | None = None
        self.wait = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise MnrError(
                f"early_stopping.monitor={self.monitor!r} is not a logged metric; "
                f"choose one of {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        if self._monitor.better(value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            ctx.should_stop = True
            ctx.stop_reason = (
                f"early stopping: {self.monitor} did not improve for {self.patience} epochs"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), int(state.get("wait", 0))


class StopAtTarget(Callback):
    """Stop as soon as the monitored metric reaches `target` (`train.target`): at or above it
    for a `max` monitor, at or below it for a `min` one. An epoch without the metric goes on."""

    def __init__(self, monitor: Monitor, target: float) -> None:
        self.monitor, self.target = monitor, target

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if self.monitor.reached(metrics.get(self.monitor.metric), self.target):
            ctx.should_stop = True
            ctx.stop_reason = f"{self.monitor.metric} reached {self.target}"


class ProgressBar(Callback):
    """Epochs as they pass: a tqdm bar with the latest losses, accuracies and an ETA on a
    terminal; one plain line per epoch elsewhere (log files, CI, `mlflow run`), where a bar's
    carriage returns would make a mess. Only the main process reports.

    `desc` names what is training (a model, a fold). Lines go to stderr, like tqdm's bars, so
    that a command's own output (a table, a CSV path) stays clean on stdout.
    """

    def __init__(self, *, desc: str = "training", stream: TextIO | None = None) -> None:
        self.desc = desc
        self.stream = stream
        self._bar: Any = None
        self._started = 0.0

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def on_fit_start(self, ctx: FitContext) -> None:
        if not ctx.is_main:
            return
        total = ctx.config.train.epochs
        self._started = time.perf_counter()
        if is_live(self._out()):
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=ctx.epoch, desc=self.desc, unit="epoch", file=self._out()
            )

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if not ctx.is_main:
            return
        shown = {name: metrics[key] for key, name in _SHOWN if key in metrics}
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()}, refresh=False)
            self._bar.update(1)
            return
        total = ctx.config.train.epochs
        elapsed = time.perf_counter() - self._started
        values = "  ".join(f"{name} {value:.4f}" for name, value in shown.items())
        seconds = metrics.get("train/epoch_seconds", 0.0)
        say(f"{self.desc}: epoch {ctx.epoch}/{total}  {values}  ({seconds:.1f} s, {elapsed:.0f} s so far)",
            stream=self._out())  # fmt: skip

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# (metric, short name) shown per epoch, in this order
_SHOWN = (
    ("train/loss", "loss"),
    ("train/acc", "acc"),
    ("val/loss", "val_loss"),
    ("val/acc", "val_acc"),
)
