"""From a trained model to answers: the predictor, `mnr predict` and `mnr evaluate`.

`Predictor` is the one object that turns images into piano keys. It holds a model rebuilt from a
checkpoint (by name, through the model registry: no pickled instance is ever loaded) and applies
exactly the training preprocessing: `decode_png` at the model's `input_config.input_size`, then
`to_model_input` with its mean and std inside `predict_logits`. The MLflow pyfunc in
`mnr.serving` wraps a `Predictor`; `mnr predict` unwraps it again, so that a folder is decoded in
parallel processes and run through the model in batches rather than one request at a time.

Inputs may be file paths, PNG bytes, base64 strings of PNG bytes (what a served request holds),
or uint8 arrays (H x W x 3 or 3 x H x W, any size; H x W is grayscale), given as a DataFrame
column ``image``, a list, or a stacked N x H x W x 3 / N x 3 x H x W array. Arrays are encoded to
PNG and decoded again when they need resizing, so they are resized by the very same code as
files.

Example::

    >>> predictor = load_predictor("models:/piano@champion")            # doctest: +SKIP
    >>> predictor.predict(["test/0001.png"], top_k=3)[["label", "note"]]  # doctest: +SKIP
       label note
    0     39   C4
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from mnr.data.folder import ImageSet, Problem, raise_for_problems, scan_folder
from mnr.data.images import decode_png, png_bytes
from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS, label_to_name

if TYPE_CHECKING:  # torch and pandas load lazily: `mnr --help` must stay fast
    import pandas as pd
    import torch

__all__ = [
    "IMAGE_COLUMN",
    "Evaluation",
    "FolderPredictions",
    "Predictor",
    "evaluate_folder",
    "format_evaluation",
    "labelled_images",
    "list_images",
    "load_predictor",
    "log_evaluation",
    "model_from_checkpoint",
    "prediction_frame",
    "predict_folder",
    "write_error_report",
    "write_predictions",
]

IMAGE_COLUMN = "image"  # the input column of the pyfunc and of a served request
_DECODE_CHUNK = 4096  # images decoded per pass: bounds memory (4096 x 3 x 128 x 128 = 200 MB)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# Inference batch when none is given. On a CPU a batch's activations should stay in cache: for
# baseline_cnn at 128 x 128, batches of 32-64 images cost 1.5 ms of CPU per image and 512 twice
# that, while at 128 x 16 batches of 256-880 are cheapest (benchmarks/predict_speed.py). So a CPU
# batch holds about a million input pixels; a GPU wants large batches.
CPU_BATCH_PIXELS = 1 << 20
GPU_BATCH_SIZE = 512


def model_from_checkpoint(state: dict[str, Any], *, model_module: str | os.PathLike | None = None) -> torch.nn.Module:
    """Rebuild a trained model from a checkpoint dict: create it by name, then load the weights.

    The architecture comes from the registry (`create_model` with the checkpoint's model name and
    the config's `model.kwargs`), never from pickled code. A model from a user's file needs that
    file: `model_module` (the copy a logged predictor carries) wins over the path recorded in the
    config, which is only valid on the machine that trained it.
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
    if state.get("input_config"):
        input_config = InputConfig.from_dict(state["input_config"])
    else:
        input_config = InputConfig(input_size=tuple((config.get("data") or {}).get("input_size", (128, 128))))
    model = create_model(
        name,
        num_classes=input_config.num_classes,
        input_size=input_config.input_size,
        **(model_config.get("kwargs") or {}),
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MnrError(f"the checkpoint's weights do not fit model {name!r} as configured: {exc}") from None
    model.input_config = input_config
    model.eval()
    return model


class Predictor:
    """A trained model plus the preprocessing it was trained with (see the module docstring)."""

    def __init__(
        self, model: torch.nn.Module, *, device: torch.device | str | None = None, batch_size: int | None = None
    ) -> None:
        import torch

        if getattr(model, "input_config", None) is None:
            raise MnrError("the model has no input_config; build it with mnr.models.create_model")
        self.model = model.eval()
        self._default_batch = batch_size is None
        self.batch_size = int(batch_size) if batch_size is not None else GPU_BATCH_SIZE
        self.to(torch.device(device) if device is not None else torch.device("cpu"))

    def to(self, device: torch.device) -> Predictor:
        """Move the model; a batch size left to the default follows the device."""
        self.device = device
        self.model.to(device)
        if self._default_batch:
            height, width = self.input_size
            cpu_batch = min(1024, max(16, CPU_BATCH_PIXELS // (height * width)))
            self.batch_size = cpu_batch if device.type == "cpu" else GPU_BATCH_SIZE
        return self

    @classmethod
    def from_checkpoint(
        cls,
        source: str | os.PathLike | dict[str, Any],
        *,
        device: torch.device | str | None = None,
        model_module: str | os.PathLike | None = None,
        batch_size: int | None = None,
    ) -> Predictor:
        """A predictor from a checkpoint file (loaded with weights_only=True) or its dict."""
        from mnr.callbacks import load_checkpoint

        state = source if isinstance(source, dict) else load_checkpoint(source)
        return cls(model_from_checkpoint(state, model_module=model_module), device=device, batch_size=batch_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) that every image is decoded to."""
        height, width = self.model.input_config.input_size
        return int(height), int(width)

    @property
    def num_classes(self) -> int:
        return int(self.model.input_config.num_classes)

    def images(self, inputs: Any, *, allow_paths: bool = True) -> np.ndarray:
        """Every input as one N x 3 x H x W uint8 array at the model's input size.

        Raises `MnrError` naming the first input that is not a readable PNG. `allow_paths=False`
        (a served request) refuses file paths, so that a client cannot make the server read files.
        """
        items = _as_items(inputs)
        height, width = self.input_size
        out = np.empty((len(items), 3, height, width), dtype=np.uint8)
        for index, item in enumerate(items):
            out[index] = _to_pixels(item, size=(height, width), name=f"image {index}", allow_paths=allow_paths)
        return out

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over the classes for uint8 N x 3 x H x W images, `batch_size` at a time."""
        import torch

        from mnr.engine import predict_logits

        if len(images) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        logits = predict_logits(self.model, images, batch_size=self.batch_size, device=self.device)
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, inputs: Any, *, top_k: int = 3, allow_paths: bool = True) -> pd.DataFrame:
        """One row per input: label, midi, note, probability and the top-k columns."""
        return prediction_frame(self.probabilities(self.images(inputs, allow_paths=allow_paths)), top_k=top_k)


def prediction_frame(probabilities: np.ndarray, *, top_k: int = 3) -> pd.DataFrame:
    """The answer table: label, midi, note, probability, then top1_label .. topK_probability.

    The top-k columns are flat (not lists) so that the same table reads well as a served JSON
    answer, a DataFrame and a CSV.
    """
    import pandas as pd

    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2:
        raise MnrError(f"probabilities must be N x classes, got shape {probabilities.shape}")
    top_k = _check_top_k(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    top_probs = np.take_along_axis(probabilities, order, axis=1)
    best = order[:, 0]
    columns: dict[str, Any] = {
        "label": best.astype(np.int64),
        "midi": (best + MIDI_OFFSET).astype(np.int64),
        "note": [label_to_name(int(v)) for v in best],
        "probability": probabilities[np.arange(len(best)), best].astype(np.float64),
    }
    for rank in range(top_k):
        columns[f"top{rank + 1}_label"] = order[:, rank].astype(np.int64)
        columns[f"top{rank + 1}_note"] = [label_to_name(int(v)) for v in order[:, rank]]
        columns[f"top{rank + 1}_probability"] = top_probs[:, rank].astype(np.float64)
    return pd.DataFrame(columns)


def _check_top_k(top_k: Any, num_classes: int) -> int:
    try:
        value = int(top_k)
    except (TypeError, ValueError):
        raise MnrError(f"top_k must be an integer, got {top_k!r}") from None
    if not 1 <= value <= num_classes:
        raise MnrError(f"top_k must be between 1 and {num_classes}, got {value}")
    return value


# ------------------------------------------------------------------------------------- inputs
def _as_items(inputs: Any) -> list[Any]:
    """The individual images of any accepted input container, in order."""
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        if IMAGE_COLUMN in inputs.columns:
            return _cells(inputs[IMAGE_COLUMN])
        if len(inputs.columns) == 1:
            return _cells(inputs.iloc[:, 0])
        raise MnrError(f"expected a column named {IMAGE_COLUMN!r}, got columns {list(inputs.columns)}")
    if isinstance(inputs, pd.Series):
        return _cells(inputs)
    if isinstance(inputs, dict):
        if IMAGE_COLUMN not in inputs:
            raise MnrError(f"expected the key {IMAGE_COLUMN!r}, got keys {sorted(inputs)}")
        return _as_items(inputs[IMAGE_COLUMN])
    if isinstance(inputs, (str, bytes, bytearray, memoryview, os.PathLike)):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        if inputs.dtype == object or inputs.dtype.kind in "SU":
            return list(inputs.ravel())
        if inputs.ndim in (2, 3):
            return [inputs]  # one image
        if inputs.ndim == 4:
            return list(inputs)  # a stack of images
        raise MnrError(f"an image array must be H x W, H x W x C or N x H x W x C; got shape {inputs.shape}")
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise MnrError(
        f"cannot read images from a {type(inputs).__name__}: pass a DataFrame column {IMAGE_COLUMN!r}, "
        "a list, or an array of paths, PNG bytes, base64 strings or uint8 arrays"
    )


def _cells(column: Any) -> list[Any]:
    """A column's images. MLflow turns ``{"image": [a, b]}`` into one row holding the list
    [a, b]; a cell that is a list of paths, bytes or strings is therefore expanded in place."""
    items: list[Any] = []
    for cell in column:
        if isinstance(cell, (list, tuple)) and cell and all(isinstance(v, (str, bytes, os.PathLike)) for v in cell):
            items.extend(cell)
        else:
            items.append(cell)
    return items


def _to_pixels(item: Any, *, size: tuple[int, int], name: str, allow_paths: bool) -> np.ndarray:
    """One input as 3 x H x W uint8, through `decode_png` like every file mnr reads."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_png(bytes(item), size=size, name=name)
    if isinstance(item, (list, tuple)):  # nested lists of pixel values, e.g. from JSON
        try:
            array = np.asarray(item)
        except ValueError:  # ragged nesting
            array = np.zeros(0)
        if array.dtype.kind not in "iu" or array.size == 0 or array.min() < 0 or array.max() > 255:
            raise MnrError(f"{name}: a nested list must hold pixel values 0..255")
        item = array.astype(np.uint8)
    if isinstance(item, np.ndarray):
        return _array_pixels(item, size=size, name=name)
    if isinstance(item, os.PathLike):
        if not allow_paths:
            raise MnrError(f"{name}: file paths are not accepted here; send the PNG base64-encoded")
        return decode_png(item, size=size)
    if isinstance(item, str):
        text = item.strip()
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
            text = text.split(",", 1)[1]
        raw = _b64_png(text)
        if raw is not None:
            return decode_png(raw, size=size, name=name)
        if not allow_paths:
            raise MnrError(f"{name}: not a base64-encoded PNG (file paths are not accepted here)")
        if not os.path.isfile(text):
            raise MnrError(f"{text}: no such file, and not a base64-encoded PNG either")
        return decode_png(text, size=size)
    raise MnrError(
        f"{name}: a {type(item).__name__} is not an image; give a path, PNG bytes, a base64 string or a uint8 array"
    )


def _b64_png(text: str) -> bytes | None:
    """The PNG bytes a base64 string encodes, or None when it is not one (say, a path)."""
    if len(text) < 12 or not text.startswith("iVBOR"):  # "iVBOR" is base64 of the PNG signature
        return None
    text = "".join(text.split())  # `base64` wraps lines at 76 characters unless told -w0
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _array_pixels(array: np.ndarray, *, size: tuple[int, int], name: str) -> np.ndarray:
    """A uint8 H x W (x C) or C x H x W array at `size`; resized by the same code as a file."""
    if array.dtype != np.uint8:
        raise MnrError(f"{name}: image arrays must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # C x H x W -> H x W x C
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise MnrError(f"{name}: expected H x W x 3 or 3 x H x W uint8, got shape {array.shape}")
    if array.ndim == 3 and array.shape[-1] == 3 and array.shape[:2] == tuple(size):
        return np.ascontiguousarray(array.transpose(2, 0, 1))  # what decode_png would return
    return decode_png(png_bytes(np.ascontiguousarray(array)), size=size, name=name)


# ------------------------------------------------------------------------------------- loading
def _checkpoint_path(model_uri: str) -> Path | None:
    """The checkpoint file `model_uri` names, or None when it is a model URI or folder."""
    text = model_uri.removeprefix("file://")
    if len(urlparse(text).scheme) > 1:  # models:/, runs:/, http://; one letter is a Windows drive
        return None
    path = Path(text).expanduser()
    return path if path.suffix in _CHECKPOINT_SUFFIXES or path.is_file() else None


def load_predictor(model_uri: str, *, device: str | None = "auto", batch_size: int | None = None) -> Predictor:
    """The predictor behind `model_uri`: ``models:/NAME@alias``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID/predictor``, a local model folder, or a checkpoint file (``.pt``).

    A checkpoint is turned into a predictor in-process; anything else is loaded as the MLflow
    pyfunc that `mnr train` logged and unwrapped to the same `Predictor`. A model that does not
    exist, a store that does not answer, or a model that is not an mnr predictor (the raw torch
    module logged as ``model``) is an `MnrError` saying what to do.
    """
    from mnr.engine import resolve_device

    resolved = resolve_device(device) if device is not None else None
    checkpoint = _checkpoint_path(model_uri)
    if checkpoint is not None:
        return Predictor.from_checkpoint(checkpoint, device=resolved, batch_size=batch_size)
    python_model = _load_python_model(model_uri)
    predictor = getattr(python_model, "predictor", None)
    if not isinstance(predictor, Predictor):
        raise MnrError(
            f"{model_uri} is not an mnr predictor; use the model that `mnr train` logs as "
            "'predictor' (runs:/RUN_ID/predictor, or a registered version of it)"
        )
    if batch_size is not None:
        predictor.batch_size, predictor._default_batch = int(batch_size), False
    if resolved is not None:
        predictor.to(resolved)
    return predictor


def _load_python_model(model_uri: str) -> Any:
    """Load an MLflow pyfunc and return its Python model; MLflow's failures become MnrErrors."""
    from mnr import tracking

    scheme = urlparse(model_uri).scheme
    if scheme in ("models", "runs"):
        tracking.configure_tracking(check=True)  # an unreachable server fails in seconds, not minutes
        if scheme == "runs" and len(model_uri.removeprefix("runs:/").strip("/").split("/")) == 1:
            model_uri = model_uri.rstrip("/") + "/predictor"  # runs:/RUN_ID means the run's predictor
    elif scheme == "" and not Path(model_uri).expanduser().exists():
        raise MnrError(
            f"{model_uri!r} is neither a model URI (models:/NAME@alias, models:/NAME/VERSION, "
            "runs:/RUN_ID/predictor) nor an existing checkpoint file or model folder"
        )
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise MnrError(
            f"cannot load model {model_uri}: {exc.message.strip().splitlines()[0]}. "
            "List registered models with `mnr models --registered`."
        ) from None
    except OSError as exc:
        raise MnrError(f"cannot load model {model_uri}: {exc}") from None
    try:
        return loaded.unwrap_python_model()
    except MlflowException:
        raise MnrError(
            f"{model_uri} is not an mnr predictor (it has no Python model); use the model that "
            "`mnr train` logs as 'predictor', e.g. runs:/RUN_ID/predictor"
        ) from None


# -------------------------------------------------------------------------------------- folders
@dataclass
class FolderPredictions:
    """What predicting a folder produced: one row per readable image, and what was not readable.

    `filenames` (sorted) and `probabilities` (N x 88) cover the good images only; `labels` holds
    their true labels when the folder is labelled.
    """

    root: Path
    filenames: list[str]
    probabilities: np.ndarray
    labels: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)
    total: int = 0  # images found, readable or not

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(1) if len(self.probabilities) else np.zeros(0, dtype=np.int64)


def _subset(image_set: ImageSet, start: int, stop: int) -> ImageSet:
    return ImageSet(
        root=image_set.root,
        filenames=image_set.filenames[start:stop],
        labels=None if image_set.labels is None else image_set.labels[start:stop],
        truth_path=image_set.truth_path,
        lines=None if image_set.lines is None else image_set.lines[start:stop],
    )


def _sorted(image_set: ImageSet) -> ImageSet:
    order = sorted(range(len(image_set)), key=lambda i: image_set.filenames[i])

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in order]

    return ImageSet(
        root=image_set.root,
        filenames=[image_set.filenames[i] for i in order],
        labels=pick(image_set.labels),
        truth_path=image_set.truth_path,
        lines=pick(image_set.lines),
        problems=image_set.problems,
    )


def list_images(folder: str | os.PathLike, *, truth: str | os.PathLike | None = None) -> ImageSet:
    """The images to predict in `folder`, sorted by filename; an empty folder is an `MnrError`.

    An unlabelled folder (the Kaggle test set) gives every PNG in it; a folder with `truth.txt`
    (or `truth`) gives the files listed there, with their labels. Called before a model is
    loaded, so that a wrong folder fails at once.
    """
    image_set = _sorted(scan_folder(folder, truth=truth))
    if len(image_set) == 0:
        shown = "; ".join(p.message for p in image_set.errors) or "no PNG files found"
        raise MnrError(f"{folder}: nothing to predict: {shown}. Pass a folder of .png spectrograms.")
    return image_set


def predict_folder(
    predictor: Predictor,
    folder: str | os.PathLike | ImageSet,
    *,
    truth: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> FolderPredictions:
    """Predict every image of a folder (or of `list_images`' set), in sorted filename order.

    Images are decoded by `decode_png` in parallel processes (`map_images`), a bounded chunk at
    a time, and go through the model in `predictor.batch_size` batches. A broken file does not
    stop the rest: it becomes a `Problem` in the result. A folder with no PNGs is an `MnrError`.
    """
    from tqdm.auto import tqdm

    from mnr.data.cache import map_images

    image_set = folder if isinstance(folder, ImageSet) else list_images(folder, truth=truth)
    problems = list(image_set.errors)
    decode = partial(decode_png, size=predictor.input_size)
    names: list[str] = []
    labels: list[int] = []
    outputs: list[np.ndarray] = []
    with tqdm(total=len(image_set), desc="predicting", unit="img", disable=not progress) as bar:
        for start in range(0, len(image_set), _DECODE_CHUNK):
            chunk = _subset(image_set, start, start + _DECODE_CHUNK)
            decoded, failures = map_images(decode, chunk, workers=workers, progress=False)
            problems.extend(failures)
            good = [i for i, array in enumerate(decoded) if array is not None]
            if good:
                stack = np.stack([decoded[i] for i in good])
                del decoded
                for offset in range(0, len(stack), predictor.batch_size):
                    batch = stack[offset : offset + predictor.batch_size]
                    outputs.append(predictor.probabilities(batch))
                    bar.update(len(batch))
            bar.update(len(chunk) - len(good))
            names.extend(chunk.filenames[i] for i in good)
            if chunk.labels is not None:
                labels.extend(chunk.labels[i] for i in good)
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, predictor.num_classes), dtype=np.float32)
    return FolderPredictions(
        root=image_set.root,
        filenames=names,
        probabilities=probabilities,
        labels=np.asarray(labels, dtype=np.int64) if image_set.labels is not None else None,
        problems=problems,
        total=len(image_set),
    )


def write_predictions(
    result: FolderPredictions,
    output: str | os.PathLike,
    *,
    id_column: str = "filename",
    label_column: str = "label",
    strip_extension: bool = False,
    top_k: int = 1,
) -> Path:
    """Write the Kaggle submission CSV: a header, then one `id,label` row per image, sorted.

    `top_k` > 1 appends ``top1_label, top1_note, top1_probability, ...`` after the two Kaggle
    columns. The file is written to a temporary name and renamed, so a crash never leaves half a
    submission behind.
    """
    output = Path(output)
    if not id_column or not label_column or id_column == label_column:
        raise MnrError(f"--id-column and --label-column must be two different names, got {id_column!r} and {label_column!r}")
    frame = prediction_frame(result.probabilities, top_k=top_k)
    extra = [f"top{r}_{what}" for r in range(1, top_k + 1) for what in ("label", "note", "probability")] if top_k > 1 else []
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=output.name, suffix=".tmp")
    except OSError as exc:
        raise MnrError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([id_column, label_column, *extra])
            for name, row in zip(result.filenames, frame.itertuples(index=False), strict=True):
                values = row._asdict()
                shown = os.path.splitext(name)[0] if strip_extension else name
                cells = [f"{v:.6f}" if k.endswith("probability") else v for k, v in ((k, values[k]) for k in extra)]
                writer.writerow([shown, int(values["label"]), *cells])
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


