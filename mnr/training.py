"""One training run: build the model, fit it with the callbacks the caller chose, record it.

`run_training` is what `mnr train`, `mlflow run .`, each Optuna trial, each fold of `mnr cv`
and each torchrun rank call; they differ only in the callbacks and the `RunRecord` they pass
(`default_callbacks` is `mnr train`'s set). The data comes validated and decoded from
`load_data`, which checks everything a user can get wrong (model name, data folder) before it
spends compute. Nothing is left half-done: an interrupt keeps a checkpoint and marks the run
KILLED, a crash marks it FAILED, and `--resume` picks either up. What the run writes to MLflow
is `mnr.run_record`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mnr import tracking
from mnr.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, StopAtTarget
from mnr.config import ExperimentConfig
from mnr.console import note
from mnr.data import TrainingData, load_training_data
from mnr.data.layout import FigureLayout
from mnr.device import resolve_device, seed_everything
from mnr.display import result_html, result_repr
from mnr.distributed import is_main_process
from mnr.engine import Callback, fit
from mnr.errors import MnrError
from mnr.models import create_model, import_model_module, is_model, takes_in_chans
from mnr.monitor import Monitor
from mnr.resume import Resume
from mnr.run_record import FinalEvaluation, RunRecord

__all__ = [
    "TrainResult",
    "build_model",
    "check_model",
    "checkpoint_callback",
    "default_callbacks",
    "load_data",
    "run_training",
    "stopping_callbacks",
]


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_id: str | None
    status: str
    history: list[dict[str, float]]
    final_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    model_uri: str | None = None
    stop_reason: str = ""  # why training stopped before train.epochs, if it did
    model: torch.nn.Module | None = None  # the best weights (on the CPU), for callers that go on

    @property
    def best_val_acc(self) -> float:
        best = Monitor("val/acc", "max").best_of(
            h["val/acc"] for h in self.history if "val/acc" in h
        )
        return 0.0 if best is None else best

    def _rows(self) -> dict[str, Any]:
        shown = ("best/val_accuracy", "test/accuracy", "test/semitone_mae")
        return {
            "run_id": self.run_id,
            "status": self.status,
            "epochs": len(self.history),
            **{key: self.final_metrics.get(key) for key in shown},
            "model_uri": self.model_uri,
            "stopped": self.stop_reason or None,
        }

    def __repr__(self) -> str:
        return result_repr("TrainResult", self._rows())

    def _repr_html_(self) -> str:
        return result_html(f"mnr.train: run {self.status}", self._rows(), run_id=self.run_id)


def check_model(config: ExperimentConfig) -> None:
    """Fail on an unknown model name (with close matches) before any data is read."""
    if config.model.module:
        import_model_module(config.model.module)
    if not is_model(config.model.name):
        create_model(config.model.name)  # raises MnrError with close matches


def build_model(config: ExperimentConfig, *, layout: FigureLayout | None = None) -> torch.nn.Module:
    """Create the configured model for images read with `layout` (its channels come from it).

    The name was checked by `load_data`; a plugin module is imported again here because a tuning
    worker process builds models from data it did not load.
    """
    if config.model.module:
        import_model_module(config.model.module)
    return create_model(
        config.model.name,
        num_classes=88,
        input_size=tuple(config.data.input_size),
        layout=layout,
        pretrained=config.model.pretrained,
        **config.model.kwargs,
    )


def load_data(config: ExperimentConfig, *, progress: bool = True) -> TrainingData:
    """Validate and decode the configured dataset (the built-in one when no path is set).

    `data.channels: auto` reads one value channel where a known colormap fits, unless the model
    cannot be built for it (a model whose function takes no `in_chans` reads RGB).
    """
    check_model(config)
    data = config.data
    channels = data.channels
    if channels == "auto" and not takes_in_chans(config.model.name):
        channels = "rgb"  # the model cannot be built for one value channel
    return load_training_data(
        data.path,
        input_size=tuple(data.input_size),
        channels=channels,
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        workers=data.workers,
        progress=progress,
    )


def stopping_callbacks(config: ExperimentConfig) -> list[Callback]:
    """What the config says ends a run early: `train.target` and `train.early_stopping`."""
    callbacks: list[Callback] = []
    if config.train.target is not None:
        # first, so that a stop by another callback in the same epoch names that one
        monitor = Monitor(config.train.monitor, config.train.monitor_mode)
        callbacks.append(StopAtTarget(monitor, config.train.target))
    stop = config.train.early_stopping
    if stop.enabled:
        callbacks.append(
            EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                mode=stop.mode,
                min_delta=stop.min_delta,
            )
        )
    return callbacks


def checkpoint_callback(config: ExperimentConfig) -> ModelCheckpoint:
    """Checkpoints in the run's folder, the best by `train.monitor`; restored at the end."""
    return ModelCheckpoint(monitor=config.train.monitor, mode=config.train.monitor_mode)


