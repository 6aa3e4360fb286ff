"""The predictor: a model rebuilt from a checkpoint plus the preprocessing it was trained with.

`model_from_checkpoint` creates the architecture by name through the model registry and loads
the weights (no pickled instance is ever loaded). `Predictor` decodes every input with
`decode_png` at the model's `input_config.input_size` (see `mnr.predict.inputs`), then runs
`predict_logits`, which applies `to_model_input` with the model's mean and std, in batches.
`prediction_frame` is the answer table every caller shares. `load_predictor` turns a model URI
or a checkpoint file into a `Predictor`, unwrapping the MLflow pyfunc that `mnr train` logged.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from mnr.config import DEFAULT_INPUT_SIZE
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, top_k_table, top_labels
from mnr.predict.inputs import as_items, to_pixels

if TYPE_CHECKING:  # torch and pandas load lazily: `mnr --help` must stay fast
    import pandas as pd
    import torch

    from mnr.data.layout import FigureLayout
    from mnr.predict.logged import PredictorFiles

__all__ = [
    "CPU_BATCH_PIXELS",
    "GPU_BATCH_SIZE",
    "Predictor",
    "checkpoint_path",
    "load_predictor",
    "model_from_checkpoint",
    "prediction_frame",
    "predictor_from_files",
    "top_labels",
    "tta_shifts",
]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Inference batch when none is given. On a CPU a batch's activations should stay in cache: for
# baseline_cnn at 128 x 128, batches of 32-64 images cost 1.5 ms of CPU per image and 512 twice
# that, while at 128 x 16 batches of 256-880 are cheapest (benchmarks/predict_speed.py). So a CPU
# batch holds about a million input pixels; a GPU wants large batches.
CPU_BATCH_PIXELS = 1 << 20
GPU_BATCH_SIZE = 512


def model_from_checkpoint(
    state: dict[str, Any],
    *,
    model_module: str | os.PathLike | None = None,
    input_config: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """Rebuild a trained model from a checkpoint dict: create it by name, then load the weights.

    The architecture comes from the registry (`create_model` with the checkpoint's model name and
    the config's `model.kwargs`), never from pickled code. A model from a user's file needs that
    file: `model_module` (the copy a logged predictor carries) wins over the path recorded in the
    config, which is only valid on the machine that trained it.

    `input_config` is a logged predictor's, stored once in its MLmodel; a training checkpoint
    (`best.pt`) carries its own. A checkpoint that has one and is given another that differs is
    refused: its images would be decoded one way and read by a model built for another.
    """
    from mnr.models import create_model, import_model_module
    from mnr.models.registry import InputConfig

    config = state.get("config") or {}
    model_config = config.get("model") or {}
    name = state.get("model_name") or model_config.get("name")
    if not name:
        raise MnrError("the checkpoint names no model (no model_name); was it written by mnr?")
    module = model_module or model_config.get("module")
    if module:
        import_model_module(str(module))
    own = state.get("input_config")
    if (
        input_config is not None
        and own
        and InputConfig.from_dict(own) != InputConfig.from_dict(input_config)
    ):
        raise MnrError(
            f"the logged model's MLmodel and its checkpoints disagree on the input config "
            f"({input_config} against {own}); the model files were changed after logging: "
            "log the model again"
        )
    if input_config is not None or own:
        input_config = InputConfig.from_dict(input_config or own)
    else:
        input_config = InputConfig(
            input_size=tuple((config.get("data") or {}).get("input_size", DEFAULT_INPUT_SIZE))
        )
    model = create_model(
        name,
        num_classes=input_config.num_classes,
        input_size=input_config.input_size,
        layout=input_config.layout,
        **(model_config.get("kwargs") or {}),
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MnrError(
            f"the checkpoint's weights do not fit model {name!r} as configured: {exc}"
        ) from None
    model.input_config = input_config
    model.eval()
    return model


class Predictor:
    """Trained models plus the preprocessing they were trained with (see the module docstring).

    A single model is an ensemble of one: `models` may hold several (the folds of a
    cross-validation), which must read their input the same way (one input config); their
    softmax probabilities are averaged. `tta` > 1 averages over that many circular shifts along
    time as well (test-time augmentation), never along frequency, which would change the pitch.
    """

    def __init__(
        self,
        models: torch.nn.Module | Sequence[torch.nn.Module],
        *,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        tta: int = 1,
    ) -> None:
        import torch

        self.models = [models] if isinstance(models, torch.nn.Module) else list(models)
        if not self.models:
            raise MnrError("a predictor needs at least one model")
        configs = [getattr(model, "input_config", None) for model in self.models]
        if any(config is None for config in configs):
            raise MnrError("the model has no input_config; build it with mnr.models.create_model")
        if any(config != configs[0] for config in configs[1:]):
            raise MnrError(
                "the models of an ensemble must read their input the same way (one input config)"
            )
        self.input_config = configs[0]
        for model in self.models:
            model.eval()
        self.tta = _check_tta(tta)
        self._default_batch = batch_size is None
        self.batch_size = int(batch_size) if batch_size is not None else GPU_BATCH_SIZE
        self.to(torch.device(device) if device is not None else torch.device("cpu"))

    def to(self, device: torch.device) -> Predictor:
        """Move the models; a batch size left to the default follows the device."""
        self.device = device
        for model in self.models:
            model.to(device)
        if self._default_batch:
            height, width = self.input_size
            cpu_batch = min(1024, max(16, CPU_BATCH_PIXELS // (height * width)))
            self.batch_size = cpu_batch if device.type == "cpu" else GPU_BATCH_SIZE
        return self

    def with_options(self, *, batch_size: int | None = None, tta: int | None = None) -> Predictor:
        """This predictor with another inference batch size or number of TTA shifts (None keeps
        each): a copy that shares the models, never a change to this one.

        A served model answers concurrent requests from one predictor, each with its own `tta`;
        changing the shared one would let a request answer with another's setting.
        """
        other = copy.copy(self)  # the models are shared: inference does not change them
        if batch_size is not None:
            other.batch_size, other._default_batch = int(batch_size), False
        if tta is not None:
            other.tta = _check_tta(tta)
        return other

    @classmethod
    def from_checkpoints(
        cls,
        sources: Sequence[str | os.PathLike | dict[str, Any]],
        *,
        device: torch.device | str | None = None,
        model_module: str | os.PathLike | None = None,
        batch_size: int | None = None,
        tta: int = 1,
        input_config: dict[str, Any] | None = None,
    ) -> Predictor:
        """A predictor from checkpoint files (loaded with weights_only=True) or their dicts;
        `input_config` is a logged predictor's (see `model_from_checkpoint`)."""
        from mnr.checkpoint import load_checkpoint

        states = [
            source if isinstance(source, dict) else load_checkpoint(source) for source in sources
        ]
        models = [
            model_from_checkpoint(state, model_module=model_module, input_config=input_config)
            for state in states
        ]
        return cls(models, device=device, batch_size=batch_size, tta=tta)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) that every image is decoded to."""
        height, width = self.input_config.input_size
        return int(height), int(width)

    @property
    def layout(self) -> FigureLayout | None:
        """How the models read an image (None: the whole image as RGB)."""
        return self.input_config.layout

    @property
    def num_classes(self) -> int:
        """Classes the models tell apart (88 piano keys)."""
        return int(self.input_config.num_classes)

    def images(self, inputs: Any, *, allow_paths: bool = True) -> np.ndarray:
        """Every input as one N x C x H x W uint8 array, read as the models read their input.

        Raises `MnrError` naming the first input that is not a readable PNG or not drawn like
        the models' layout. `allow_paths=False` (a served request) refuses file paths, so that a
        client cannot make the server read files.
        """
        items = as_items(inputs)
        height, width = self.input_size
        out = np.empty((len(items), self.input_config.in_chans, height, width), dtype=np.uint8)
        for index, item in enumerate(items):
            out[index] = to_pixels(
                item,
                size=(height, width),
                layout=self.layout,
                name=f"image {index}",
                allow_paths=allow_paths,
            )
        return out

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over the classes for uint8 N x C x H x W images, averaged over the models
        and the TTA shifts, `batch_size` images at a time."""
        import torch

        from mnr.engine import predict_logits

        if len(images) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(images))
        total = torch.zeros((len(images), self.num_classes), dtype=torch.float32)
        for shift in tta_shifts(self.tta, self.input_size[1]):
            shifted = torch.roll(batch, shifts=shift, dims=3) if shift else batch  # time only
            for model in self.models:
                logits = predict_logits(
                    model, shifted, batch_size=self.batch_size, device=self.device
                )
                total += torch.softmax(logits, dim=1)
        return (total / (len(self.models) * self.tta)).numpy()

    def predict(self, inputs: Any, *, top_k: int = 3, allow_paths: bool = True) -> pd.DataFrame:
        """One row per input: label, midi, note, probability and the top-k columns."""
        return prediction_frame(
            self.probabilities(self.images(inputs, allow_paths=allow_paths)), top_k=top_k
        )


