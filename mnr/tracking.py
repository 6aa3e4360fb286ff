"""Everything that talks to MLflow: the store, runs, per-epoch metrics, artifacts and models.

Runs are created and written through an explicit `MlflowClient` and run id rather than MLflow's
fluent "active run", because the fluent state is per thread: an Optuna study with `--n-jobs 2`
runs trials in threads, and each trial must still land under the right parent. The fluent API is
used only where MLflow offers nothing else (logging a model), in the main thread.

Per-epoch metrics are logged asynchronously (`synchronous=False`) so training never waits on the
store, and flushed when the run ends.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from mnr import settings
from mnr.config import ExperimentConfig, flatten, to_dict, to_yaml
from mnr.engine import Callback, FitContext
from mnr.errors import MnrError

__all__ = [
    "MlflowLogger",
    "client",
    "configure_tracking",
    "create_run",
    "end_run",
    "experiment_id",
    "find_runs",
    "get_run",
    "git_commit",
    "log_dataset",
    "log_artifact",
    "log_metrics",
    "log_params",
    "log_new_params",
    "log_pytorch_model",
    "log_text",
    "fluent_run",
    "set_run_status",
    "set_tags",
    "tracking_uri",
]

PARENT_TAG = "mlflow.parentRunId"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory."""
    return settings.MLFLOW_TRACKING_URI.get()


def _check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable server: MLflow itself retries for minutes before giving up."""
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:  # noqa: S310 (user's URI)
            response.read()
    except urllib.error.HTTPError:
        return  # the server answered; auth or routing is MLflow's to report
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MnrError(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to track in the local sqlite:///mlflow.db."
        ) from None


def configure_tracking(*, check: bool = True) -> str:
    """Point MLflow at the tracking store and, for a server, check it answers before any work."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    scheme = urlparse(uri).scheme
    if check and scheme in ("http", "https"):
        _check_server(uri)
    return uri


