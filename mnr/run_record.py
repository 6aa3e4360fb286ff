"""The MLflow record of one training run: `RunRecord`, and the `FinalEvaluation` callback.

`RunRecord` opens the run (tags, description, params, dataset, the figure layout read), gives
the per-epoch curves' logger, keeps the last checkpoint of a run that fails or is interrupted,
and at the end logs the model, the headline scores and the final description. `FinalEvaluation`
scores the best weights on the validation and held-out splits, with their tables and pictures.
`mnr.training.run_training` uses both; a caller chooses them like any other callback.

Not in `mnr.tracking`, which must not import `mnr.predict` (the logged model is
`mnr.predict.logged`'s format, and the predictor reads runs through `mnr.tracking`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mnr import metrics as pitch_metrics
from mnr import tracking
from mnr.callbacks import ModelCheckpoint
from mnr.config import ExperimentConfig
from mnr.data import TrainingData
from mnr.data.manifest import instrument_metrics, instrument_table
from mnr.engine import Callback, FitContext, FitResult, evaluate
from mnr.errors import MnrError
from mnr.monitor import best_name
from mnr.resume import Resume
from mnr.top_losses import plot_top_losses

__all__ = [
    "FinalEvaluation",
    "RunRecord",
    "describe_run",
    "final_evaluation",
    "log_layout",
    "log_model",
]


@dataclass(frozen=True)
class RunRecord:
    """How a training run is recorded in MLflow: under which parent, with which extra tags, and
    from which command (`mlflow.source.name`). `run_training(record=None)` records nothing."""

    parent_run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str = "mnr train"

    @contextmanager
    def opened(
        self, config: ExperimentConfig, data: TrainingData, *, resume: Resume | None = None
    ) -> Iterator[str]:
        """Start (or, resuming, reopen) the run and log what is known before training: params,
        dataset, layout and the options a resume changed. Yields the run id; the run ends
        FINISHED, KILLED on an interrupt or FAILED on an error (`tracking.tracked_run`)."""
        resumed = resume is not None
        # a resumed run keeps its name, unless the resume changes it
        keep_name = resumed and "tracking.run_name" not in resume.changes
        with tracking.tracked_run(
            experiment=config.tracking.experiment,
            run_name=None if keep_name else run_name(config),
            tags=_run_tags(config, data, resumed=resumed, extra=self.tags),
            parent_run_id=self.parent_run_id,
            run_id=resume.run_id if resumed else None,
            description=describe_run(config, data),
            source=self.source,
            system_metrics=config.tracking.system_metrics,
        ) as run_id:
            tracking.log_params(run_id, config)
            tracking.log_dataset(
                run_id,
                name=f"{data.paths.train.parent.name}/{data.paths.train.name}",
                digest=data.digest,
                source=str(data.paths.train),
            )
            log_layout(run_id, data, input_size=tuple(config.data.input_size))
            if resumed and resume.changes:
                tracking.log_resume_changes(run_id, resume.changes)
            yield run_id

    def finish(
        self,
        run_id: str,
        fitted: FitResult,
        *,
        model: torch.nn.Module,
        config: ExperimentConfig,
        data: TrainingData,
        checkpoint: ModelCheckpoint | None,
    ) -> str | None:
        """After a finished fit: the best checkpoint, the model (`log_model`), the headline
        scores and the description with the scores in it. Returns the model's URI, if logged."""
        if (
            checkpoint is not None
            and config.tracking.checkpoint_artifacts
            and checkpoint.best_path.is_file()
        ):
            tracking.log_artifact(run_id, checkpoint.best_path, artifact_path="checkpoints")
        predictor_id, uri = None, None
        if config.tracking.log_model:
            predictor_id, uri = log_model(model.cpu(), config, run_id=run_id)
        headline = {
            k: v
            for k, v in fitted.final_metrics.items()
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
        tracking.set_tags(run_id, {tracking.DESCRIPTION_TAG: describe_run(config, data, fitted)})
        return uri

    @staticmethod
    def keep_last_checkpoint(run_id: str, checkpoint: ModelCheckpoint | None) -> None:
        """On an interrupt or failure, upload the last good checkpoint so any machine can resume."""
        if checkpoint is None or checkpoint.dirpath is None or not checkpoint.last_path.is_file():
            return
        try:
            tracking.log_artifact(run_id, checkpoint.last_path, artifact_path="checkpoints")
        except MnrError:
            pass  # the local file is still there; resume uses it first


class FinalEvaluation(Callback):
    """At the end of a finished fit, score the model on the validation and held-out splits of
    `data` (`final_evaluation`) into the fit's `final_metrics`, with the tables and pictures
    logged to its run. Place it after the `ModelCheckpoint` that restores the best weights."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        if status == "FINISHED" and ctx.is_main:
            ctx.final_metrics.update(
                final_evaluation(
                    ctx.raw_model, self.data, ctx.config, run_id=ctx.run_id, device=ctx.device
                )
            )


def run_name(config: ExperimentConfig) -> str:
    """`tracking.run_name`, else model, lr, batch size and epochs: `bn_cnn-lr0.005-b64-e45`."""
    return config.tracking.run_name or (
        f"{config.model.name}-lr{config.optim.lr:g}-b{config.train.batch_size}-e{config.train.epochs}"
    )


def describe_run(
    config: ExperimentConfig, data: TrainingData, fitted: FitResult | None = None
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
    if fitted is None:
        return text + "."
    metrics = fitted.final_metrics
    scores = [
        f"{key} {metrics[key]:.4f}"
        for key in ("best/val_accuracy", "test/accuracy", "test/semitone_mae")
        if key in metrics
    ]
    stopped = f" ({fitted.stop_reason})" if fitted.stop_reason else ""
    return (
        f"{text}; ran {len(fitted.history)}{stopped}: "
        + (", ".join(scores) or "no evaluation")
        + "."
    )


def final_evaluation(
    model: torch.nn.Module,
    data: TrainingData,
    config: ExperimentConfig,
    *,
    run_id: str | None,
    device: torch.device,
) -> dict[str, float]:
    """Val and held-out test metrics of the best weights (`best/val_...`, `test/...`); the confusion
    matrix, the top losses and the per-class and per-octave tables of the last set, as artifacts."""
    results: dict[str, float] = {}
    sets = [("val", data.val_images, data.val_labels)]
    if data.test_images is not None and data.test_labels is not None:
        sets.append(("test", data.test_images, data.test_labels))
    for name, images, labels in sets:
        _, logits = evaluate(
            model,
            torch.from_numpy(images),
            torch.from_numpy(labels),
            batch_size=config.train.eval_batch_size,
            device=device,
        )
        probs = torch.softmax(logits, 1).numpy()
        preds = probs.argmax(1)
        summary = pitch_metrics.evaluate_predictions(labels, preds, probs)
        # the best weights' scores: best/val_... (one point beside the val/ curves), test/...
        prefix = best_name("val/") if name == "val" else f"{name}/"
        results.update({f"{prefix}{key}": value for key, value in summary.items()})
        if name == "test" and data.test_files is not None:
            table = instrument_table(data.paths.manifest, "test", data.test_files, labels, preds)
            results.update(instrument_metrics(table, prefix="test/"))
            if run_id is not None and table:
                text = pitch_metrics.format_group_table(table, group="instrument")
                tracking.log_text(run_id, text, "per_instrument_accuracy.csv")
        if run_id is not None and name == sets[-1][0]:
            with tempfile.TemporaryDirectory() as tmp:
                cm = pitch_metrics.confusion_matrix(labels, preds)
                image = pitch_metrics.plot_confusion_matrix(
                    cm,
                    Path(tmp) / "confusion_matrix.png",
                    title=f"{config.model.name} on {name}: accuracy {summary['accuracy']:.4f}",
                )
                tracking.log_artifact(run_id, image)
                top = Path(tmp) / "top_losses.png"  # decodes nothing: the images are in memory
                plot_top_losses(
                    images, labels, probs, title=f"{config.model.name} on {name}", path=top
                )
                tracking.log_artifact(run_id, top)
                table = pitch_metrics.format_per_class_table(
                    pitch_metrics.per_class_table(labels, preds)
                )
                tracking.log_text(run_id, table, "per_class_accuracy.csv")
                tracking.log_text(
                    run_id,
                    pitch_metrics.format_per_octave_table(summary),
                    "per_octave_accuracy.csv",
                )
    return results


def _run_tags(
    config: ExperimentConfig, data: TrainingData, *, resumed: bool, extra: Mapping[str, str]
) -> dict[str, str]:
    tags = {
        "model": config.model.name,
        "data.digest": data.digest,
        "data.source": str(data.paths.train),
        "mnr.resumed": "true" if resumed else "false",
    }
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update(extra)
    return tags


def log_layout(run_id: str, data: TrainingData, *, input_size: tuple[int, int]) -> None:
    """The figure layout the run reads its images with: params, layout/layout.json, a preview."""
    from mnr.data.preview import write_preview

    layout = data.layout
    params = {f"layout.{key}": value for key, value in layout.key().items()}
    tracking.log_new_params(run_id, {**params, "layout.colormap": layout.colormap})
    tracking.log_text(run_id, json.dumps(data.report.to_dict(), indent=2), "layout/layout.json")
    with tempfile.TemporaryDirectory() as tmp:
        preview = Path(tmp) / "layout_preview.png"
        key = (data.digest, json.dumps(layout.key(), sort_keys=True), tuple(input_size))
        if key in _PREVIEWS:
            preview.write_bytes(_PREVIEWS[key])
        else:
            image = data.paths.train / data.sample_file
            write_preview(image, layout, preview, input_size=input_size)
            _PREVIEWS[key] = preview.read_bytes()
        tracking.log_artifact(run_id, preview, artifact_path="layout")


# the layout preview of each (data, layout, input size) drawn in this process: a study's trials
# all read the data one way, and drawing it costs ~0.3 s a trial (about 5 % of a small trial)
_PREVIEWS: dict[tuple[str, str, tuple[int, ...]], bytes] = {}


def log_model(model: torch.nn.Module, config: ExperimentConfig, *, run_id: str) -> tuple[str, str]:
    """Log the final model: the image-taking pyfunc predictor, and the raw torch module.

    `model` holds the best weights. Both are named after the architecture (`bn_cnn`, and
    `bn_cnn-torch`). The predictor (`mnr.predict.logged`) is what is registered (with
    `tracking.register`) and what `mnr predict` and `mlflow models serve` load; the raw module
    stays for `mlflow.pytorch.load_model`. Returns the predictor's model id, and the URI to
    use it by: its registered version, else the logged model.
    """
    from mnr.config import to_dict
    from mnr.predict.logged import log_predictor
    from mnr.tracking import model_registry

    height, width = config.data.input_size
    # batch 1 would pin the exported batch size
    example = np.zeros((2, model.input_config.in_chans, height, width), dtype=np.float32)
    model.eval()
    predictor = log_predictor(model, config=to_dict(config), run_id=run_id, name=config.model.name)
    tracking.log_pytorch_model(
        model, run_id=run_id, input_example=example, name=f"{config.model.name}-torch"
    )
    uri = f"models:/{predictor.model_id}"
    if config.tracking.register:
        version = model_registry.register_logged(
            predictor.model_id,
            name=config.tracking.register,
            description=f"{config.model.name} from run {run_id}",
        )
        uri = f"models:/{config.tracking.register}/{version.version}"
    return predictor.model_id, uri
