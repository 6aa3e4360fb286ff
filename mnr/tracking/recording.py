"""What a run records: params, metrics, artifacts and datasets (the per-epoch logger is
`mnr.tracking.logger`)."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from mnr.config import ExperimentConfig, flatten, to_dict, to_yaml
from mnr.errors import MnrError
from mnr.tracking.store import client

__all__ = [
    "log_artifact",
    "log_dataset",
    "log_metrics",
    "log_new_params",
    "log_params",
    "log_resume_changes",
    "log_text",
]

RESUME_TAG_PREFIX = "mnr.resume."  # + a setting's dotted key: how resumes changed it


def log_params(run_id: str, config: ExperimentConfig) -> None:
    """Log the resolved config flattened into params, skipping those a resumed run already has."""
    mlflow_client = client()
    existing = mlflow_client.get_run(run_id).data.params
    params = [
        Param(key, str(value)[:6000])
        for key, value in flatten(to_dict(config)).items()
        if key not in existing
    ]
    for start in range(0, len(params), 100):  # MLflow's per-batch limit
        mlflow_client.log_batch(run_id, params=params[start : start + 100])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(to_yaml(config))
        log_artifact(run_id, path)  # an unwritable artifact store is a clear error, before training


def log_resume_changes(run_id: str, changes: dict[str, tuple[Any, Any]]) -> None:
    """Record what a resume changed (dotted key -> (old, new)) as tags `mnr.resume.KEY`.

    MLflow params cannot change, so `train.epochs` stays the value the run started with; the tag
    says what it became, `2 -> 4`, and grows with each resume (`2 -> 4 -> 6`). The config in
    force is the run's `config.yaml`, which `log_params` writes again on every (re)start.
    """
    tags = client().get_run(run_id).data.tags
    updated = {}
    for key, (old, new) in changes.items():
        earlier = tags.get(RESUME_TAG_PREFIX + key, "")
        chain = earlier if earlier.endswith(f" -> {old}") else str(old)
        updated[RESUME_TAG_PREFIX + key] = f"{chain} -> {new}"
    client().log_batch(run_id, tags=[RunTag(key, value[:8000]) for key, value in updated.items()])


def log_dataset(
    run_id: str, *, name: str, digest: str, source: str, context: str = "training"
) -> None:
    """Record the dataset a run used through MLflow's dataset tracking (name, digest, source)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local paths
        warnings.simplefilter("ignore", UserWarning)
        dataset = MetaDataset(source=resolve_dataset_source(source), name=name, digest=digest)
    client().log_inputs(
        run_id,
        datasets=[
            DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
            )
        ],
    )


def log_metrics(
    run_id: str, metrics: dict[str, float], *, step: int | None = None, model_id: str | None = None
) -> None:
    """Log a dict of metrics synchronously (final and test metrics); with `model_id` they are
    linked to that logged model too (MLflow's Models tab shows them beside it)."""
    now = int(time.time() * 1000)
    client().log_batch(
        run_id,
        metrics=[
            Metric(k, float(v), now, step or 0, model_id=model_id) for k, v in metrics.items()
        ],
    )


def log_artifact(run_id: str, path: str | Path, *, artifact_path: str | None = None) -> None:
    """Upload one file; a failure (full disk, unwritable store) is a clear error."""
    try:
        client().log_artifact(run_id, str(path), artifact_path=artifact_path)
    except (OSError, MlflowException) as exc:
        raise MnrError(
            f"cannot store artifact {Path(path).name} for run {run_id}: {exc}. "
            "What was logged before is kept; free space or fix the artifact store's permissions."
        ) from None


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """Upload text as an artifact file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_text(text)
        parent = str(Path(artifact_file).parent)
        log_artifact(run_id, path, artifact_path=None if parent == "." else parent)


def log_new_params(run_id: str, params: dict[str, Any]) -> list[str]:
    """Log the params a run lacks; return the keys it already has with another value.

    MLflow params are immutable, so a changed value cannot be written; the caller decides what
    to do about it (e.g. also keep the current value in a tag).
    """
    for attempt in range(3):
        existing = client().get_run(run_id).data.params
        new = [
            Param(key, str(value)[:6000]) for key, value in params.items() if key not in existing
        ]
        try:
            for start in range(0, len(new), 100):
                client().log_batch(run_id, params=new[start : start + 100])
            break
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.2)  # another process logged some of them just now: look again
    existing = client().get_run(run_id).data.params
    return [
        key
        for key, value in params.items()
        if existing.get(key, str(value)[:6000]) != str(value)[:6000]
    ]
