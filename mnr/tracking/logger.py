"""The engine callback that logs every epoch's metrics to an MLflow run.

Per-epoch metrics are logged asynchronously (`synchronous=False`) so training never waits on the
store; `tracked_run` flushes them when the run ends. A module of its own because it needs the
engine, and with it torch, which the rest of `mnr.tracking` (used by `mnr predict` before torch
is imported) does not.
"""

from __future__ import annotations

import time

import mlflow
from mlflow.entities import Metric

from mnr.engine import Callback, FitContext
from mnr.tracking.store import client

__all__ = ["MlflowLogger"]


class MlflowLogger(Callback):
    """Log per-epoch metrics to one run, without blocking training; only rank 0 logs."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._client = client()

    def on_fit_start(self, ctx: FitContext) -> None:
        if ctx.is_main and ctx.history:
            self._log_missing_epochs(ctx.history)

    def _log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """On resume, log the checkpointed epochs whose metrics a killed process never sent.

        Epoch metrics go out asynchronously, so a SIGKILL right after a checkpoint can lose the
        last epoch's; the checkpoint's history still has them.
        """
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
            self._client.log_batch(self.run_id, metrics=missing[start : start + 1000])

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if not ctx.is_main:
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, ctx.epoch)
            for key, value in metrics.items()
            if key != "epoch"
        ]
        self._client.log_batch(self.run_id, metrics=batch, synchronous=False)

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        if ctx.is_main:
            mlflow.flush_async_logging()
