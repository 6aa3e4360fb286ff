"""The logged predictor: what `mnr train` and `mnr cv` log to MLflow, and how it is read back.

The logged predictor is an MLflow pyfunc logged as code (`mnr/predict/serving.py`, the
`PianoKeyModel`) around weights-only checkpoints, one per member model (a single run logs one, a
cross-validation ensemble one per fold). This module holds all that defines its format:

- `log_predictor` writes it to a run, with `predictor_signature` (image in, keys out);
- `find_predictor` finds it on a run (the logged model tagged ``mnr.kind=predictor``) and
  `register_run` registers it;
- `predictor_files` reads its files back without loading it, and `member_checkpoints` orders the
  members' checkpoints, for `mnr predict` and the pyfunc's `load_context` alike.

The MLflow I/O itself (searching logged models, downloading them, the registry) is `mnr.tracking`.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnr.errors import MnrError
from mnr.labels import top_k_columns

__all__ = [
    "DEFAULT_TOP_K",
    "PREDICTOR",
    "PYFUNC_CODE",
    "PredictorFiles",
    "find_predictor",
    "log_predictor",
    "member_checkpoints",
    "predictor_files",
    "predictor_signature",
    "register_run",
]

PREDICTOR = "predictor"  # the value of the `mnr.kind` tag that marks the logged predictor
PYFUNC_CODE = Path(__file__).resolve().with_name("serving.py")  # logged as the model's code
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class PredictorFiles:
    """A logged mnr predictor on local disk: its checkpoints, the user's model file if any, the
    TTA shifts and the input config it was logged with (its one copy: the checkpoints have none)."""

    checkpoints: tuple[Path, ...]
    model_module: Path | None
    tta: int
    input_config: dict[str, Any] | None


def find_predictor(run_id: str) -> Any:
    """The pyfunc predictor that run `run_id` logged (the newest, if several): the `LoggedModel`
    tagged `mnr.kind=predictor`."""
    from mnr.tracking.models import find_logged_model

    return find_logged_model(run_id, PREDICTOR)


def register_run(run_id: str, *, name: str, alias: str | None = None) -> Any:
    """Register run `run_id`'s predictor as a new version of `name`; optionally give it `alias`.

    Returns the `ModelVersion`. The registered model is created on first use.
    """
    from mnr.tracking.model_registry import check_name, promote, register_logged

    check_name(name, "--name")
    logged = find_predictor(run_id)
    version = register_logged(logged.model_id, name=name, what=f"run {run_id}")
    if alias:
        return promote(name, version.version, alias)
    return version


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

    from mnr.tracking.models import model_folder

    folder = model_folder(model_uri, kind=PREDICTOR)
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text())
        flavor = meta["flavors"]["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise MnrError(
            f"{model_uri} is not an MLflow model (no readable MLmodel in {folder})"
        ) from None
    if not str(flavor.get("model_code_path", "")).endswith(PYFUNC_CODE.name):
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
    """A predictor's checkpoint artifacts in member order: ``checkpoint_0``, ``checkpoint_1``, ..."""
    members = sorted(
        (key for key in artifacts if key.startswith("checkpoint_")),
        key=lambda key: int(key.rpartition("_")[2]),
    )
    return [artifacts[key] for key in members]


def predictor_signature(top_k: int = DEFAULT_TOP_K, *, tta: int = 1) -> Any:
    """Input: a string column ``image``; output: the answer columns; params ``top_k``, ``tta``."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    outputs = [
        ColSpec(DataType.long, "label"),
        ColSpec(DataType.long, "midi"),
        ColSpec(DataType.string, "note"),
        ColSpec(DataType.double, "probability"),
    ]
    types = {"label": DataType.long, "note": DataType.string, "probability": DataType.double}
    outputs += [ColSpec(types[name.rsplit("_", 1)[1]], name) for name in top_k_columns(top_k)]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "image")]),
        outputs=Schema(outputs),
        params=ParamSchema(
            [ParamSpec("top_k", DataType.long, top_k), ParamSpec("tta", DataType.long, tta)]
        ),
    )


def log_predictor(
    models: Any,
    *,
    config: dict[str, Any],
    run_id: str,
    name: str,
    tta: int = 1,
    tags: dict[str, str] | None = None,
) -> Any:
    """Log the predictor for `models` (one trained model, or an ensemble's) to run `run_id`.

    `name` is what the MLflow UI shows (the architecture, e.g. `bn_cnn`); the logged model is
    tagged `mnr.kind=predictor` (plus `tags`), which is how mnr finds it again.

    Returns MLflow's `ModelInfo` (its `model_uri` and `model_id`). Each checkpoint artifact holds
    only what prediction needs (weights, model name, experiment config), not the optimizer
    state; the input config (layout, input size, channels, classes) is stored once, in the
    MLmodel, and both the decode and the models are built from it. A model from a user's
    ``.py`` file carries a copy of that file, so the predictor loads on machines where the
    original path does not exist. The input example is a base64 PNG of the models' own layout,
    so MLflow's check of the example at logging time proves the served request format works.
    Requirements are explicit: inferring them would import the model in a subprocess and cost
    seconds.
    """
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd

    from mnr.checkpoint import model_state, save_checkpoint
    from mnr.data.images import png_bytes
    from mnr.tracking.models import KIND_TAG, requirements
    from mnr.tracking.runs import fluent_run

    members = list(models) if isinstance(models, list | tuple) else [models]
    input_config = members[0].input_config
    if any(member.input_config != input_config for member in members):
        raise MnrError("the members of an ensemble must read their images the same way")
    if input_config.layout is not None:
        blank = input_config.layout.blank_image()
    else:
        blank = np.zeros((*input_config.input_size, 3), dtype=np.uint8)
    example = pd.DataFrame({"image": [base64.b64encode(png_bytes(blank)).decode()]})
    module = (config.get("model") or {}).get("module")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for index, model in enumerate(members):
            state = model_state(model, config=config, run_id=run_id)
            del state["input_config"]  # stored once, in the MLmodel's model_config below
            path = save_checkpoint(state, Path(tmp) / f"checkpoint_{index}.pt")
            artifacts[f"checkpoint_{index}"] = str(path)
        if module and str(module).endswith(".py") and Path(module).expanduser().is_file():
            artifacts["model_module"] = str(Path(module).expanduser())
        with fluent_run(run_id):
            return mlflow.pyfunc.log_model(
                name=name,
                tags={KIND_TAG: PREDICTOR, **(tags or {})},
                python_model=str(PYFUNC_CODE),
                artifacts=artifacts,
                # what a prediction needs before torch is even imported (`predictor_files`)
                model_config={
                    "tta": int(tta),
                    "members": len(members),
                    "input_config": input_config.to_dict(),
                },
                signature=predictor_signature(tta=tta),
                input_example=example,
                pip_requirements=requirements(),
            )