def write_error_report(problems: Sequence[Problem], output: str | os.PathLike) -> Path:
    """`<output>.errors.txt`, one problem per line with its file; a stale report is removed."""
    path = Path(f"{output}.errors.txt")
    if not problems:
        path.unlink(missing_ok=True)
        return path
    path.write_text("".join(f"{p}\n" for p in problems))
    return path


# ------------------------------------------------------------------------------------ evaluate
@dataclass
class Evaluation:
    """The metrics of a model on a labelled folder, and where its pictures were written."""

    model_uri: str
    folder: Path
    count: int
    metrics: dict[str, float]
    confusion_matrix_path: Path | None = None
    per_class_path: Path | None = None
    run_id: str | None = None


def labelled_images(folder: str | os.PathLike, *, truth: str | os.PathLike | None = None) -> ImageSet:
    """The labelled images of `folder` (its truth.txt, or `truth`), sorted; every problem with
    the truth file or the listed files is one `MnrError` listing them all."""
    image_set = list_images(folder, truth=truth)
    if image_set.labels is None:
        raise MnrError(f"{folder} has no truth.txt; pass --truth FILE to say which key each image is")
    raise_for_problems(image_set.problems, what=str(image_set.truth_path))
    return image_set


def evaluate_folder(
    predictor: Predictor,
    folder: str | os.PathLike | ImageSet,
    *,
    model_uri: str,
    truth: str | os.PathLike | None = None,
    output_dir: str | os.PathLike = "evaluation",
    workers: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Pitch-aware metrics of `predictor` on a labelled folder, plus a confusion matrix image.

    The folder needs `truth.txt` (or `truth`). Every problem with the data (bad truth lines,
    missing or unreadable images) is an `MnrError` listing them all: a score on part of a test
    set would be silently wrong. Writes `confusion_matrix.png` and `per_class_accuracy.csv` to
    `output_dir`.
    """
    from mnr import metrics as pitch_metrics

    image_set = folder if isinstance(folder, ImageSet) else labelled_images(folder, truth=truth)
    result = predict_folder(predictor, image_set, workers=workers, progress=progress)
    raise_for_problems(result.problems, what=f"evaluating on {image_set.root}")
    if result.labels is None:
        raise MnrError(f"{image_set.root} is not labelled; pass --truth FILE to say which key each image is")
    predicted = result.predicted
    summary = pitch_metrics.evaluate_predictions(result.labels, predicted, result.probabilities)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cm = pitch_metrics.confusion_matrix(result.labels, predicted)
    image = pitch_metrics.plot_confusion_matrix(
        cm, out / "confusion_matrix.png", title=f"{model_uri} on {image_set.root.name}: accuracy {summary['accuracy']:.4f}"
    )
    table = out / "per_class_accuracy.csv"
    table.write_text(pitch_metrics.format_per_class_table(pitch_metrics.per_class_table(result.labels, predicted)))
    return Evaluation(
        model_uri=model_uri, folder=image_set.root, count=len(result.filenames), metrics=summary,
        confusion_matrix_path=image, per_class_path=table,
    )


_METRIC_NAMES = {
    "accuracy": "accuracy",
    "top3_accuracy": "top-3 accuracy",
    "top5_accuracy": "top-5 accuracy",
    "macro_f1": "macro-F1",
    "semitone_mae": "mean abs. error (semitones)",
    "within_one_key": "accuracy within one key",
    "octave_error_rate": "octave-error rate",
}


def format_evaluation(evaluation: Evaluation) -> str:
    """A readable table of an evaluation: the headline metrics, then accuracy per octave."""
    lines = [f"model  {evaluation.model_uri}", f"data   {evaluation.folder} ({evaluation.count} images)", ""]
    width = max(len(v) for v in _METRIC_NAMES.values())
    for key, title in _METRIC_NAMES.items():
        if key in evaluation.metrics:
            lines.append(f"{title:<{width}}  {evaluation.metrics[key]:.4f}")
    octaves = sorted(int(k.rsplit("_", 1)[1]) for k in evaluation.metrics if k.startswith("accuracy_octave_"))
    if octaves:
        lines += ["", "accuracy per octave"]
        for octave in octaves:
            first = max(0, (octave + 1) * 12 - MIDI_OFFSET)
            last = min(NUM_KEYS - 1, (octave + 2) * 12 - MIDI_OFFSET - 1)
            span = f"({label_to_name(first)}..{label_to_name(last)})"
            lines.append(f"  octave {octave} {span:<9}  {evaluation.metrics[f'accuracy_octave_{octave}']:.4f}")
    if evaluation.confusion_matrix_path is not None:
        lines += ["", f"confusion matrix: {evaluation.confusion_matrix_path}"]
    if evaluation.run_id is not None:
        lines.append(f"logged to MLflow run {evaluation.run_id}")
    return "\n".join(lines)


def log_evaluation(evaluation: Evaluation, *, experiment: str = "mnr") -> str:
    """Record an evaluation on a new MLflow run: metrics, the model URI, the confusion matrix."""
    from mnr import tracking

    tracking.configure_tracking(check=True)
    run_id = tracking.create_run(
        experiment=experiment,
        run_name=f"evaluate {evaluation.model_uri} on {evaluation.folder.name}",
        tags={"mnr.task": "evaluate", "mnr.model_uri": evaluation.model_uri, "mnr.data": str(evaluation.folder)},
    )
    status = "FAILED"
    try:
        tracking.log_metrics(run_id, {**evaluation.metrics, "images": float(evaluation.count)})
        for path in (evaluation.confusion_matrix_path, evaluation.per_class_path):
            if path is not None:
                tracking.log_artifact(run_id, path)
        status = "FINISHED"
    finally:
        tracking.end_run(run_id, status)
    evaluation.run_id = run_id
    return run_id

