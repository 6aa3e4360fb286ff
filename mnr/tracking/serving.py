"""The served model: an MLflow pyfunc "predictor" that takes images and names piano keys.

It is logged as code (MLflow's "models from code"): `log_predictor` passes *this file* as
`python_model`, and MLflow runs it again wherever the model is loaded, where the last line hands
a `PianoKeyModel` to `mlflow.models.set_model`. Nothing is pickled: the artifacts are
weights-only checkpoints (one per model: a single run logs one, a cross-validation ensemble one
per fold), read with `weights_only=True`, from which `load_context` rebuilds the networks by name
through the model registry (`mnr.predict.Predictor`, which averages an ensemble's probabilities).
The model config holds the number of test-time shifts (`tta`). Loading needs mnr installed
(``--env-manager local``, or mnr in the serving image).

Inputs are a DataFrame column ``image`` (file paths, PNG bytes, base64 strings of PNG bytes, or
uint8 arrays); the answer has one row per image: label, midi, note, probability and the top-k
columns, `top_k` being a parameter (default 3), `tta` another (default: the logged setting).
A request's parameters apply to that request only: concurrent requests share one predictor,
which none of them changes (`Predictor.with_options` makes a copy).
Every image is read with the models' figure layout, so a served model crops and reads back
colours exactly as training did. A served request sends base64, for example::

    curl -s http://127.0.0.1:5000/invocations -H 'Content-Type: application/json' \\
      -d '{"dataframe_split": {"columns": ["image"], "data": [["'$(base64 -w0 note.png)'"]]},
           "params": {"top_k": 3}}'

In the scoring server, file paths are refused: a client must not make the server open files.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

__all__ = [
    "DEFAULT_TOP_K",
    "KIND_TAG",
    "PREDICTOR",
    "PianoKeyModel",
    "log_predictor",
    "predictor_signature",
]

KIND_TAG, PREDICTOR = (
    "mnr.kind",
    "predictor",
)  # the logged-model tag that marks the pyfunc predictor
DEFAULT_TOP_K = 3
_SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server


class PianoKeyModel(PythonModel):
    """The pyfunc: `load_context` rebuilds the predictor, `predict` runs it on a batch of images."""

    def load_context(self, context: Any) -> None:
        from mnr.predict import Predictor
        from mnr.tracking.models import member_checkpoints

        self.predictor = Predictor.from_checkpoints(
            member_checkpoints(context.artifacts),
            model_module=context.artifacts.get("model_module"),
            tta=int((context.model_config or {}).get("tta", 1)),
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One answer row per input image; a bad image fails the request with its reason (400).

        MLflow has already checked `model_input` against the signature and made it a DataFrame.
        The annotation is one MLflow derives no schema from, so the explicit signature stands.
        """
        from mlflow.exceptions import MlflowException

        from mnr.errors import MnrError

        params = params or {}
        top_k = params.get("top_k", DEFAULT_TOP_K)
        serving = os.environ.get(_SERVING_FLAG, "").lower() == "true"
        try:
            # a copy for this request: concurrent requests share `self.predictor`
            predictor = self.predictor.with_options(tta=params.get("tta"))
            return predictor.predict(model_input, top_k=top_k, allow_paths=not serving)
        except MnrError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


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
    for rank in range(1, top_k + 1):
        outputs += [
            ColSpec(DataType.long, f"top{rank}_label"),
            ColSpec(DataType.string, f"top{rank}_note"),
            ColSpec(DataType.double, f"top{rank}_probability"),
        ]
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
    only what prediction needs (weights, model name, input config, experiment config), not the
    optimizer state. A model from a user's ``.py`` file carries a copy of that file, so the
    predictor loads on machines where the original path does not exist. The input example is a
    base64 PNG of the models' own layout, so MLflow's check of the example at logging time
    proves the served request format works. Requirements are explicit: inferring them would
    import the model in a subprocess and cost seconds.
    """
    import numpy as np

    from mnr.checkpoint import model_state, save_checkpoint
    from mnr.data.images import png_bytes
    from mnr.tracking.models import requirements
    from mnr.tracking.runs import fluent_run

    members = list(models) if isinstance(models, list | tuple) else [models]
    input_config = members[0].input_config
    if input_config.layout is not None:
        blank = input_config.layout.blank_image()
    else:
        blank = np.zeros((*input_config.input_size, 3), dtype=np.uint8)
    example = pd.DataFrame({"image": [base64.b64encode(png_bytes(blank)).decode()]})
    module = (config.get("model") or {}).get("module")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for index, model in enumerate(members):
            path = save_checkpoint(
                model_state(model, config=config, run_id=run_id),
                Path(tmp) / f"checkpoint_{index}.pt",
            )
            artifacts[f"checkpoint_{index}"] = str(path)
        if module and str(module).endswith(".py") and Path(module).expanduser().is_file():
            artifacts["model_module"] = str(Path(module).expanduser())
        with fluent_run(run_id):
            return mlflow.pyfunc.log_model(
                name=name,
                tags={KIND_TAG: PREDICTOR, **(tags or {})},
                python_model=str(Path(__file__).resolve()),
                artifacts=artifacts,
                # what a prediction needs before torch is even imported (`models.predictor_files`)
                model_config={
                    "tta": int(tta),
                    "members": len(members),
                    "input_config": input_config.to_dict(),
                },
                signature=predictor_signature(tta=tta),
                input_example=example,
                pip_requirements=requirements(),
            )


mlflow.models.set_model(PianoKeyModel())
