"""One training run end to end: config -> data -> model -> `fit` -> MLflow.

`run_training` is what `mnr train`, `mlflow run .`, each Optuna trial and each torchrun rank
call. It checks everything a user can get wrong (tracking store, model name, data folder)
before it spends compute, and it leaves nothing behind half-done: an interrupt saves a
checkpoint and marks the run KILLED, a crash marks it FAILED, and `--resume` picks either up.
What the run writes to MLflow besides its curves (tags, layout, final scores, the logged model)
is `mnr.run_record`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mnr import metrics as pitch_metrics
from mnr import run_record, settings, tracking
from mnr.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, StopAtTarget
from mnr.checkpoint import load_checkpoint
from mnr.config import ExperimentConfig
from mnr.console import note
from mnr.data import TrainingData, load_training_data
from mnr.data.layout import FigureLayout
from mnr.display import result_html, result_repr
from mnr.engine import Callback, fit, resolve_device, seed_everything
from mnr.errors import MnrError
from mnr.models import create_model, import_model_module, is_model, takes_in_chans
from mnr.monitor import Monitor
from mnr.resume import Resume

__all__ = [
    "TrainResult",
    "build_model",
    "check_model",
    "load_data",
    "run_training",
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
    """Create the configured model for images read with `layout` (its channels come from it)."""
    check_model(config)
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


def _run_name(config: ExperimentConfig) -> str:
    return config.tracking.run_name or (
        f"{config.model.name}-lr{config.optim.lr:g}-b{config.train.batch_size}-e{config.train.epochs}"
    )


def _callbacks(
    config: ExperimentConfig, *, run_id: str | None, checkpoint_dir: Path | None, progress: bool
) -> list[Callback]:
    callbacks: list[Callback] = []
    if config.train.target is not None:
        # first, so that a stop by another callback in the same epoch names that one
        monitor = Monitor(config.train.monitor, config.train.monitor_mode)
        callbacks.append(StopAtTarget(monitor, config.train.target))
    if progress:
        callbacks.append(ProgressBar(desc=config.model.name))
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
    if run_id is not None:
        callbacks.append(tracking.MlflowLogger(run_id))
    if checkpoint_dir is not None:
        callbacks.append(
            ModelCheckpoint(
                checkpoint_dir,
                monitor=config.train.monitor,
                mode=config.train.monitor_mode,
                extra={"run_id": run_id},
            )
        )
    return callbacks


def run_training(
    config: ExperimentConfig,
    *,
    resume: Resume | None = None,
    data: TrainingData | None = None,
    parent_run_id: str | None = None,
    extra_callbacks: Sequence[Callback] = (),
    extra_tags: dict[str, str] | None = None,
    track: bool = True,
    save_checkpoints: bool = True,
    final_evaluation: bool = True,
    progress: bool = True,
    source: str = "mnr train",
) -> TrainResult:
    """Train one model as configured and record it in MLflow (see module docstring).

    `data` lets a caller that trains many times (tuning) decode the dataset once. `resume`
    (`mnr.resume.load_resume`) continues its checkpoint in the same run, with `resume.config`
    in place of `config`: the run's own, changed only where `load_resume` allowed.
    """
    state, run_id = None, None
    if resume is not None:
        state, run_id, config = resume.state, resume.run_id, resume.config
    # a resumed run keeps its name, unless the resume changes it
    keep_name = run_id is not None and "tracking.run_name" not in resume.changes
    is_main = (dist.get_rank() if dist.is_initialized() else 0) == 0
    track = track and is_main
    if track:
        tracking.configure_tracking(check=True)  # an unreachable server fails here, before any work
    check_model(config)
    if data is None:
        data = load_data(config, progress=progress and is_main)
    # weights are initialised from the seed
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    model = build_model(config, layout=data.layout)
    if tuple(data.input_size) != tuple(config.data.input_size):
        raise MnrError(
            f"data decoded at {data.input_size} but data.input_size is {config.data.input_size}"
        )

    run = (
        tracking.tracked_run(
            experiment=config.tracking.experiment,
            run_name=None if keep_name else _run_name(config),
            tags=run_record.run_tags(config, data, resumed=state is not None, extra=extra_tags),
            parent_run_id=parent_run_id,
            run_id=run_id,
            description=describe_run(config, data),
            source=source,
            system_metrics=config.tracking.system_metrics,
        )
        if track
        else contextlib.nullcontext(run_id)
    )
    try:
        with run as run_id:
            if track:
                tracking.log_params(run_id, config)
                tracking.log_dataset(
                    run_id,
                    name=f"{data.paths.train.parent.name}/{data.paths.train.name}",
                    digest=data.digest,
                    source=str(data.paths.train),
                )
                run_record.log_layout(run_id, data, input_size=tuple(config.data.input_size))
                if resume is not None and resume.changes:
                    tracking.log_resume_changes(run_id, resume.changes)
            run_id = _shared_run_id(run_id)
            checkpoint_dir = None
            if save_checkpoints:
                checkpoint_dir = settings.MNR_CHECKPOINT_DIR.path() / (
                    run_id or f"local-{os.getpid()}"
                )
            try:
                return _train(
                    model,
                    config,
                    data,
                    run_id=run_id if track else None,
                    state=state,
                    checkpoint_dir=checkpoint_dir,
                    extra_callbacks=extra_callbacks,
                    final_evaluation=final_evaluation and is_main,
                    progress=progress and is_main,
                )
            except BaseException:
                if track:
                    run_record.keep_last_checkpoint(run_id, checkpoint_dir)
                raise
    except KeyboardInterrupt:
        if track and save_checkpoints:  # trials keep no checkpoints, so they have nothing to resume
            note(f"run {run_id} marked KILLED; resume with: mnr train --resume {run_id}")
        raise


def describe_run(
    config: ExperimentConfig, data: TrainingData, result: TrainResult | None = None
) -> str:
    """The run's description in the MLflow UI: model, data, epochs and, once known, the score."""
    layout = data.layout
    read = (
        f"{layout.colormap} read back to one value channel" if layout.channels == "value" else "RGB"
    )
    text = (
        f"{config.model.name} on {data.paths.train} ({len(data.train_labels):,} training and "
        f"{len(data.val_labels):,} validation images; {read}), {config.optim.name} lr {config.optim.lr:g}, "
        f"batch {config.train.batch_size}, {config.train.epochs} epochs"
    )
    if result is None:
        return text + "."
    metrics = result.final_metrics
    scores = [
        f"{key} {metrics[key]:.4f}"
        for key in ("best/val_accuracy", "test/accuracy", "test/semitone_mae")
        if key in metrics
    ]
    stopped = f" ({result.stop_reason})" if result.stop_reason else ""
    return (
        f"{text}; ran {len(result.history)}{stopped}: "
        + (", ".join(scores) or "no evaluation")
        + "."
    )


