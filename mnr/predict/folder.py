"""Predicting a folder: the images it holds, their predictions, the submission CSV.

`list_images` finds what to predict (sorted by filename) before any model is loaded, so a wrong
folder fails at once. `predict_folder` decodes the images in parallel processes a bounded chunk
at a time and runs them through a `Predictor` in batches; a broken file becomes a `Problem`
rather than stopping the rest. `write_predictions` writes the Kaggle submission atomically and
`write_error_report` lists the files that could not be read.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mnr.console import progress as progress_bar
from mnr.data.detection import check_folder_layout
from mnr.data.folder import ImageSet, Problem, scan_folder
from mnr.data.images import decode_png
from mnr.data.parallel import ImageMap
from mnr.errors import MnrError
from mnr.files import atomic_write
from mnr.predict.predictor import Predictor, predictor_from_files

__all__ = [
    "FolderPredictions",
    "list_images",
    "predict_folder",
    "write_error_report",
    "write_predictions",
]

_DECODE_CHUNK = 4096  # images decoded per pass: bounds memory (4096 x 3 x 128 x 128 = 200 MB)


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
        return (
            self.probabilities.argmax(1) if len(self.probabilities) else np.zeros(0, dtype=np.int64)
        )


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
        raise MnrError(
            f"{folder}: nothing to predict: {shown}. Pass a folder of .png spectrograms."
        )
    return image_set


def predict_model_on_folder(
    model_uri: str,
    folder: str | os.PathLike | ImageSet,
    *,
    device: str | None = "auto",
    batch_size: int | None = None,
    tta: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> FolderPredictions:
    """`predict_folder` with the predictor behind `model_uri`, from a cold start.

    What `mnr predict` runs. The model's input config is read first (from the logged model's
    metadata, without torch), so that the images are being decoded in worker processes while
    torch is imported and the weights are loaded; that overlap is most of a cold start's time.
    """
    from mnr.data.layout import FigureLayout
    from mnr.predict.logged import predictor_files
    from mnr.predict.predictor import checkpoint_path, load_predictor

    image_set = folder if isinstance(folder, ImageSet) else list_images(folder)
    if checkpoint_path(model_uri) is not None:
        predictor = load_predictor(model_uri, device=device, batch_size=batch_size, tta=tta)
        return predict_folder(predictor, image_set, workers=workers, progress=progress)
    files = predictor_files(model_uri)
    decoding = None
    if files.input_config is not None and len(image_set) <= _DECODE_CHUNK:
        layout = files.input_config.get("layout")
        layout = FigureLayout.from_dict(layout) if layout else None
        if layout is not None and len(image_set) > 1:
            check_folder_layout(image_set, layout)
        size = tuple(files.input_config["input_size"])
        decoding = ImageMap(
            partial(decode_png, size=size, layout=layout), image_set, workers=workers
        )
    try:
        from mnr.device import resolve_device

        predictor = predictor_from_files(
            files,
            device=resolve_device(device) if device is not None else None,
            batch_size=batch_size,
            tta=tta,
        )
        return predict_folder(
            predictor, image_set, workers=workers, progress=progress, decoding=decoding
        )
    finally:
        if decoding is not None:
            decoding.close()


def predict_folder(
    predictor: Predictor,
    folder: str | os.PathLike | ImageSet,
    *,
    truth: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    decoding: ImageMap | None = None,
) -> FolderPredictions:
    """Predict every image of a folder (or of `list_images`' set), in sorted filename order.

    Images are decoded by `decode_png` in parallel processes (`map_images`), a bounded chunk at
    a time, and go through the model in `predictor.batch_size` batches. A broken file does not
    stop the rest: it becomes a `Problem` in the result. A folder with no PNGs is an `MnrError`.
    `decoding` is the set's decoding already started for this predictor (all of it in one chunk).
    """
    image_set = folder if isinstance(folder, ImageSet) else list_images(folder, truth=truth)
    problems = list(image_set.errors)
    if decoding is None and predictor.layout is not None and len(image_set) > 1:
        check_folder_layout(image_set, predictor.layout)
    decode = partial(decode_png, size=predictor.input_size, layout=predictor.layout)
    names: list[str] = []
    labels: list[int] = []
    outputs: list[np.ndarray] = []
    with progress_bar(total=len(image_set), desc="predicting", disable=not progress) as bar:
        for start in range(0, len(image_set), _DECODE_CHUNK):
            chunk = _subset(image_set, start, start + _DECODE_CHUNK)
            if decoding is None or start > 0:
                decoding = ImageMap(decode, chunk, workers=workers)
            decoded, failures = decoding.collect(progress=False)
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
    probabilities = (
        np.concatenate(outputs)
        if outputs
        else np.zeros((0, predictor.num_classes), dtype=np.float32)
    )
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
        raise MnrError(
            f"--id-column and --label-column must be two different names, got {id_column!r} and {label_column!r}"
        )
    from mnr.labels import top_k_columns, top_k_table

    # the top k straight from the probabilities: no DataFrame (pandas costs half a second to import)
    table = top_k_table(result.probabilities, top_k, decimals=6)
    columns = top_k_columns(top_k) if top_k > 1 else []
    try:
        with atomic_write(output, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([id_column, label_column, *columns])
            for row, name in enumerate(result.filenames):
                shown = os.path.splitext(name)[0] if strip_extension else name
                cells = [table[column][row] for column in columns]
                writer.writerow([shown, int(table["top1_label"][row]), *cells])
    except OSError as exc:
        raise MnrError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output


def write_error_report(problems: Sequence[Problem], output: str | os.PathLike) -> Path:
    """`<output>.errors.txt`, one problem per line with its file; a stale report is removed."""
    path = Path(f"{output}.errors.txt")
    if not problems:
        path.unlink(missing_ok=True)
        return path
    path.write_text("".join(f"{p}\n" for p in problems))
    return path
