"""Training data as the engine wants it: uint8 arrays for train, validation and test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mnr.data.builtin import DataPaths, resolve_data
from mnr.data.cache import DecodedImages, load_images
from mnr.data.folder import scan_folder
from mnr.data.split import stratified_split

__all__ = ["TrainingData", "load_training_data"]


@dataclass
class TrainingData:
    """Decoded, split data: images N x 3 x H x W uint8, labels int64.

    `test_*` is the held-out set (never used for training or model selection) when the dataset
    has labelled test images; validation is carved from the training folder by a stratified split.
    """

    paths: DataPaths
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    digest: str  # identifies the decoded train folder and split; logged as the dataset digest
    from_cache: bool

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[2:])  # type: ignore[return-value]


def load_training_data(
    data: str | None,
    *,
    input_size: tuple[int, int],
    val_fraction: float = 0.2,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> TrainingData:
    """Validate, decode (or load from cache) and split a dataset; `data=None` is the built-in set.

    Validation of the truth file runs before any decoding, and every image problem is reported
    at once, so nothing is trained on a folder that `mnr data check` would reject.
    """
    paths = resolve_data(data, progress=progress)
    train = load_images(
        scan_folder(paths.train), size=input_size, workers=workers, progress=progress
    )
    labels = train.labels
    train_idx, val_idx = stratified_split(labels, val_fraction=val_fraction, seed=split_seed)
    test: DecodedImages | None = None
    if paths.test is not None:
        test = load_images(
            scan_folder(paths.test, truth=paths.test_truth),
            size=input_size,
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
        digest=digest,
        from_cache=train.from_cache and (test is None or test.from_cache),
    )