def _shared_run_id(run_id: str | None) -> str | None:
    """Under torchrun every rank learns rank 0's run id, for the checkpoint folder."""
    if not dist.is_initialized():
        return run_id
    shared = [run_id]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _train(
    model: torch.nn.Module,
    config: ExperimentConfig,
    data: TrainingData,
    *,
    run_id: str | None,
    state: dict[str, Any] | None,
    checkpoint_dir: Path | None,
    extra_callbacks: Sequence[Callback],
    final_evaluation: bool,
    progress: bool,
) -> TrainResult:
    """Fit, reload the best weights, evaluate them and log the results to run `run_id` (if any)."""
    callbacks = _callbacks(
        config, run_id=run_id, checkpoint_dir=checkpoint_dir, progress=progress
    ) + list(extra_callbacks)
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    fitted = fit(
        model,
        config=config,
        train_images=torch.from_numpy(data.train_images),
        train_labels=torch.from_numpy(data.train_labels),
        val_images=torch.from_numpy(data.val_images),
        val_labels=torch.from_numpy(data.val_labels),
        callbacks=callbacks,
        resume=state,
        device=device,
    )
    result = TrainResult(
        run_id=run_id,
        status="FINISHED",
        history=fitted.history,
        checkpoint_dir=checkpoint_dir,
        stop_reason=fitted.stop_reason,
    )
    checkpoint = next((cb for cb in callbacks if isinstance(cb, ModelCheckpoint)), None)
    if checkpoint is not None and checkpoint.best_path.is_file():
        model.load_state_dict(load_checkpoint(checkpoint.best_path)["model"])
    model = model.to(device)
    result.model = model
    if final_evaluation:
        result.final_metrics = run_record.final_evaluation(
            model, data, config, run_id=run_id, device=device
        )
    if run_id is not None:
        if (
            checkpoint is not None
            and config.tracking.checkpoint_artifacts
            and checkpoint.best_path.is_file()
        ):
            tracking.log_artifact(run_id, checkpoint.best_path, artifact_path="checkpoints")
        predictor_id = None
        if config.tracking.log_model:
            predictor_id, result.model_uri = run_record.log_model(
                model.cpu(), config, run_id=run_id
            )
        headline = {
            k: v
            for k, v in result.final_metrics.items()
            if k.split("/")[-1].removeprefix("val_") in pitch_metrics.HEADLINE
            or k.startswith("test/instrument/")
        }
        # linked to the logged predictor too, so the Models tab shows them beside it
        tracking.log_metrics(
            run_id,
            {**headline, "train/epochs_run": float(fitted.epochs)},
            step=fitted.epochs,
            model_id=predictor_id,
        )
        tracking.set_tags(run_id, {tracking.DESCRIPTION_TAG: describe_run(config, data, result)})
    return result
