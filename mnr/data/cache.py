"""Decode once: every image of a set, preprocessed to uint8 at the input size, in one file.

A 520 x 394 PNG costs 2-3 ms to decode. A notebook pays that for every image in every epoch and
every Optuna trial; mnr pays it once per (file list, file sizes and mtimes, input size) and loads
the whole set back in a single read. The cache holds uint8 (N x 3 x H x W bytes, not a float
copy); conversion to float and normalisation happen per batch on the way to the model.

Files are written to a temporary name and renamed, with a JSON sidecar that records the shape and
a BLAKE2 checksum of the array. A cache that fails to load or to verify is rebuilt, never
trusted: a half-written file from a crash costs one rebuild, not a silent wrong dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mnr import settings
from mnr.data.folder import ImageSet, raise_for_problems
from mnr.data.images import decode_png
from mnr.data.parallel import map_images

__all__ = ["CACHE_VERSION", "DecodedImages", "cache_key", "decode_images", "load_images"]

CACHE_VERSION = 2  # bump when decode_png's output changes, to invalidate every old cache


@dataclass
class DecodedImages:
    """A decoded set: `images` is N x 3 x H x W uint8 in the order of `image_set.filenames`."""

    image_set: ImageSet
    images: np.ndarray
    key: str
    from_cache: bool

    @property
    def labels(self) -> np.ndarray | None:
        if self.image_set.labels is None:
            return None
        return np.asarray(self.image_set.labels, dtype=np.int64)


def cache_key(image_set: ImageSet, *, size: tuple[int, int]) -> str:
    """Digest of the file list, each file's size and mtime, and the preprocessing parameters."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        json.dumps(
            {"v": CACHE_VERSION, "size": list(size), "root": str(image_set.root.resolve())}
        ).encode()
    )
    for name in image_set.filenames:
        stat = os.stat(image_set.root / name)
        digest.update(f"\n{name}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(
        memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=16
    ).hexdigest()


def decode_images(
    image_set: ImageSet, *, size: tuple[int, int], workers: int | None = None, progress: bool = True
) -> np.ndarray:
    """Decode every image of `image_set` to N x 3 x H x W uint8; raise once for all failures."""
    decoded, problems = map_images(
        partial(decode_png, size=size),
        image_set,
        workers=workers,
        progress=progress,
        desc=f"decoding {image_set.root.name}",
    )
    raise_for_problems(problems, what=f"decoding {image_set.root}")
    images = np.empty((len(image_set), 3, size[0], size[1]), dtype=np.uint8)
    for index, array in enumerate(decoded):
        images[index] = array
    return images


def _read_cache(
    array_path: Path, meta_path: Path, *, count: int, size: tuple[int, int]
) -> np.ndarray | None:
    if not array_path.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, allow_pickle=False)
        expected = (count, 3, size[0], size[1])
        if images.dtype != np.uint8 or tuple(images.shape) != expected:
            raise ValueError(f"shape {images.shape} {images.dtype}, expected {expected} uint8")
        if meta.get("checksum") != _checksum(images):
            raise ValueError("checksum mismatch")
        return images
    except Exception as exc:  # any damage means rebuild; the reason goes to the user once
        warnings.warn(f"image cache {array_path} is unusable ({exc}); rebuilding it", stacklevel=3)
        return None


def _write_cache(
    array_path: Path, meta_path: Path, images: np.ndarray, image_set: ImageSet
) -> None:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"checksum": _checksum(images), "shape": list(images.shape), "root": str(image_set.root)}
    for path, writer in (
        (array_path, lambda fh: np.save(fh, images, allow_pickle=False)),
        (meta_path, lambda fh: fh.write(json.dumps(meta).encode())),
    ):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                writer(fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_images(
    image_set: ImageSet,
    *,
    size: tuple[int, int],
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> DecodedImages:
    """The decoded images of a set, from the cache when it is valid, else decoded and cached.

    The set's own problems (bad truth lines, missing files) are raised first, before any
    decoding. A cache that cannot be written (read-only or full disk) is a warning: training
    goes on from memory.
    """
    raise_for_problems(image_set.problems, what=str(image_set.truth_path or image_set.root))
    size = (int(size[0]), int(size[1]))
    key = cache_key(image_set, size=size)
    folder = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache:
        images = _read_cache(array_path, meta_path, count=len(image_set), size=size)
        if images is not None:
            return DecodedImages(image_set=image_set, images=images, key=key, from_cache=True)
    images = decode_images(image_set, size=size, workers=workers, progress=progress)
    if use_cache:
        try:
            _write_cache(array_path, meta_path, images, image_set)
        except OSError as exc:
            warnings.warn(
                f"could not write the image cache in {folder} ({exc}); continuing without it",
                stacklevel=2,
            )
    return DecodedImages(image_set=image_set, images=images, key=key, from_cache=False)
