"""`mnr evaluate`: pitch-aware metrics of a predictor on a labelled folder.

Unlike `mnr predict`, evaluation refuses partial data: every problem with the truth file or the
images is one `MnrError` listing them all, since a score on part of a test set would be silently
wrong. `evaluate_folder` computes the metrics and writes the confusion matrix, the top losses
and the per-class table; `format_evaluation` prints them; `log_evaluation` records them on a new
MLflow run. `plot_folder_top_losses` draws the top losses alone, for a notebook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnr.data.folder import ImageSet, raise_for_problems
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS, label_to_name
from mnr.predict.folder import FolderPredictions, list_images, predict_folder
from mnr.predict.predictor import Predictor
from mnr.top_losses import DEFAULT_COUNT, plot_top_losses

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Evaluation",
    "evaluate_folder",
    "format_evaluation",
    "labelled_images",
    "log_evaluation",
    "plot_folder_top_losses",
]


@dataclass
class Evaluation:
    """The metrics of a model on a labelled folder, and where its pictures were written."""

    model_uri: str
    folder: Path
    count: int
    metrics: dict[str, float]
    confusion_matrix_path: Path | None = None
    per_class_path: Path | None = None
    top_losses_path: Path | None = None
    run_id: str | None = None


def labelled_images(
    folder: str | os.PathLike, *, truth: str | os.PathLike | None = None
) -> ImageSet:
    """The labelled images of `folder` (its truth.txt, or `truth`), sorted; every problem with
    the truth file or the listed files is one `MnrError` listing them all."""
    image_set = list_images(folder, truth=truth)
    if image_set.labels is None:
        raise MnrError(
            f"{folder} has no truth.txt; pass --truth FILE to say which key each image is"
        )
    raise_for_problems(image_set.problems, what=str(image_set.truth_path))
    return image_set


def evaluate_folder(
    predictor: Predictor,
    folder: str | os.PathLike | ImageSet,
    *,
    model_uri: str,
    truth: str | os.PathLike | None = None,
    output_dir: str | os.PathLike = "evaluation",
    workers: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Pitch-aware metrics of `predictor` on a labelled folder, plus a confusion matrix image.

    The folder needs `truth.txt` (or `truth`). Every problem with the data (bad truth lines,
    missing or unreadable images) is an `MnrError` listing them all: a score on part of a test
    set would be silently wrong. Writes `confusion_matrix.png`, `top_losses.png` and
    `per_class_accuracy.csv` to `output_dir`.
    """
    from mnr import metrics as pitch_metrics

    image_set = folder if isinstance(folder, ImageSet) else labelled_images(folder, truth=truth)
    result = predict_folder(predictor, image_set, workers=workers, progress=progress)
    raise_for_problems(result.problems, what=f"evaluating on {image_set.root}")
    if result.labels is None:
        raise MnrError(
            f"{image_set.root} is not labelled; pass --truth FILE to say which key each image is"
        )
    predicted = result.predicted
    summary = pitch_metrics.evaluate_predictions(result.labels, predicted, result.probabilities)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cm = pitch_metrics.confusion_matrix(result.labels, predicted)
    image = pitch_metrics.plot_confusion_matrix(
        cm,
        out / "confusion_matrix.png",
        title=f"{model_uri} on {image_set.root.name}: accuracy {summary['accuracy']:.4f}",
    )
    top = out / "top_losses.png"
    _draw_top_losses(predictor, result, title=f"{model_uri} on {image_set.root.name}", path=top)
    table = out / "per_class_accuracy.csv"
    table.write_text(
        pitch_metrics.format_per_class_table(
            pitch_metrics.per_class_table(result.labels, predicted)
        )
    )
    return Evaluation(
        model_uri=model_uri,
        folder=image_set.root,
        count=len(result.filenames),
        metrics=summary,
        confusion_matrix_path=image,
        per_class_path=table,
        top_losses_path=top,
    )


