"""Section 2: what MLflow tracking costs per epoch (MlflowLogger on a real sqlite store).

Fits with and without the logger alternate, several epochs per fit as real runs have: the run's
one flush at the end of `fit` (waiting for MLflow's async writer) is then paid once per run, not
once per epoch. Besides the end-to-end wall and CPU times, which on a shared machine are noisier
than the effect, the time spent inside the logger's hooks is summed directly: that is what the
training thread waits for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from speed_harness import load_average, log, median, seed_config

from mnr.config import ExperimentConfig
from mnr.data.layout import FigureLayout
from mnr.device import seed_everything
from mnr.engine import Callback, FitContext, fit
from mnr.training import build_model


class _TimedCallback(Callback):
    """Wraps a callback and adds up the time spent in its hooks."""

    def __init__(self, inner: Callback) -> None:
        self.inner, self.seconds = inner, 0.0

    def _timed(self, hook: str, *args: Any) -> None:
        started = time.perf_counter()
        getattr(self.inner, hook)(*args)
        self.seconds += time.perf_counter() - started

    def on_fit_start(self, ctx: FitContext) -> None:
        self._timed("on_fit_start", ctx)

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        self._timed("on_epoch_end", ctx, metrics)

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        self._timed("on_fit_end", ctx, status)


@contextmanager
def _temporary_store() -> Iterator[Path]:
    """MLFLOW_TRACKING_URI pointed at a sqlite file in a new folder; both undone on exit."""
    folder = Path(tempfile.mkdtemp(prefix="mnr-speed-mlflow-"))
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        yield folder
    finally:
        if saved_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
        shutil.rmtree(folder, ignore_errors=True)


def _fit_per_epoch(
    config: ExperimentConfig,
    arrays: dict[str, torch.Tensor],
    *,
    layout: FigureLayout | None,
    epochs: int,
    make_logger: Callable[[], Callback] | None,
    hook_seconds: list[float],
) -> dict[str, float]:
    """One `fit` of the model built for `layout`, with the logger `make_logger` builds (timed) or
    without: wall and CPU seconds per epoch; the time inside the logger's hooks is appended to
    `hook_seconds`."""
    count = len(arrays["train_images"])
    seed_everything(config.train.seed)
    model = build_model(config, layout=layout)
    callbacks: list[Callback] = []
    if make_logger is not None:
        timed = _TimedCallback(make_logger())
        callbacks.append(timed)
    started, cpu_started = time.perf_counter(), time.process_time()
    fit(model, config=config, callbacks=callbacks, **arrays)
    seconds = (time.perf_counter() - started) / epochs
    cpu = (time.process_time() - cpu_started) / epochs  # all threads, MLflow's async writer too
    if make_logger is not None:
        hook_seconds.append(timed.seconds / epochs)
    return {"seconds": seconds, "cpu_seconds": cpu, "images_per_second": count / seconds}


def _overhead_record(
    off: list[dict[str, float]],
    on: list[dict[str, float]],
    hook_seconds: list[float],
    **fields: Any,
) -> dict[str, Any]:
    """Medians of the alternated fits and the overhead three ways: wall, CPU, inside the hooks."""
    off_s, on_s = median([s["seconds"] for s in off]), median([s["seconds"] for s in on])
    off_cpu, on_cpu = (
        median([s["cpu_seconds"] for s in off]),
        median([s["cpu_seconds"] for s in on]),
    )
    hook = median(hook_seconds)
    return {
        "model": "baseline_cnn",
        "epochs_per_fit": fields["epochs"],
        "images": fields["count"],
        "store": "sqlite in a temporary folder",
        "epoch_seconds_off": off_s,
        "epoch_seconds_on": on_s,
        "overhead_percent_end_to_end": (on_s / off_s - 1) * 100,
        "cpu_seconds_off": off_cpu,
        "cpu_seconds_on": on_cpu,
        "overhead_percent_cpu": (on_cpu / off_cpu - 1) * 100,
        "hook_seconds_per_epoch": hook,
        "overhead_percent_in_hooks": hook / off_s * 100,
        "run_setup_seconds": fields["setup_seconds"],
        "metrics_logged": fields["metrics_logged"],
        "off": off,
        "on": on,
        "load_average": load_average(),
    }


def section_tracking(data: Any, *, pairs: int, epochs: int, limit: int | None) -> dict[str, Any]:
    """`pairs` alternated (off, on) fits of baseline_cnn, `epochs` each, after a discarded
    warm-up fit, all logging into one MLflow run on a throwaway sqlite store."""
    from mnr import tracking

    with _temporary_store():
        tracking.configure_tracking()
        started = time.perf_counter()
        with tracking.tracked_run(
            experiment="speed-benchmark", run_name="tracking-overhead"
        ) as run_id:
            config = seed_config("baseline_cnn", f"train.epochs={epochs}")
            tracking.log_params(run_id, config)
            tracking.log_dataset(
                run_id, name="builtin/train", digest=data.digest, source=str(data.paths.train)
            )
            # once per run, not per epoch (store creation included)
            setup_seconds = time.perf_counter() - started
            count = limit or len(data.train_images)
            arrays = {
                "train_images": torch.from_numpy(data.train_images[:count]),
                "train_labels": torch.from_numpy(data.train_labels[:count]),
                "val_images": torch.from_numpy(data.val_images),
                "val_labels": torch.from_numpy(data.val_labels),
            }
            hook_seconds: list[float] = []

            def run(tracked: bool) -> dict[str, float]:
                make_logger = partial(tracking.MlflowLogger, run_id) if tracked else None
                return _fit_per_epoch(
                    config,
                    arrays,
                    layout=data.layout,
                    epochs=epochs,
                    make_logger=make_logger,
                    hook_seconds=hook_seconds,
                )

            log(
                f"tracking: {pairs} x (off, on) fits of {epochs} epoch(s) each, baseline_cnn, {count} images"
            )
            run(False)  # warm-up, discarded: a process's first fit pays one-off allocation costs
            hook_seconds.clear()
            off, on = [], []
            for index in range(pairs):
                order = (False, True) if index % 2 == 0 else (True, False)
                for tracked in order:
                    (on if tracked else off).append(run(tracked))
        logged = tracking.client().get_metric_history(run_id, "val/acc")
        result = _overhead_record(
            off,
            on,
            hook_seconds,
            epochs=epochs,
            count=count,
            setup_seconds=setup_seconds,
            metrics_logged=len(logged),
        )
        log(
            f"  off {result['epoch_seconds_off']:.2f} s/epoch, on {result['epoch_seconds_on']:.2f} s/epoch "
            f"({result['overhead_percent_end_to_end']:+.1f} %), "
            f"hooks {result['hook_seconds_per_epoch'] * 1e3:.1f} ms/epoch ({result['overhead_percent_in_hooks']:.2f} %)"
        )
        return result
