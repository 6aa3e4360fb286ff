"""Training data as the engine wants it: uint8 arrays for train, validation and test."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from mnr.data.builtin import DataPaths, resolve_data
from mnr.data.cache import DecodedImages, cached_layout, load_images
from mnr.data.detection import LayoutReport
from mnr.data.folder import raise_for_problems, scan_folder
from mnr.data.layout import Channels, FigureLayout
from mnr.data.split import stratified_split

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """Decoded, split data: images N x C x H x W uint8, labels int64, and how they were read.

    `test_*` is the held-out set (never used for training or model selection) when the dataset
    has labelled test images; validation is carved from the training folder by a stratified split.
    `layout` is the training folder's figure layout (`report` says how it was found); the test
    images are read with the same one.
    """

    paths: DataPaths
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    test_files: list[str] | None  # the test images' file names, in the order of test_images
    digest: str  # identifies the decoded train folder and split; logged as the dataset digest
    from_cache: bool
    report: LayoutReport
    folder: DecodedImages  # the whole training folder as decoded, for other splits (k folds)

    @property
    def layout(self) -> FigureLayout:
        return self.report.layout

    @property
    def sample_file(self) -> str:
        """One training image (its name in the train folder), for previews."""
        return self.folder.image_set.filenames[0]

    def with_split(self, train_idx: np.ndarray, val_idx: np.ndarray, *, name: str) -> TrainingData:
        """The same data split another way: `train_idx` and `val_idx` index the training folder
        (`folder`); `name` (e.g. "fold 2 of 5, seed 0") goes into the dataset digest."""
        labels = self.folder.labels
        digest = hashlib.blake2b(f"{self.folder.key}:{name}".encode(), digest_size=8).hexdigest()
        return dataclasses.replace(
            self,
            train_images=self.folder.images[train_idx],
            train_labels=labels[train_idx],
            val_images=self.folder.images[val_idx],
            val_labels=labels[val_idx],
            digest=digest,
        )

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[2:])  # type: ignore[return-value]


def load_training_data(
    data: str | None,
    *,
    input_size: tuple[int, int],
    channels: Channels = "auto",
    val_fraction: float = 0.2,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> TrainingData:
    """Validate, decode (or load from cache) and split a dataset; `data=None` is the built-in set.

    Validation of the truth file runs before any decoding, and every image problem is reported
    at once, so nothing is trained on a folder that `mnr data check` would reject. The layout
    is detected on the training folder (`channels` chooses value or RGB); a test image drawn
    another way is an error that names it.
    """
    paths = resolve_data(data, progress=progress)
    train_set = scan_folder(paths.train)
    raise_for_problems(train_set.problems, what=str(train_set.truth_path or train_set.root))
    report = cached_layout(train_set, channels=channels)
    train = load_images(
        train_set, size=input_size, layout=report.layout, workers=workers, progress=progress
    )
    labels = train.labels
    train_idx, val_idx = stratified_split(labels, val_fraction=val_fraction, seed=split_seed)
    test: DecodedImages | None = None
    if paths.test is not None:
        test = load_images(
            scan_folder(paths.test, truth=paths.test_truth),
            size=input_size,
            layout=report.layout,
            workers=workers,
            progress=progress,
        )
    digest = hashlib.blake2b(
        f"{train.key}:{val_fraction}:{split_seed}".encode(), digest_size=8
    ).hexdigest()
    return TrainingData(
        paths=paths,
        train_images=train.images[train_idx],
        train_labels=labels[train_idx],
        val_images=train.images[val_idx],
        val_labels=labels[val_idx],
        test_images=test.images if test is not None else None,
        test_labels=test.labels if test is not None else None,
        test_files=list(test.image_set.filenames) if test is not None else None,
        digest=digest,
        from_cache=train.from_cache and (test is None or test.from_cache),
        report=report,
        folder=train,
    )
