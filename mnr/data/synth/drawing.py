"""Drawing a spectrogram: from a dB matrix to the RGBA image a user's data set would hold."""

from __future__ import annotations

import functools

import numpy as np

from mnr.data.synth.config import _ANCHORS, DEFAULT_CONFIG, SynthConfig
from mnr.errors import MnrError

__all__ = ["spectrogram_image"]


@functools.lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """256 x 4 uint8 RGBA table interpolated linearly between the colour map's anchors."""
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _ANCHORS[name]], float)
    x = np.linspace(0.0, 1.0, len(anchors))
    grid = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(grid, x, anchors[:, c]) for c in range(3)], axis=1)
    table = np.full((256, 4), 255, dtype=np.uint8)
    table[:, :3] = np.round(rgb).astype(np.uint8)
    return table


def spectrogram_image(mel_db: np.ndarray, *, config: SynthConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Colour a dB mel spectrogram into a (height, width, 4) uint8 RGBA image.

    The dB range ``[max - top_db, max]`` maps to 0..1 and then through the colour map; the
    lowest band is the bottom row and time runs left to right, as `librosa.display.specshow`
    draws it. Bands and frames are stretched by nearest neighbour.
    """
    mel_db = np.asarray(mel_db, dtype=np.float64)
    if mel_db.ndim != 2 or mel_db.size == 0:
        raise MnrError(
            f"mel_db must be a non-empty (bands, frames) array, got shape {mel_db.shape}"
        )
    bands, frames = mel_db.shape
    level = np.clip((mel_db - mel_db.max() + config.top_db) / config.top_db, 0.0, 1.0)
    table = _colour_table(config.colormap).view(np.uint32)[:, 0]  # one gather per pixel
    small = table[np.round(level * 255).astype(np.intp)][::-1]
    rows = (np.arange(config.height) * bands) // config.height
    cols = (np.arange(config.width) * frames) // config.width
    pixels = small[rows[:, None], cols[None, :]]
    return pixels.view(np.uint8).reshape(config.height, config.width, 4)
