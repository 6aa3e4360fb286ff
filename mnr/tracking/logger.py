"""The engine callback that logs every epoch's metrics to an MLflow run.

Per-epoch metrics are logged synchronously, one `log_batch` per epoch (a few ms on a local
store). MLflow's asynchronous logging was tried and dropped: once its queue has been used, every
`mlflow.flush_async_logging()` (one per run end) waits up to a second for the idle logging
thread (MLflow 3.x, `AsyncLoggingQueue.flush`), which cost a 30-trial study about a minute.

A module of its own because it needs the engine, and with it torch, which the rest of
`mnr.tracking` (used by `mnr predict` before torch is imported) does not.
"""

from __future__ import annotations

import time

from mlflow.entities import Metric

from mnr.engine import Callback, FitContext
from mnr.interrupts import interrupts_deferred
from mnr.tracking.store import client

__all__ = ["MlflowLogger"]


class MlflowLogger(Callback):
    """Log per-epoch metrics to one run; only rank 0 logs.

    `step_offset` is added to the epoch number: a cross-validated trial trains its folds one
    after the other into one run, fold k's epochs at steps (k-1)*epochs+1 ... k*epochs.
    """

    def __init__(self, run_id: str, *, step_offset: int = 0) -> None:
        self.run_id = run_id
        self.step_offset = step_offset
        self._client = client()

    def on_fit_start(self, ctx: FitContext) -> None:
        if ctx.is_main and ctx.history:
            self._log_missing_epochs(ctx.history)

    def _log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """On resume, log the checkpointed epochs that the run lacks (a process killed between
        a checkpoint and its epoch's metrics, or a store that lost them); the checkpoint's
        history has them all."""
        now = int(time.time() * 1000)
        missing = []
        for key in sorted({key for epoch in history for key in epoch if key != "epoch"}):
            logged = {m.step for m in self._client.get_metric_history(self.run_id, key)}
            missing += [
                Metric(key, float(epoch[key]), now, step)
                for step, epoch in enumerate(history, start=1)
                if key in epoch and step not in logged
            ]
        for start in range(0, len(missing), 1000):  # MLflow's per-batch limit
            with interrupts_deferred():
                self._client.log_batch(self.run_id, metrics=missing[start : start + 1000])

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if not ctx.is_main:
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, self.step_offset + ctx.epoch)
            for key, value in metrics.items()
            if key != "epoch"
        ]
        with interrupts_deferred():  # a Ctrl-C mid-transaction would leave the store locked
            self._client.log_batch(self.run_id, metrics=batch)