TTA_SPAN = 0.1  # TTA shifts reach +-10 % of the width: training's augment.time_shift of the configs


def tta_shifts(count: int, width: int) -> list[int]:
    """`count` circular shifts along time, in columns, spread evenly over +-`TTA_SPAN` of the
    width and always including 0 (the image as it is) when `count` is odd."""
    if count <= 1:
        return [0]
    reach = max(1, round(TTA_SPAN * width))
    return [int(round(v)) for v in np.linspace(-reach, reach, count)]


def _check_tta(tta: Any) -> int:
    try:
        value = int(tta)
    except (TypeError, ValueError):
        raise MnrError(f"tta must be a whole number of shifts, got {tta!r}") from None
    if not 1 <= value <= 32:
        raise MnrError(f"tta must be between 1 (off) and 32, got {value}")
    return value


def prediction_frame(probabilities: np.ndarray, *, top_k: int = 3) -> pd.DataFrame:
    """The answer table: label, midi, note, probability, then top1_label .. topK_probability.

    The top-k columns are flat (not lists) so that the same table reads well as a served JSON
    answer, a DataFrame and a CSV.
    """
    import pandas as pd

    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2:
        raise MnrError(f"probabilities must be N x classes, got shape {probabilities.shape}")
    table = top_k_table(probabilities, top_k)
    best = table["top1_label"]
    columns: dict[str, Any] = {
        "label": best,
        "midi": best + MIDI_OFFSET,
        "note": table["top1_note"],
        "probability": table["top1_probability"],
        **table,
    }
    return pd.DataFrame(columns)


