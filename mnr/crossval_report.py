"""What a cross-validation leaves (`CvResult`, the out-of-fold table), what it records on its
parent run, and the folds' ensemble as one model. `mnr.crossval` runs the folds and imports this."""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnr import metrics as pitch_metrics
from mnr import tracking
from mnr.config import ExperimentConfig, to_dict
from mnr.data import TrainingData
from mnr.display import result_html, result_repr

__all__ = ["CvResult", "FoldRun", "fold_summary", "log_cv", "log_ensemble", "oof_table"]


def fold_summary(values: list[float], name: str) -> dict[str, float]:
    """`cv/<name>_mean` and `cv/<name>_std` (sample standard deviation; 0 for one fold): the one
    naming of a cross-validated score, for `mnr cv`'s folds and `mnr tune --folds`'s trials."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {f"cv/{name}_mean": float(np.mean(values)), f"cv/{name}_std": std}


@dataclass
class FoldRun:
    """One fold of one repeat: its run, the images it left out and what it predicted for them."""

    repeat: int
    fold: int
    run_id: str
    val_idx: np.ndarray
    probabilities: np.ndarray  # len(val_idx) x 88, of the fold's best weights
    metrics: dict[str, float]  # its best weights' best/val_... metrics
    reused: bool = False  # finished in an earlier call, not trained by this one


@dataclass
class CvResult:
    """What `cross_validate` leaves: the parent run, the folds, the summary and the ensemble."""

    parent_run_id: str
    folds: list[FoldRun]
    summary: dict[str, float]
    oof_probabilities: np.ndarray  # N x 88 over the training folder, averaged over repeats
    labels: np.ndarray
    filenames: list[str]
    registered_version: Any = None
    test_metrics: dict[str, float] = field(default_factory=dict)

    def _rows(self) -> dict[str, Any]:
        shown = ("cv/accuracy_mean", "cv/accuracy_std", "cv/oof_accuracy", "cv/semitone_mae_mean")
        return {
            "parent_run_id": self.parent_run_id,
            "folds": len(self.folds),
            **{key: self.summary.get(key) for key in shown},
            "test/accuracy": self.test_metrics.get("test/accuracy"),
            "registered version": getattr(self.registered_version, "version", None),
        }

    def __repr__(self) -> str:
        return result_repr("CvResult", self._rows())

    def _repr_html_(self) -> str:
        return result_html("mnr.cv", self._rows(), run_id=self.parent_run_id)


def oof_table(
    filenames: list[str], labels: np.ndarray, probabilities: np.ndarray, *, top_k: int = 3
) -> str:
    """The out-of-fold predictions as CSV: one row per training image, with its true and
    predicted key (labels and note names), the predicted key's probability and the top `top_k`."""
    from mnr.labels import label_to_name, top_k_columns, top_k_table

    table = top_k_table(probabilities, top_k, decimals=6)
    columns = top_k_columns(top_k)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["filename", "label", "note", "predicted", "predicted_note", "probability"]
    writer.writerow(header + columns)
    for row, (name, label) in enumerate(zip(filenames, labels, strict=True)):
        predicted = [
            table[column][row] for column in columns[:3]
        ]  # top1's label, note, probability
        cells = [table[column][row] for column in columns]
        writer.writerow([name, int(label), label_to_name(int(label)), *predicted, *cells])
    return buffer.getvalue()


