"""Stratified train/validation splits and k-fold indices, reproducible from a seed.

Stratified so that each of the 88 keys keeps its share in both parts: with ~32 images a class, a
plain random split can leave a key with almost nothing to validate on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mnr.errors import MnrError

__all__ = ["check_fold_sizes", "kfold_indices", "stratified_split"]


def _by_class(labels: Sequence[int] | np.ndarray, seed: int) -> list[np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        groups.append(members[rng.permutation(len(members))])
    return groups


def stratified_split(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes round(n * val_fraction) to val.

    A class with at least two images always keeps one on each side; a class with one image stays
    in train. Both index arrays are sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise MnrError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for members in _by_class(labels, seed):
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def check_fold_sizes(labels: Sequence[int] | np.ndarray, folds: int) -> None:
    """Refuse `folds` that would leave some key out of a fold: a key with fewer images than folds
    (`mnr cv --folds` and `mnr tune --folds` both ask this before training)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    fewest = int(counts[counts > 0].min())
    if fewest < folds:
        raise MnrError(
            f"--folds {folds}: some key has only {fewest} training images; use fewer folds"
        )


def kfold_indices(
    labels: Sequence[int] | np.ndarray, *, folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold: `folds` pairs (train, val); every index is in exactly one val part."""
    if folds < 2:
        raise MnrError(f"k-fold needs at least 2 folds, got {folds}")
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    offset = 0
    for members in _by_class(labels, seed):
        # Rotate the starting fold per class so small classes do not all land in fold 0.
        for position, index in enumerate(members):
            parts[(position + offset) % folds].append(np.asarray([index]))
        offset += len(members)
    val_parts = [np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in parts]
    everything = np.arange(len(labels))
    return [(np.setdiff1d(everything, val), val) for val in val_parts]
