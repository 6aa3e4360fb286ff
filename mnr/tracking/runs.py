"""Runs: the one place that starts, reopens and ends MLflow runs, and finds them again.

Runs are created and written through an explicit `MlflowClient` and run id rather than MLflow's
fluent "active run", because the fluent state is global to a process and per thread: a study's
trials, a notebook's second run, a served request must each land on their own run, under the right
parent, whatever ran before them. The fluent API is
entered only where MLflow offers nothing else (logging a model), in the calling thread, by
`fluent_run`.

`tracked_run` is the lifecycle every command uses (train, each tuning trial and its study,
evaluate --log, each cross-validation fold and its parent): create the run, or attach to the one
`mlflow run` made, or reopen one to resume it; then end it FINISHED, KILLED on an interrupt
(Ctrl-C, SIGTERM) or FAILED on an error. A run is never left RUNNING by a process that is
still alive to end it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from mnr.console import note
from mnr.errors import MnrError
from mnr.tracking.store import client, experiment_id, tracking_uri

__all__ = [
    "DESCRIPTION_TAG",
    "PARENT_TAG",
    "find_runs",
    "fluent_run",
    "get_run",
    "git_commit",
    "run_url",
    "set_run_status",
    "set_tags",
    "tracked_run",
]

PARENT_TAG = "mlflow.parentRunId"
DESCRIPTION_TAG = "mlflow.note.content"  # the run's description, shown at the top of its page
_SOURCE_TAGS = ("mlflow.source.name", "mlflow.source.type")  # the UI's "Source" column
SYSTEM_METRICS_SECONDS = 5  # between system-metric samples: a 30 s run still gets a curve


def git_commit() -> str | None:
    """The current git commit of the working directory, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _create_run(
    *,
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run and return its id; under `mlflow run` (MLFLOW_RUN_ID set) use that run."""
    mlflow_client = client()
    attached = os.environ.get("MLFLOW_RUN_ID")
    if attached and parent_run_id is None:
        try:
            mlflow_client.get_run(attached)
        except MlflowException as exc:
            raise MnrError(
                f"MLFLOW_RUN_ID={attached} is not a run in {tracking_uri()} ({exc})"
            ) from None
        for key, value in (tags or {}).items():
            if key not in _SOURCE_TAGS:  # `mlflow run` named the project as the source already
                mlflow_client.set_tag(attached, key, value)
        return attached
    all_tags = dict(tags or {})
    if parent_run_id is not None:
        all_tags[PARENT_TAG] = parent_run_id
    run = mlflow_client.create_run(experiment_id(experiment), run_name=run_name, tags=all_tags)
    return run.info.run_id


def _reopen(run_id: str, tags: dict[str, str] | None, run_name: str | None) -> str:
    """Mark an existing run RUNNING again (a resumed run), update its tags, rename it if asked."""
    mlflow_client = client()
    mlflow_client.update_run(run_id, status="RUNNING", name=run_name)
    if tags:
        set_tags(run_id, tags)
    return run_id


@contextmanager
def tracked_run(
    *,
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    description: str | None = None,
    source: str | None = None,
    system_metrics: bool = False,
) -> Iterator[str]:
    """A run for the block: created (or `run_id` reopened), then ended by how the block ends.

    `run_name` names a new run, and renames a reopened one when given (None keeps its name).
    `description` is the text at the top of the run's page in the UI, `source` the command that
    made it (the UI's Source column). `system_metrics` samples CPU, memory and (where pynvml
    finds one) GPU use into `system/...` metrics while the block runs, with MLflow's own monitor.

    Yields the run id. The run ends FINISHED when the block returns, KILLED when it is
    interrupted (KeyboardInterrupt, which the CLI also raises on SIGTERM) and FAILED on any other
    exception, which is re-raised. A caller may re-mark a run afterwards with `set_run_status`
    (a pruned trial is KILLED, not FAILED).

    Example::

        with tracked_run(experiment="mnr", run_name="try-1") as run_id:
            log_metrics(run_id, {"val/acc": 0.9})
    """
    tags = {"mlflow.user": _user(), **(tags or {})}
    if description is not None:
        tags[DESCRIPTION_TAG] = description
    if source is not None:
        tags.update({"mlflow.source.name": source, "mlflow.source.type": "LOCAL"})
    run_id = (
        _reopen(run_id, tags, run_name)
        if run_id is not None
        else _create_run(
            experiment=experiment, run_name=run_name, tags=tags, parent_run_id=parent_run_id
        )
    )
    monitor = _system_metrics(run_id) if system_metrics else None
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        _end_run(run_id, status)


def _user() -> str:
    """Who runs it, for the UI's "Created by" (MLflow's fluent API sets it; a client run does not)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without /etc/passwd entry
        return "unknown"


def _system_metrics(run_id: str) -> Any:
    """MLflow's system-metrics monitor for a run, started (None, with a note, without psutil)."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError as exc:  # psutil missing
        note(f"system metrics are off: {exc}")
        return None
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=SYSTEM_METRICS_SECONDS, tracking_uri=tracking_uri()
    )
    monitor.start()
    return monitor


def _end_run(run_id: str, status: str) -> None:
    """Mark the run FINISHED, KILLED or FAILED (mnr logs synchronously: nothing to flush)."""
    client().set_terminated(run_id, status=status)


def set_run_status(run_id: str, status: str) -> None:
    """Set a run's status without flushing: RUNNING reopens it (a resumed study's parent run);
    FINISHED, KILLED or FAILED re-marks a run that `tracked_run` has already ended and flushed."""
    if status == "RUNNING":
        client().update_run(run_id, status="RUNNING")
    else:
        client().set_terminated(run_id, status=status)


def get_run(run_id: str) -> Any | None:
    """The run with this id, or None when the store has no such run (or it is deleted)."""
    try:
        run = client().get_run(run_id)
    except MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else run


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def run_url(run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server when there is one, else where
    `mlflow ui --backend-store-uri STORE` serves the local store by default."""
    uri = tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    run = get_run(run_id)
    experiment = run.info.experiment_id if run is not None else "0"
    return f"{base}/#/experiments/{experiment}/runs/{run_id}"


def find_runs(*, experiment: str, tags: dict[str, str], max_results: int = 100) -> list[Any]:
    """Active runs of `experiment` that carry all of `tags`, newest first (none if no experiment)."""
    found = client().get_experiment_by_name(experiment)
    if found is None:
        return []
    quoted = [
        f"tags.`{key}` = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in tags.items()
    ]
    return list(
        client().search_runs(
            [found.experiment_id],
            " and ".join(quoted),
            max_results=max_results,
            order_by=["attributes.start_time DESC"],
        )
    )


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Set several tags on a run in one call (values become strings)."""
    client().log_batch(run_id, tags=[RunTag(key, str(value)[:8000]) for key, value in tags.items()])


@contextmanager
def fluent_run(run_id: str) -> Iterator[None]:
    """Make `run_id` MLflow's fluent active run in this thread for the block, then leave it
    without changing its status (model logging only knows the fluent run)."""
    active = mlflow.active_run()
    started = active is None or active.info.run_id != run_id
    if started:
        mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        if started:
            _detach_fluent_run()


def _detach_fluent_run() -> None:
    """Leave the fluent active run without terminating it (the caller sets the final status).

    MLflow has no public "detach": `end_run` would mark the run FINISHED. Re-marking it
    RUNNING right after keeps the status honest until `tracked_run` decides it.
    """
    run = mlflow.active_run()
    if run is None:
        return
    mlflow.end_run()
    client().update_run(run.info.run_id, status="RUNNING")