def _folds_table(result: CvResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = sorted({key for fold in result.folds for key in fold.metrics})
    writer.writerow(["repeat", "fold", "run_id", "images", *names])
    for fold in result.folds:
        values = [f"{fold.metrics[n]:.4f}" if n in fold.metrics else "" for n in names]
        writer.writerow([fold.repeat, fold.fold, fold.run_id, len(fold.val_idx), *values])
    return buffer.getvalue()


def _test_scores(
    models: list[torch.nn.Module], data: TrainingData, *, tta: int
) -> dict[str, float]:
    """The ensemble's test metrics, and the folds' own accuracy on the test split (mean, std)."""
    from mnr.predict.predictor import Predictor

    images, labels = data.test_images, data.test_labels
    ensemble = Predictor(models, tta=tta).probabilities(images)
    scores = pitch_metrics.evaluate_predictions(labels, ensemble.argmax(1), ensemble)
    metrics = {f"test/{k}": v for k, v in scores.items() if k in pitch_metrics.HEADLINE}
    singles = [
        pitch_metrics.accuracy(labels, Predictor(m).probabilities(images).argmax(1)) for m in models
    ]
    metrics["test/fold_accuracy_mean"] = float(np.mean(singles))
    metrics["test/fold_accuracy_std"] = float(np.std(singles, ddof=1)) if len(singles) > 1 else 0.0
    return metrics


def log_cv(
    result: CvResult,
    *,
    config: ExperimentConfig,
    data: TrainingData,
    models: list[torch.nn.Module] | None,
    tta: int,
) -> None:
    """The summary metrics, the out-of-fold predictions with their confusion matrix and
    per-class table, the per-fold table, and (with a labelled test split) the ensemble's score."""
    parent = result.parent_run_id
    if models is not None and data.test_images is not None:
        result.test_metrics = _test_scores(models, data, tta=tta)
    tracking.log_metrics(parent, {**result.summary, **result.test_metrics})
    predicted = result.oof_probabilities.argmax(1)
    tracking.log_text(
        parent,
        oof_table(result.filenames, result.labels, result.oof_probabilities),
        "oof_predictions.csv",
    )
    tracking.log_text(parent, _folds_table(result), "folds.csv")
    table = pitch_metrics.per_class_table(result.labels, predicted)
    tracking.log_text(
        parent, pitch_metrics.format_per_class_table(table), "oof_per_class_accuracy.csv"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cm = pitch_metrics.confusion_matrix(result.labels, predicted)
        accuracy = result.summary["cv/oof_accuracy"]
        title = f"{config.model.name}: out-of-fold predictions of {len(result.folds)} folds, accuracy {accuracy:.4f}"
        image = pitch_metrics.plot_confusion_matrix(
            cm, Path(tmp) / "oof_confusion_matrix.png", title=title
        )
        tracking.log_artifact(parent, image)
    mean, std = result.summary.get("cv/accuracy_mean"), result.summary.get("cv/accuracy_std")
    text = f"{len(result.folds)} folds of {config.model.name}: val accuracy {mean:.4f} +- {std:.4f}"
    text += f", out-of-fold {accuracy:.4f}"
    if result.test_metrics:
        text += f"; the ensemble's test accuracy {result.test_metrics['test/accuracy']:.4f}"
    tracking.set_tags(parent, {tracking.DESCRIPTION_TAG: text + "."})


def log_ensemble(
    result: CvResult,
    models: list[torch.nn.Module],
    *,
    config: ExperimentConfig,
    name: str,
    tta: int,
) -> Any:
    """Log the folds' ensemble (one pyfunc, every fold's weights, probabilities averaged) on the
    parent run and register it as a new version of `name`, whose tags list the fold runs."""
    from mnr.predict.logged import log_predictor
    from mnr.tracking import model_registry

    fold_runs = ",".join(fold.run_id for fold in result.folds)
    info = log_predictor(
        models,
        config=to_dict(config),
        run_id=result.parent_run_id,
        name=f"{config.model.name}-cv{len(models)}",
        tta=tta,
        tags={"mnr.fold_runs": fold_runs},
    )
    if result.test_metrics:
        tracking.log_metrics(result.parent_run_id, result.test_metrics, model_id=info.model_id)
    description = (
        f"Ensemble of the {len(models)} fold models of cross-validation run {result.parent_run_id} "
        f"({config.model.name}, test-time shifts: {tta}); fold runs: {fold_runs}."
    )
    return model_registry.register_logged(
        info.model_id,
        name=name,
        tags={"mnr.cv_run": result.parent_run_id, "mnr.fold_runs": fold_runs, "mnr.tta": str(tta)},
        description=description,
    )
