"""Logged models: the raw torch module, the pyfunc predictor's requirements, and finding them.

The predictor itself (the pyfunc that takes images) is `mnr.tracking.serving`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    "log_pytorch_model",
    "member_checkpoints",
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


@dataclass(frozen=True)
class PredictorFiles:
    """A logged mnr predictor on local disk: its checkpoints, the user's model file if any, the
    TTA shifts and the input config it was logged with (None for a predictor logged before mnr
    stored it there; the checkpoints hold it too)."""

    checkpoints: tuple[Path, ...]
    model_module: Path | None
    tta: int
    input_config: dict[str, Any] | None


def predictor_files(model_uri: str) -> PredictorFiles:
    """The files of the predictor behind a model URI or a local model folder, without loading it.

    `mnr predict` reads these directly rather than through `mlflow.pyfunc.load_model`, which
    would import pandas, check the environment's packages against the model's requirements
    (only to warn), and copy the model once more: a second or two before the first image. The
    predictor is the same (`mnr.predict.Predictor` from these checkpoints is what the pyfunc's
    `load_context` builds). A registered or logged model is downloaded once into the cache
    (logged models never change); a run's predictor is found by its tag.
    """
    import yaml

    folder = _model_folder(model_uri)
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        flavor = meta["flavors"]["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise MnrError(
            f"{model_uri} is not an MLflow model (no readable MLmodel in {folder})"
        ) from None
    if not str(flavor.get("model_code_path", "")).endswith("serving.py"):
        raise MnrError(
            f"{model_uri} is not an mnr predictor; use the predictor that `mnr train` logs "
            "(runs:/RUN_ID, or a registered version of it)"
        )
    artifacts = {
        key: folder / value["path"] for key, value in (flavor.get("artifacts") or {}).items()
    }
    config = flavor.get("config") or {}
    return PredictorFiles(
        checkpoints=tuple(member_checkpoints(artifacts)),
        model_module=artifacts.get("model_module"),
        tta=int(config.get("tta", 1)),
        input_config=config.get("input_config"),
    )


def member_checkpoints(artifacts: Mapping[str, Any]) -> list[Any]:
    """A predictor's checkpoint artifacts in member order: ``checkpoint_0``, ``checkpoint_1``, ...
    (``checkpoint`` alone, from predictors logged before ensembles, comes first)."""
    members = sorted(
        (key for key in artifacts if key.startswith("checkpoint")),
        key=lambda key: int(key.rpartition("_")[2] or 0) if key != "checkpoint" else 0,
    )
    return [artifacts[key] for key in members]


def _model_folder(model_uri: str) -> Path:
    """A local folder holding the model: the folder given, or the logged model's, cached."""
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
    model_id = _model_id(model_uri)
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


def _model_id(model_uri: str) -> str:
    """The logged model a models:/ or runs:/ URI names (an alias is resolved every time)."""
    path = model_uri.split(":/", 1)[1].strip("/")
    try:
        if model_uri.startswith("runs:"):
            run_id, _, name = path.partition("/")
            if not name:
                return find_predictor(run_id).model_id
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
