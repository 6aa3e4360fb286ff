"""Reading a figure's colours back to the values it was drawn from.

A spectrogram figure maps each value to a colour through a colormap's lookup table (256 entries
in matplotlib). Where the colormap is known, the inverse is the position of a pixel's nearest
table entry: one channel holding the value itself, instead of three channels of a curve through
RGB that a network would have to learn to unroll (and that differs for every colormap).

- `KNOWN` lists the colormaps mnr recognises; their tables come from matplotlib.
- `fit` tells how close a sample of pixels lies to each table (mean RGB distance to the nearest
  entry), which is how a dataset's colormap is detected.
- `ReadBack` maps RGB pixels to values through a precomputed 64 x 64 x 64 table of nearest
  entries (6 bits per channel), one gather per pixel, as cheap as the decode itself. The table is
  built once per colormap (under a second) and cached on disk beside the decode cache, so a
  prediction does not import matplotlib. A cell is 4 x 4 x 4 colours wide, so a value is within
  1 entry of the exact nearest on average and at most 5 (2 % of the range, where a colormap
  changes slowly); an exact table would have 16 million cells.

Reversed maps (`magma_r`) hold the same colours in the other order, as do gray and Greys (white
to black, with another curve), so colours alone cannot tell them apart. The direction is chosen
so that most of the plot reads as low values: a spectrogram in dB is mostly quiet background
(`orient`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from mnr import settings
from mnr.errors import MnrError
from mnr.files import atomic_write

__all__ = ["KNOWN", "ColormapFit", "ReadBack", "fit", "lut", "orient"]

# Perceptual maps first (librosa's default magma, matplotlib's default viridis), then the rest.
KNOWN = ("magma", "inferno", "plasma", "viridis", "cividis", "gray", "Greys", "jet", "turbo")
_BITS = 6  # per channel in the read-back table: cells of 4 x 4 x 4 RGB values
_CELLS = 1 << _BITS
_SHIFT = 8 - _BITS


@functools.lru_cache(maxsize=32)
def lut(name: str) -> np.ndarray:
    """The 256 x 3 uint8 RGB lookup table of a matplotlib colormap (a `_r` suffix reverses it)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise MnrError(
            f"colormap {name!r} is not a matplotlib colormap (e.g. {', '.join(KNOWN)})"
        ) from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def _nearest(colours: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For N x 3 colours: the index of the nearest of the table's entries and the RGB distance."""
    colours = colours.astype(np.float32)
    entries = table.astype(np.float32)
    index = np.empty(len(colours), dtype=np.int64)
    distance = np.empty(len(colours), dtype=np.float32)
    norms = (entries**2).sum(axis=1)
    for start in range(0, len(colours), 32768):  # ~32 MB of distances at a time
        chunk = colours[start : start + 32768]
        squared = (chunk**2).sum(axis=1)[:, None] - 2.0 * chunk @ entries.T + norms[None, :]
        best = squared.argmin(axis=1)
        index[start : start + len(chunk)] = best
        distance[start : start + len(chunk)] = np.sqrt(
            np.maximum(squared[np.arange(len(chunk)), best], 0.0)
        )
    return index, distance


@dataclass(frozen=True)
class ColormapFit:
    """How well a sample of pixels matches a colormap: their mean distance to its table."""

    name: str
    distance: float  # mean RGB distance of a pixel to its nearest table entry (0 = exact)


def fit(pixels: np.ndarray, *, names: tuple[str, ...] = KNOWN) -> list[ColormapFit]:
    """Every colormap of `names` scored on N x 3 uint8 pixels, best (smallest distance) first.

    Distances are computed per distinct colour and weighted by its count, so a sample of a
    hundred thousand pixels drawn from a few thousand colours costs milliseconds.
    """
    pixels = np.asarray(pixels, dtype=np.uint8).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    weights = counts / counts.sum()
    scores = [
        ColormapFit(name, float((_nearest(colours, lut(name))[1] * weights).sum()))
        for name in names
    ]
    return sorted(scores, key=lambda score: score.distance)


def orient(name: str, values: np.ndarray) -> str:
    """`name`, reversed (`_r`, or Greys for gray) when most of the plot would read as high values.

    A dB spectrogram is mostly quiet background (low values), whichever way it was drawn.
    """
    if float(np.median(values)) <= 127.5:
        return name
    if name == "gray":
        return "Greys"
    if name == "Greys":
        return "gray"
    return name.removesuffix("_r") if name.endswith("_r") else f"{name}_r"


_loaded_tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (index, distance) tables


def _table_path(name: str) -> Path:
    """Where a colormap's read-back tables are cached; the key holds matplotlib's version, whose
    tables they are built from, so finding the file needs no matplotlib import."""
    key = f"{name}:{_BITS}:{version('matplotlib')}"
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return settings.cache_dir() / "colormaps" / f"{name}-{digest}.npz"


class ReadBack:
    """Pixels to values for one colormap, through a 64^3 table of nearest entries.

    `values(rgb)` gives uint8 values 0..255 (the table position); `distances(rgb)` how far each
    pixel lies from the colormap (a figure drawn with another colormap or layout lies far).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._index, self._distance = _table(name)

    def _cells(self, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb, dtype=np.uint8)
        r = rgb[..., 0].astype(np.intp) >> _SHIFT
        g = rgb[..., 1].astype(np.intp) >> _SHIFT
        b = rgb[..., 2].astype(np.intp) >> _SHIFT
        return (r << (2 * _BITS)) | (g << _BITS) | b

    def values(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 pixels -> H x W uint8 values (0 = the colormap's low end)."""
        return self._index[self._cells(rgb)]

    def distances(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 pixels -> H x W uint8 RGB distances to the nearest entry (capped at 255)."""
        return self._distance[self._cells(rgb)]


def _table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The (nearest index, distance) tables of a colormap: in memory, on disk, or built now."""
    if name in _loaded_tables:
        return _loaded_tables[name]
    path = _table_path(name)
    try:
        with np.load(path, allow_pickle=False) as stored:
            tables = stored["index"], stored["distance"]
        if tables[0].shape != (_CELLS**3,) or tables[1].shape != (_CELLS**3,):
            raise ValueError("wrong shape")
    except (OSError, ValueError, KeyError):
        tables = _build(name)
        _store(path, tables)
    _loaded_tables[name] = tables
    return tables


def _build(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Nearest entry and distance for the centre of every 4 x 4 x 4 cell of RGB space."""
    centres = np.arange(_CELLS, dtype=np.float32) * (1 << _SHIFT) + ((1 << _SHIFT) - 1) / 2.0
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(-1, 3)
    index, distance = _nearest(grid, lut(name))
    return index.astype(np.uint8), np.minimum(np.round(distance), 255).astype(np.uint8)


def _store(path: Path, tables: tuple[np.ndarray, np.ndarray]) -> None:
    """Write the tables atomically; a cache that cannot be written only costs a rebuild."""
    try:
        with atomic_write(path) as fh:
            np.savez(fh, index=tables[0], distance=tables[1])
    except OSError:
        pass