def plot_folder_top_losses(
    predictor: Predictor,
    folder: str | os.PathLike | ImageSet,
    *,
    truth: str | os.PathLike | None = None,
    n: int = DEFAULT_COUNT,
    path: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Figure:
    """The `n` images of a labelled folder that `predictor` gets most confidently wrong, as it
    reads them (`mnr.top_losses.plot_top_losses`); saved to `path` when given. The folder is
    checked as `evaluate_folder` checks it."""
    image_set = folder if isinstance(folder, ImageSet) else labelled_images(folder, truth=truth)
    result = predict_folder(predictor, image_set, workers=workers, progress=progress)
    raise_for_problems(result.problems, what=f"evaluating on {image_set.root}")
    return _draw_top_losses(predictor, result, title=image_set.root.name, n=n, path=path)


def _draw_top_losses(
    predictor: Predictor,
    result: FolderPredictions,
    *,
    title: str,
    n: int = DEFAULT_COUNT,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Decode only the few images drawn, not the folder a second time."""

    def load(indices: list[int]):
        return predictor.images([result.root / result.filenames[i] for i in indices])

    return plot_top_losses(load, result.labels, result.probabilities, n=n, title=title, path=path)


_METRIC_NAMES = {
    "accuracy": "accuracy",
    "top3_accuracy": "top-3 accuracy",
    "top5_accuracy": "top-5 accuracy",
    "macro_f1": "macro-F1",
    "semitone_mae": "mean abs. error (semitones)",
    "within_one_key": "accuracy within one key",
    "octave_error_rate": "octave-error rate",
}


def format_evaluation(evaluation: Evaluation) -> str:
    """A readable table of an evaluation: the headline metrics, then accuracy per octave."""
    lines = [
        f"model  {evaluation.model_uri}",
        f"data   {evaluation.folder} ({evaluation.count} images)",
        "",
    ]
    width = max(len(v) for v in _METRIC_NAMES.values())
    for key, title in _METRIC_NAMES.items():
        if key in evaluation.metrics:
            lines.append(f"{title:<{width}}  {evaluation.metrics[key]:.4f}")
    octaves = sorted(
        int(k.rsplit("_", 1)[1]) for k in evaluation.metrics if k.startswith("accuracy_octave_")
    )
    if octaves:
        lines += ["", "accuracy per octave"]
        for octave in octaves:
            first = max(0, (octave + 1) * 12 - MIDI_OFFSET)
            last = min(NUM_KEYS - 1, (octave + 2) * 12 - MIDI_OFFSET - 1)
            span = f"({label_to_name(first)}..{label_to_name(last)})"
            lines.append(
                f"  octave {octave} {span:<9}  {evaluation.metrics[f'accuracy_octave_{octave}']:.4f}"
            )
    if evaluation.confusion_matrix_path is not None:
        lines += ["", f"confusion matrix: {evaluation.confusion_matrix_path}"]
    if evaluation.top_losses_path is not None:
        lines.append(f"top losses:       {evaluation.top_losses_path}")
    if evaluation.run_id is not None:
        lines.append(f"logged to MLflow run {evaluation.run_id}")
    return "\n".join(lines)


def log_evaluation(evaluation: Evaluation, *, experiment: str = "mnr") -> str:
    """Record an evaluation on a new MLflow run: metrics, the model URI, the confusion matrix."""
    from mnr import metrics as pitch_metrics
    from mnr import tracking

    tracking.configure_tracking(check=True)
    with tracking.tracked_run(
        experiment=experiment,
        run_name=f"evaluate {evaluation.model_uri} on {evaluation.folder.name}",
        tags={
            "mnr.task": "evaluate",
            "mnr.model_uri": evaluation.model_uri,
            "mnr.data": str(evaluation.folder),
        },
        description=(
            f"{evaluation.model_uri} on {evaluation.folder} ({evaluation.count} images): "
            f"accuracy {evaluation.metrics['accuracy']:.4f}, "
            f"{evaluation.metrics['semitone_mae']:.3f} semitones mean error."
        ),
        source="mnr evaluate",
    ) as run_id:
        headline = {
            f"eval/{k}": v for k, v in evaluation.metrics.items() if k in pitch_metrics.HEADLINE
        }
        tracking.log_metrics(run_id, {**headline, "eval/images": float(evaluation.count)})
        tracking.log_text(
            run_id,
            pitch_metrics.format_per_octave_table(evaluation.metrics),
            "per_octave_accuracy.csv",
        )
        for path in (
            evaluation.confusion_matrix_path,
            evaluation.top_losses_path,
            evaluation.per_class_path,
        ):
            if path is not None:
                tracking.log_artifact(run_id, path)
    evaluation.run_id = run_id
    return run_id
