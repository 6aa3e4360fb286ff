"""Everything that talks to MLflow: the store, runs, what they record, models and the registry.

- `store`: which tracking store, whether it answers, a client.
- `runs`: `tracked_run`, the one place that starts and ends runs; finding runs; tags.
- `recording`: params, metrics, artifacts, datasets, and the per-epoch `MlflowLogger` callback.
- `models`: logging the raw torch module, finding a run's logged model of a kind, its folder.
- `model_registry`: registering predictors, aliases, listing versions, imported where it is used.

The common names are importable from `mnr.tracking` itself. `MlflowLogger` (the engine
callback, `logger`) loads on first use, since it needs torch and `mnr predict` reads a model's
files before importing torch.
"""

from __future__ import annotations

from mnr.tracking.models import find_logged_model, log_pytorch_model, mlflow_error, requirements
from mnr.tracking.recording import (
    log_artifact,
    log_dataset,
    log_metrics,
    log_new_params,
    log_params,
    log_resume_changes,
    log_text,
)
from mnr.tracking.runs import (
    DESCRIPTION_TAG,
    PARENT_TAG,
    find_runs,
    fluent_run,
    get_run,
    git_commit,
    run_url,
    set_run_status,
    set_tags,
    tracked_run,
)
from mnr.tracking.store import client, configure_tracking, database_url, experiment_id, tracking_uri

__all__ = [
    "DESCRIPTION_TAG",
    "PARENT_TAG",
    "MlflowLogger",
    "client",
    "configure_tracking",
    "database_url",
    "experiment_id",
    "find_logged_model",
    "find_runs",
    "fluent_run",
    "get_run",
    "git_commit",
    "log_artifact",
    "log_dataset",
    "log_metrics",
    "log_new_params",
    "log_params",
    "log_pytorch_model",
    "log_resume_changes",
    "log_text",
    "mlflow_error",
    "requirements",
    "run_url",
    "set_run_status",
    "set_tags",
    "tracked_run",
    "tracking_uri",
]


def __getattr__(name: str) -> object:
    if name == "MlflowLogger":  # imported on first use: it needs the engine, and so torch
        from mnr.tracking.logger import MlflowLogger

        return MlflowLogger
    raise AttributeError(f"module 'mnr.tracking' has no attribute {name!r}")