def default_callbacks(
    config: ExperimentConfig, data: TrainingData, *, progress: bool = True
) -> list[Callback]:
    """`mnr train`'s callbacks: stopping as configured, the progress lines, checkpoints (and the
    best weights restored at the end), and the best weights' evaluation on `data`."""
    shown: list[Callback] = [ProgressBar(desc=config.model.name)] if progress else []
    return [
        *shown,
        *stopping_callbacks(config),
        checkpoint_callback(config),
        FinalEvaluation(data),  # after the checkpoint callback, which restores the best weights
    ]


# `mnr train`'s record: a top-level run, from `mnr train`
TRAIN_RECORD = RunRecord()


def run_training(
    config: ExperimentConfig,
    data: TrainingData,
    *,
    callbacks: Sequence[Callback] | None = None,
    record: RunRecord | None = TRAIN_RECORD,
    resume: Resume | None = None,
) -> TrainResult:
    """Build the configured model, fit it on `data` with `callbacks`, and record it (see module
    docstring). `data` is `load_data(config)`'s, or a split of it.

    `callbacks=None` is `default_callbacks(config, data)`. `record` says how MLflow records the
    run (`None`: not at all; a caller may still log through its own callbacks). `resume`
    (`mnr.resume.load_resume`) continues its checkpoint in the same run, with `resume.config` in
    place of `config`: the run's own, changed only where `load_resume` allowed.
    """
    if resume is not None:
        config = resume.config
    if callbacks is None:
        callbacks = default_callbacks(config, data)
    if tuple(data.input_size) != tuple(config.data.input_size):
        raise MnrError(
            f"data decoded at {data.input_size} but data.input_size is {config.data.input_size}"
        )
    if not is_main_process():
        record = None  # rank 0 records the run
    # weights are initialised from the seed
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    model = build_model(config, layout=data.layout)
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    checkpoint = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint)), None)
    opened = (
        record.opened(config, data, resume=resume)
        if record is not None
        else contextlib.nullcontext(resume.run_id if resume is not None else None)
    )
    run_id = None
    try:
        with opened as run_id:
            run_id = _shared_run_id(run_id)
            chosen = list(callbacks)
            if record is not None:
                # the curves' logger goes after the checkpoint, so that a run killed between the
                # two has not logged an epoch its resume trains again, and before the rest, so
                # that an epoch a later callback stops on (pruning) is logged
                at = chosen.index(checkpoint) + 1 if checkpoint is not None else 0
                chosen.insert(at, tracking.MlflowLogger(run_id))
            try:
                fitted = fit(
                    model,
                    config=config,
                    train_images=torch.from_numpy(data.train_images),
                    train_labels=torch.from_numpy(data.train_labels),
                    val_images=torch.from_numpy(data.val_images),
                    val_labels=torch.from_numpy(data.val_labels),
                    callbacks=chosen,
                    resume=resume.state if resume is not None else None,
                    device=device,
                    run_id=run_id,
                )
            except BaseException:
                if record is not None:
                    record.keep_last_checkpoint(run_id, checkpoint)
                raise
            model_uri = None
            if record is not None:
                model_uri = record.finish(
                    run_id, fitted, model=model, config=config, data=data, checkpoint=checkpoint
                )
    except KeyboardInterrupt:
        if record is not None and checkpoint is not None:  # else there is nothing to resume
            note(f"run {run_id} marked KILLED; resume with: mnr train --resume {run_id}")
        raise
    return TrainResult(
        run_id=run_id if record is not None else None,
        status="FINISHED",
        history=fitted.history,
        final_metrics=fitted.final_metrics,
        checkpoint_dir=checkpoint.dirpath if checkpoint is not None else None,
        model_uri=model_uri,
        stop_reason=fitted.stop_reason,
        model=model,
    )


def _shared_run_id(run_id: str | None) -> str | None:
    """Under torchrun every rank learns rank 0's run id, for the checkpoint folder."""
    if not dist.is_initialized():
        return run_id
    shared = [run_id]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]
