"""Logged models: the raw torch module, the pyfunc predictor's requirements, and finding them.

The predictor itself (the pyfunc that takes images) is `mnr.tracking.serving`.
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
    "find_predictor",
    "load_python_model",
    "log_pytorch_model",
    "mlflow_error",
    "requirements",
]


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
            tags={"mnr.kind": "torch"},
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


def find_predictor(run_id: str) -> Any:
    """The pyfunc predictor that run `run_id` logged (the newest, if several): the `LoggedModel`
    tagged `mnr.kind=predictor` (or, from an mnr before that tag, named ``predictor``)."""
    from mnr.tracking.serving import KIND_TAG, PREDICTOR

    configure_tracking(check=True)  # an unreachable server fails in seconds
    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        raise MnrError(
            f"no MLflow run {run_id!r} in {tracking_uri()} ({mlflow_error(exc)})"
        ) from None
    for condition in (f"tags.`{KIND_TAG}` = '{PREDICTOR}'", f"name = '{PREDICTOR}'"):
        found = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"{condition} AND source_run_id = '{run_id}'",
            order_by=[{"field_name": "creation_time", "ascending": False}],
            output_format="list",
        )
        if found:
            return found[0]
    raise MnrError(
        f"run {run_id} logged no predictor; train with tracking.log_model=true "
        "(the default) to log one, then register it"
    )


def load_python_model(model_uri: str) -> Any:
    """Load an MLflow pyfunc and return its Python model; MLflow's failures become MnrErrors.

    `runs:/RUN_ID` alone means that run's predictor.
    """
    scheme = urlparse(model_uri).scheme
    if scheme in ("models", "runs"):
        configure_tracking(check=True)  # an unreachable server fails in seconds, not minutes
        if scheme == "runs" and len(model_uri.removeprefix("runs:/").strip("/").split("/")) == 1:
            model_uri = (
                f"models:/{find_predictor(model_uri.removeprefix('runs:/').strip('/')).model_id}"
            )
    elif scheme == "" and not Path(model_uri).expanduser().exists():
        raise MnrError(
            f"{model_uri!r} is neither a model URI (models:/NAME@alias, models:/NAME/VERSION, "
            "runs:/RUN_ID) nor an existing checkpoint file or model folder"
        )
    import mlflow.pyfunc

    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise MnrError(
            f"cannot load model {model_uri}: {mlflow_error(exc)}. "
            "List registered models with `mnr models --registered`."
        ) from None
    except OSError as exc:
        raise MnrError(f"cannot load model {model_uri}: {exc}") from None
    try:
        return loaded.unwrap_python_model()
    except MlflowException:
        raise MnrError(
            f"{model_uri} is not an mnr predictor (it has no Python model); use the predictor that "
            "`mnr train` logs, e.g. runs:/RUN_ID or a registered version of it"
        ) from None