def client() -> MlflowClient:
    """A client for the configured store."""
    return MlflowClient(tracking_uri=tracking_uri())


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created if needed (safe when two processes race)."""
    mlflow_client = client()
    for _ in range(3):
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise MnrError(f"MLflow experiment {name!r} is deleted; restore it or pick another --experiment")
            return found.experiment_id
        try:
            return mlflow_client.create_experiment(name)
        except MlflowException:
            time.sleep(0.2)  # another process created it first
    raise MnrError(f"could not create MLflow experiment {name!r}")


def git_commit() -> str | None:
    """The current git commit of the working directory, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def create_run(
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
            raise MnrError(f"MLFLOW_RUN_ID={attached} is not a run in {tracking_uri()} ({exc})") from None
        for key, value in (tags or {}).items():
            mlflow_client.set_tag(attached, key, value)
        return attached
    all_tags = dict(tags or {})
    if parent_run_id is not None:
        all_tags[PARENT_TAG] = parent_run_id
    run = mlflow_client.create_run(experiment_id(experiment), run_name=run_name, tags=all_tags)
    return run.info.run_id


def end_run(run_id: str, status: str) -> None:
    """Flush pending async writes and mark the run FINISHED, KILLED or FAILED."""
    try:
        mlflow.flush_async_logging()
    except Exception:  # noqa: BLE001 - flushing must never hide the status update
        pass
    client().set_terminated(run_id, status=status)


def log_pytorch_model(model: Any, *, run_id: str, input_example: Any, registered_name: str | None = None) -> str:
    """Log the raw torch module (loadable with `mlflow.pytorch.load_model`) to run `run_id`.

    MLflow's model logging only knows the fluent active run, so the run is entered here, in the
    calling thread, and left without changing its status. The format is MLflow's "pt2"
    (torch.export) rather than "pickle", whose loading runs code from the file (docs/safety.md
    has the details and the one caveat of pt2). Requirements are
    given rather than inferred: inference imports the model in a subprocess and costs seconds.
    Returns the model URI.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    with torch.inference_mode():
        output = model(torch.from_numpy(input_example)).numpy()
    signature = infer_signature(input_example, output)
    with fluent_run(run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pt2",
            pip_requirements=requirements(),
            signature=signature,
            input_example=input_example,
            registered_model_name=registered_name,
        )
    return info.model_uri


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


def requirements() -> list[str]:
    """pip requirements of a logged model: mnr's own runtime dependencies, pinned loosely."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("torch", "torchvision", "numpy", "pillow", "mlflow"):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _detach_fluent_run() -> None:
    """Leave the fluent active run without terminating it (the caller sets the final status).

    MLflow has no public "detach": `end_run` would mark the run FINISHED. Re-marking it
    RUNNING right after keeps the status honest until `end_run` below decides it.
    """
    run = mlflow.active_run()
    if run is None:
        return
    mlflow.end_run()
    client().update_run(run.info.run_id, status="RUNNING")


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


def log_dataset(run_id: str, *, name: str, digest: str, source: str, context: str = "training") -> None:
    """Record the dataset a run used through MLflow's dataset tracking (name, digest, source)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local paths
        warnings.simplefilter("ignore", UserWarning)
        dataset = MetaDataset(source=resolve_dataset_source(source), name=name, digest=digest)
    client().log_inputs(
        run_id,
        datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])],
    )


class MlflowLogger(Callback):
    """Log per-epoch metrics to one run, without blocking training; only rank 0 logs."""

    def __init__(self, run_id: str, *, extra_tags: dict[str, str] | None = None) -> None:
        self.run_id = run_id
        self.extra_tags = extra_tags or {}
        self._client = client()

    def on_fit_start(self, ctx: FitContext) -> None:
        if ctx.is_main and self.extra_tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in self.extra_tags.items()])
        if ctx.is_main and ctx.history:
            self._log_missing_epochs(ctx.history)

    def _log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """On resume, log the checkpointed epochs whose metrics a killed process never sent.

        Epoch metrics go out asynchronously, so a SIGKILL right after a checkpoint can lose the
        last epoch's; the checkpoint's history still has them.
        """
        now = int(time.time() * 1000)
        missing = []
        for key in sorted({key for epoch in history for key in epoch if key != "epoch"}):
            logged = {m.step for m in self._client.get_metric_history(self.run_id, key)}
            missing += [
                Metric(key, float(epoch[key]), now, step)
                for step, epoch in enumerate(history, start=1)
                if key in epoch and step not in logged
            ]
        for start in range(0, len(missing), 1000):  # MLflow's per-batch limit
            self._client.log_batch(self.run_id, metrics=missing[start : start + 1000])

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        if not ctx.is_main:
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, ctx.epoch) for key, value in metrics.items() if key != "epoch"]
        self._client.log_batch(self.run_id, metrics=batch, synchronous=False)

    def on_fit_end(self, ctx: FitContext, status: str) -> None:
        if ctx.is_main:
            mlflow.flush_async_logging()


def log_metrics(run_id: str, metrics: dict[str, float], *, step: int | None = None) -> None:
    """Log a dict of metrics synchronously (final and test metrics)."""
    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


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


def get_run(run_id: str) -> Any | None:
    """The run with this id, or None when the store has no such run (or it is deleted)."""
    try:
        run = client().get_run(run_id)
    except MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else run


def find_runs(*, experiment: str, tags: dict[str, str], max_results: int = 100) -> list[Any]:
    """Active runs of `experiment` that carry all of `tags`, newest first (none if no experiment)."""
    found = client().get_experiment_by_name(experiment)
    if found is None:
        return []
    quoted = [f"tags.`{key}` = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in tags.items()]
    return list(
        client().search_runs(
            [found.experiment_id], " and ".join(quoted), max_results=max_results, order_by=["attributes.start_time DESC"]
        )
    )


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Set several tags on a run in one call (values become strings)."""
    client().log_batch(run_id, tags=[RunTag(key, str(value)[:8000]) for key, value in tags.items()])


def log_new_params(run_id: str, params: dict[str, Any]) -> list[str]:
    """Log the params a run lacks; return the keys it already has with another value.

    MLflow params are immutable, so a changed value cannot be written; the caller decides what
    to do about it (e.g. also keep the current value in a tag).
    """
    for attempt in range(3):
        existing = client().get_run(run_id).data.params
        new = [Param(key, str(value)[:6000]) for key, value in params.items() if key not in existing]
        try:
            for start in range(0, len(new), 100):
                client().log_batch(run_id, params=new[start : start + 100])
            break
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.2)  # another process logged some of them just now: look again
    existing = client().get_run(run_id).data.params
    return [key for key, value in params.items() if existing.get(key, str(value)[:6000]) != str(value)[:6000]]


def set_run_status(run_id: str, status: str) -> None:
    """Set a run's status without flushing: RUNNING reopens it (a resumed study's parent run);
    FINISHED, KILLED or FAILED re-marks a run that `end_run` has already ended and flushed."""
    if status == "RUNNING":
        client().update_run(run_id, status="RUNNING")
    else:
        client().set_terminated(run_id, status=status)