def checkpoint_path(model_uri: str) -> Path | None:
    """The checkpoint file `model_uri` names, or None when it is a model URI or folder."""
    text = model_uri.removeprefix("file://")
    if len(urlparse(text).scheme) > 1:  # models:/, runs:/, http://; one letter is a Windows drive
        return None
    path = Path(text).expanduser()
    return path if path.suffix in _CHECKPOINT_SUFFIXES or path.is_file() else None


def load_predictor(
    model_uri: str,
    *,
    device: str | None = "auto",
    batch_size: int | None = None,
    tta: int | None = None,
) -> Predictor:
    """The predictor behind `model_uri`: ``models:/NAME@alias``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID`` (that run's predictor), a local model folder, or a checkpoint file (``.pt``).

    A checkpoint is turned into a predictor in-process; for anything else the files of the
    MLflow pyfunc that `mnr train` logged are read (`mnr.predict.logged.predictor_files`) and made
    into the same `Predictor` its `load_context` builds. `tta` overrides the
    number of test-time shifts logged with the model (None keeps it). A model that does not
    exist, a store that does not answer, or a model that is not an mnr predictor (the raw torch
    module, logged as ``MODEL-torch``) is an `MnrError` saying what to do.
    """
    from mnr.device import resolve_device

    resolved = resolve_device(device) if device is not None else None
    checkpoint = checkpoint_path(model_uri)
    if checkpoint is not None:
        return Predictor.from_checkpoints(
            [checkpoint], device=resolved, batch_size=batch_size, tta=tta or 1
        )
    from mnr.predict.logged import predictor_files

    return predictor_from_files(
        predictor_files(model_uri), device=resolved, batch_size=batch_size, tta=tta
    )


def predictor_from_files(
    files: PredictorFiles,
    *,
    device: torch.device | None = None,
    batch_size: int | None = None,
    tta: int | None = None,
) -> Predictor:
    """The `Predictor` a logged predictor's files make, as its pyfunc's `load_context` builds it;
    `tta` None keeps the logged number of shifts.

    The input config is stored once, in the MLmodel, which is read before torch is imported (so
    that `mnr predict` decodes while the weights load); the models are built from that copy too.
    """
    return Predictor.from_checkpoints(
        files.checkpoints, model_module=files.model_module, device=device, batch_size=batch_size,
        tta=tta or files.tta, input_config=files.input_config,
    )  # fmt: skip
