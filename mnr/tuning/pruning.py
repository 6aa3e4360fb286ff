"""The trial as one more engine callback: report the monitored metric each epoch, stop when told.

This is the whole of Optuna inside a training run; the same `run_training` serves `mnr train`
and a trial. The Optuna-to-MLflow bookkeeping around a trial lives in `mnr.tuning.runs`.
"""

from __future__ import annotations

import threading

import optuna

from mnr import tracking
from mnr.engine import Callback, FitContext
from mnr.errors import MnrError
from mnr.interrupts import interrupts_deferred
from mnr.monitor import Monitor
from mnr.tuning.runs import RUN_ATTR

__all__ = ["PruningCallback", "best_reported"]


class PruningCallback(Callback):
    """Report the monitored metric to the trial every epoch; stop the run when Optuna says so.

    Raises `optuna.TrialPruned` from `on_epoch_end` at once, which ends the engine's fit like
    any error (callbacks get `on_fit_end`); the objective turns it into a PRUNED trial. `stop`,
    an event set on Ctrl-C or SIGTERM, ends the trial at its next epoch: how a tuning worker
    process is interrupted (`mnr.tuning.workers`).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str = "val/acc",
        *,
        stop: threading.Event | None = None,
        step_offset: int = 0,
        last_step: int | None = None,
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.stop = stop
        # a cross-validated trial trains its folds one after another: fold k reports its epochs
        # as steps (k-1)*epochs+1 ... k*epochs, and only the last fold's last step is final
        self.step_offset = step_offset
        self.last_step = last_step
        self.run_id: str | None = None
        self.last_value: float | None = None

    def on_fit_start(self, ctx: FitContext) -> None:
        for callback in ctx.callbacks:
            if isinstance(callback, tracking.MlflowLogger):
                self.run_id = callback.run_id
                self.trial.set_user_attr(RUN_ATTR, callback.run_id)
        self._check_stop()

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        self._check_stop()
        if self.monitor not in metrics:
            raise MnrError(
                f"train.monitor={self.monitor!r} is not a metric of the epoch; "
                f"pick one of {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.monitor])
        self.last_value = value
        step = self.step_offset + ctx.epoch
        last_step = self.last_step if self.last_step is not None else ctx.config.train.epochs
        with interrupts_deferred():  # the report is a write to the study's storage
            self.trial.report(value, step)
            prune = step < last_step and self.trial.should_prune()  # at the end it saves nothing
        if prune:
            raise optuna.TrialPruned(f"pruned at {self._where(ctx)}: {self.monitor}={value:.4f}")

    def _where(self, ctx: FitContext) -> str:
        if self.last_step is None:
            return f"epoch {ctx.epoch}"
        fold = self.step_offset // ctx.config.train.epochs + 1
        return f"fold {fold} epoch {ctx.epoch}"

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt("tuning interrupted")


def best_reported(history: list[dict[str, float]], monitor: Monitor, *, where: str = "") -> float:
    """The best finite value of the monitored metric over the epochs of `history` (a trial's
    value, or one fold's); `where` (" in fold 2") says which, when none was reported."""
    value = monitor.best_of(h[monitor.metric] for h in history if monitor.metric in h)
    if value is None:
        raise MnrError(
            f"train.monitor={monitor.metric!r} was never reported{where}; the trial ran no epoch"
        )
    return value
