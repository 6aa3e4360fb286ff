"""The engine's stock callbacks, named as Lightning names them: ModelCheckpoint, EarlyStopping.

Checkpoint files are written in the one format `mnr.checkpoint` defines.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from mnr.checkpoint import save_checkpoint
from mnr.engine import Callback, FitContext
from mnr.errors import MnrError

__all__ = ["EarlyStopping", "ModelCheckpoint"]


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class ModelCheckpoint(Callback):
    """Save `last.pt` every epoch and `best.pt` whenever the monitored metric improves.

    Only the main process (rank 0) writes. On an interrupt the last completed epoch is already on
    disk: a partly-run epoch cannot be resumed exactly, so it is not saved.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        *,
        monitor: str = "val_acc",
        mode: str = "max",
        save_last: bool = True,
        save_best: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.extra = dict(extra or {})  # stored in every checkpoint, e.g. the MLflow run id
        self.monitor, self.mode = monitor, mode
        self.save_last, self.save_best = save_last, save_best
        self.best_value: float | None = None
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.pt"

    def on_fit_start(self, ctx: FitContext) -> None:
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
            and _better(value, self.best_value, self.mode)
        )
        if improved:
            self.best_value, self.best_epoch = value, ctx.epoch
        if not ctx.is_main:
            return
        state = {**ctx.checkpoint(), **self.extra}
        if self.save_best and improved:
            save_checkpoint(state, self.best_path)
        if self.save_last:
            save_checkpoint(state, self.last_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state.get("best_value"), state.get("best_epoch")


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(
        self,
        *,
        monitor: str = "val_loss",
        patience: int = 5,
        mode: str = "min",
        min_delta: float = 0.0,
    ) -> None:
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise MnrError(
                f"early_stopping.monitor={self.monitor!r} is not a logged metric; "
                f"choose one of {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        if _better(value, self.best, self.mode, self.min_delta):
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
