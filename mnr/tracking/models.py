"""Logged models: the raw torch module, logged models' requirements, finding one of a kind on a
run, and a logged model's folder on local disk.

The predictor itself (the pyfunc that takes images: its format, logging and reading) is
`mnr.predict.logged`; it calls these for the MLflow I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException

from mnr.errors import MnrError
from mnr.tracking.runs import fluent_run
from mnr.tracking.store import client, configure_tracking, tracking_uri

__all__ = [
    "KIND_TAG",
    "find_logged_model",
    "log_pytorch_model",
    "mlflow_error",
    "model_folder",
    "requirements",
]

KIND_TAG = "mnr.kind"  # the logged-model tag that says what mnr logged: "torch", "predictor"


def mlflow_error(exc: Exception) -> str:
    """The first line of an MLflow exception's message: what a user needs, without the dump."""
    message = getattr(exc, "message", None) or str(exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


def log_pytorch_model(model: Any, *, run_id: str, input_example: Any, name: str) -> str:
    """Log the raw torch module (loadable with `mlflow.pytorch.load_model`) to run `run_id`.

    MLflow's model logging only knows the fluent active run, so the run is entered here, in the
    calling thread, and left without changing its status. The format is MLflow's "pt2"
    (torch.export) rather than "pickle", whose loading runs code from the file (docs/safety.md
    has the details and the one caveat of pt2). Requirements are given rather than inferred:
    inference imports the model in a subprocess and costs seconds.
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
            name=name,
            tags={KIND_TAG: "torch"},
            serialization_format="pt2",
            pip_requirements=requirements(),
            signature=signature,
            input_example=input_example,
        )
    return info.model_uri


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


def find_logged_model(run_id: str, kind: str) -> Any:
    """The model of kind `kind` that run `run_id` logged (the newest, if several): the
    `LoggedModel` tagged `mnr.kind=<kind>`."""
    configure_tracking(check=True)  # an unreachable server fails in seconds
    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        raise MnrError(
            f"no MLflow run {run_id!r} in {tracking_uri()} ({mlflow_error(exc)})"
        ) from None
    found = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.`{KIND_TAG}` = '{kind}' AND source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    if found:
        return found[0]
    raise MnrError(
        f"run {run_id} logged no {kind}; train with tracking.log_model=true "
        "(the default) to log one, then register it"
    )


def model_folder(model_uri: str, *, kind: str) -> Path:
    """A local folder holding the model: the folder given, or the logged model's, cached.

    A bare ``runs:/RUN_ID`` names that run's model of kind `kind` (`find_logged_model`).
    """
    scheme = urlparse(model_uri).scheme
    if scheme not in ("models", "runs"):
        folder = Path(model_uri.removeprefix("file://")).expanduser()
        if not (folder / "MLmodel").is_file():
            raise MnrError(
                f"{model_uri!r} is neither a model URI (models:/NAME@alias, models:/NAME/VERSION, "
                "runs:/RUN_ID) nor a model folder or checkpoint file"
            )
        return folder
    configure_tracking(check=True)  # an unreachable server fails in seconds, not minutes
    model_id = _model_id(model_uri, kind=kind)
    from mnr import settings

    folder = settings.cache_dir() / "models" / model_id
    if (folder / "MLmodel").is_file():
        return folder
    import tempfile

    import mlflow.artifacts

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=tmp)
        except MlflowException as exc:
            raise MnrError(f"cannot download model {model_uri}: {mlflow_error(exc)}") from None
        try:
            Path(tmp).rename(folder)  # whole or not at all; another process may have won
        except OSError:
            pass
    return folder


def _model_id(model_uri: str, *, kind: str) -> str:
    """The logged model a models:/ or runs:/ URI names (an alias is resolved every time)."""
    path = model_uri.split(":/", 1)[1].strip("/")
    try:
        if model_uri.startswith("runs:"):
            run_id, _, name = path.partition("/")
            if not name:
                return find_logged_model(run_id, kind).model_id
            run = client().get_run(run_id)
            found = mlflow.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{name}' AND source_run_id = '{run_id}'",
                output_format="list",
            )
            if not found:
                raise MnrError(f"run {run_id} logged no model named {name!r}")
            return found[0].model_id
        if path.startswith("m-") and "/" not in path and "@" not in path:
            return path
        if "@" in path:
            name, alias = path.split("@", 1)
            return _logged_model_of(client().get_model_version_by_alias(name, alias), model_uri)
        name, _, version = path.rpartition("/")
        return _logged_model_of(client().get_model_version(name, version), model_uri)
    except MlflowException as exc:
        raise MnrError(
            f"cannot load model {model_uri}: {mlflow_error(exc)}. "
            "List registered models with `mnr models --registered`."
        ) from None


def _logged_model_of(version: Any, model_uri: str) -> str:
    """The logged model a registered version points at (mnr registers logged models)."""
    if version.model_id:
        return version.model_id
    source = str(version.source or "")
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/")
    raise MnrError(
        f"{model_uri} points at {source!r}, not at a logged mnr predictor; register one with `mnr register`"
    )
