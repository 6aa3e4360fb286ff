"""Decode once: every image of a set, preprocessed to uint8 at the input size, in one file.

A 520 x 394 PNG costs 2-3 ms to decode. A notebook pays that for every image in every epoch and
every Optuna trial; mnr pays it once per (file list, file sizes and mtimes, input size, figure
layout) and loads the whole set back in a single read. The folder's detected layout is cached
the same way. The cache holds uint8 (N x 3 x H x W bytes, not a float
copy); conversion to float and normalisation happen per batch on the way to the model.

Files are written to a temporary name and renamed, with a JSON sidecar that records the shape and
a BLAKE2 checksum of the array. A cache that fails to load or to verify is rebuilt, never
trusted: a half-written file from a crash costs one rebuild, not a silent wrong dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mnr import settings
from mnr.console import note
from mnr.data.detection import SAMPLE, LayoutReport, detect_layout
from mnr.data.folder import ImageSet, raise_for_problems
from mnr.data.images import decode_png
from mnr.data.layout import Channels, FigureLayout
from mnr.data.parallel import map_images
from mnr.errors import MnrError
from mnr.files import atomic_write

__all__ = [
    "CACHE_VERSION",
    "DecodedImages",
    "cache_key",
    "cached_layout",
    "decode_images",
    "load_images",
]

CACHE_VERSION = 5  # bump when decode_png's output changes, to invalidate every old cache


@dataclass
class DecodedImages:
    """A decoded set: `images` is N x C x H x W uint8 in the order of `image_set.filenames`,
    read with `layout` (C is 1 for a value channel, 3 for RGB)."""

    image_set: ImageSet
    images: np.ndarray
    key: str
    layout: FigureLayout
    from_cache: bool

    @property
    def labels(self) -> np.ndarray | None:
        if self.image_set.labels is None:
            return None
        return np.asarray(self.image_set.labels, dtype=np.int64)


def _digest(image_set: ImageSet, settings_: dict[str, Any]) -> str:
    """Digest of the file list, each file's size and mtime, and the settings of what is cached."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        json.dumps(
            {"v": CACHE_VERSION, **settings_, "root": str(image_set.root.resolve())}
        ).encode()
    )
    digest.update(image_set.signature)
    return digest.hexdigest()


def cache_key(image_set: ImageSet, *, size: tuple[int, int], layout: FigureLayout) -> str:
    """Digest of the files and the preprocessing: input size and figure layout (plot box,
    colormap, channels)."""
    return _digest(image_set, {"size": list(size), "layout": layout.key()})


def cached_layout(
    image_set: ImageSet,
    *,
    channels: Channels = "auto",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> LayoutReport:
    """`detect_layout` of a set, remembered beside the decoded images (it reads 64 images and
    takes a second or two, which a run from a warm cache should not pay again)."""
    folder = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
    path = folder / f"layout-{_digest(image_set, {'channels': channels, 'sample': SAMPLE})}.json"
    if use_cache and path.is_file():
        try:
            return LayoutReport.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, MnrError):
            pass  # a damaged file is detected again
    report = detect_layout(image_set, channels=channels)
    if use_cache:
        try:
            with atomic_write(path) as fh:
                fh.write(json.dumps(report.to_dict()).encode())
        except OSError:
            pass  # detecting again next time costs a second
    return report


def _checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(
        memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=16
    ).hexdigest()


def decode_images(
    image_set: ImageSet,
    *,
    size: tuple[int, int],
    layout: FigureLayout,
    workers: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Decode every image of `image_set` to N x C x H x W uint8; raise once for all failures."""
    decoded, problems = map_images(
        partial(decode_png, size=size, layout=layout),
        image_set,
        workers=workers,
        progress=progress,
        desc=f"decoding {image_set.root.name}",
    )
    raise_for_problems(problems, what=f"decoding {image_set.root}")
    images = np.empty((len(image_set), layout.in_chans, size[0], size[1]), dtype=np.uint8)
    for index, array in enumerate(decoded):
        images[index] = array
    return images


def _read_cache(
    array_path: Path, meta_path: Path, *, count: int, shape: tuple[int, int, int]
) -> np.ndarray | None:
    if not array_path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, allow_pickle=False)
        expected = (count, *shape)
        if images.dtype != np.uint8 or tuple(images.shape) != expected:
            raise ValueError(f"shape {images.shape} {images.dtype}, expected {expected} uint8")
        if meta.get("checksum") != _checksum(images):
            raise ValueError("checksum mismatch")
        return images
    except Exception as exc:  # any damage means rebuild; the reason goes to the user once
        note(f"image cache {array_path} is unusable ({exc}); rebuilding it")
        return None


def _write_cache(
    array_path: Path, meta_path: Path, images: np.ndarray, image_set: ImageSet
) -> None:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"checksum": _checksum(images), "shape": list(images.shape), "root": str(image_set.root)}
    with atomic_write(array_path) as fh:
        np.save(fh, images, allow_pickle=False)
    with atomic_write(meta_path) as fh:
        fh.write(json.dumps(meta).encode())


def load_images(
    image_set: ImageSet,
    *,
    size: tuple[int, int],
    layout: FigureLayout | None = None,
    channels: Channels = "auto",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> DecodedImages:
    """The decoded images of a set, from the cache when it is valid, else decoded and cached.

    `layout` is how to read the images (`mnr.data.layout`); None means the set's own, detected
    (`cached_layout`, with `channels`). The set's own problems (bad truth lines, missing files)
    are raised first, before any decoding. A cache that cannot be written (read-only or full
    disk) is a note: training goes on from memory.
    """
    raise_for_problems(image_set.problems, what=str(image_set.truth_path or image_set.root))
    size = (int(size[0]), int(size[1]))
    if layout is None:
        layout = cached_layout(
            image_set, channels=channels, cache_dir=cache_dir, use_cache=use_cache
        ).layout
    key = cache_key(image_set, size=size, layout=layout)
    folder = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache:
        shape = (layout.in_chans, *size)
        images = _read_cache(array_path, meta_path, count=len(image_set), shape=shape)
        if images is not None:
            return DecodedImages(
                image_set=image_set, images=images, key=key, layout=layout, from_cache=True
            )
    images = decode_images(image_set, size=size, layout=layout, workers=workers, progress=progress)
    if use_cache:
        try:
            _write_cache(array_path, meta_path, images, image_set)
        except OSError as exc:
            note(f"could not write the image cache in {folder} ({exc}); continuing without it")
    return DecodedImages(
        image_set=image_set, images=images, key=key, layout=layout, from_cache=False
    )
