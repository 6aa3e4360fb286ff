"""The MLflow record of one training run, apart from the run's lifecycle (`mnr.training`).

What a run writes besides its per-epoch curves and description: its tags, the figure layout it
read its images with, the best weights' scores on the validation and held-out splits with their
tables and pictures, the last checkpoint of a run that stops early, and the logged model.
`run_training` decides when; this module says what. Not in `mnr.tracking`, which must not
import `mnr.predict` (the logged model is `mnr.predict.logged`'s format).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from mnr import metrics as pitch_metrics
from mnr import tracking
from mnr.config import ExperimentConfig
from mnr.data import TrainingData
from mnr.data.manifest import instrument_metrics, instrument_table
from mnr.engine import evaluate
from mnr.errors import MnrError
from mnr.monitor import best_name
from mnr.top_losses import plot_top_losses

__all__ = [
    "final_evaluation",
    "keep_last_checkpoint",
    "log_layout",
    "log_model",
    "run_tags",
]


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


def run_tags(
    config: ExperimentConfig, data: TrainingData, *, resumed: bool, extra: dict[str, str] | None
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
    tags.update(extra or {})
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


def keep_last_checkpoint(run_id: str, checkpoint_dir: Path | None) -> None:
    """On an interrupt or failure, upload the last good checkpoint so any machine can resume."""
    if checkpoint_dir is None or not (checkpoint_dir / "last.pt").is_file():
        return
    try:
        tracking.log_artifact(run_id, checkpoint_dir / "last.pt", artifact_path="checkpoints")
    except MnrError:
        pass  # the local file is still there; resume uses it first


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
