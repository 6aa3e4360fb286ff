"""The served model: an MLflow pyfunc "predictor" that takes images and names piano keys.

It is logged as code (MLflow's "models from code"): `mnr.predict.logged.log_predictor` passes
*this file* as `python_model`, and MLflow runs it again wherever the model is loaded, where the last line hands
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

import os
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from mnr.predict.logged import DEFAULT_TOP_K, member_checkpoints

__all__ = ["PianoKeyModel"]

_SERVING_FLAG = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # set by MLflow's scoring server


class PianoKeyModel(PythonModel):
    """The pyfunc: `load_context` rebuilds the predictor, `predict` runs it on a batch of images."""

    def load_context(self, context: Any) -> None:
        from mnr.predict.predictor import Predictor

        config = context.model_config or {}
        self.predictor = Predictor.from_checkpoints(
            member_checkpoints(context.artifacts),
            model_module=context.artifacts.get("model_module"),
            tta=int(config.get("tta", 1)),
            input_config=config.get("input_config"),  # its one copy (`log_predictor`)
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


mlflow.models.set_model(PianoKeyModel())
