"""Drawing a spectrogram: from a dB matrix to the RGBA image a user's data set would hold.

Three styles (`SynthConfig.style`), each what a common way of plotting produces:

- "full": the matrix fills the image, stretched by nearest neighbour, through the colormap's
  lookup table (the built-in set).
- "specshow": a matplotlib figure as `librosa.display.specshow(S_db, x_axis="time",
  y_axis="mel")` draws it: a `pcolormesh` of the bands at their frequencies on librosa's mel
  axis (symlog, linear below 1 kHz, base 2), Hz and time ticks, axis labels, a title and a
  `%+2.0f dB` colorbar. Bands are therefore not all the same height in pixels.
- "imshow": `plt.imshow(S_db, origin="lower", aspect="auto")` with a title and pixel-index
  axes; matplotlib's default antialiased interpolation blends neighbouring bands' colours where
  it upsamples by less than 3x.

Like the plotting calls they imitate, both figures scale colours to each image's own range
(matplotlib's autoscaling): a quiet recording that never reaches the -80 dB floor is drawn with
more contrast, and the colorbar's ticks move with it.

Figures are drawn by matplotlib itself (Agg, no pyplot state). A figure's frame (axes, ticks,
labels, colorbar) is the same for every image, so each process draws it once and then redraws
only the plot and its spines over a copy of it (blitting): the same pixels as a full redraw
(checked by a test), ~9 ms instead of ~85 ms an image. `plot_box` says where the plot is.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from mnr.data.colormaps import lut
from mnr.data.synth.config import DEFAULT_CONFIG, SynthConfig
from mnr.data.synth.mel import mel_edges
from mnr.errors import MnrError

__all__ = ["draw_full", "plot_box", "spectrogram_image"]

_DPI = 100  # a 520 x 394 image is a 5.2 x 3.94 inch figure


def _check(mel_db: np.ndarray) -> np.ndarray:
    mel_db = np.asarray(mel_db, dtype=np.float64)
    if mel_db.ndim != 2 or mel_db.size == 0:
        raise MnrError(
            f"mel_db must be a non-empty (bands, frames) array, got shape {mel_db.shape}"
        )
    return mel_db


def spectrogram_image(mel_db: np.ndarray, *, config: SynthConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Draw a dB mel spectrogram (max 0 dB, floor -top_db) as a (height, width, 4) uint8 image.

    The lowest band is at the bottom and time runs left to right in every style.
    """
    mel_db = _check(mel_db)
    if config.style == "full":
        return draw_full(mel_db, config=config)
    return _figure(config).draw(mel_db)


def draw_full(mel_db: np.ndarray, *, config: SynthConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The "full" style: ``[max - top_db, max]`` maps to the colormap's 256 entries, bands and
    frames are stretched to the image by nearest neighbour."""
    mel_db = _check(mel_db)
    bands, frames = mel_db.shape
    level = np.clip((mel_db - mel_db.max() + config.top_db) / config.top_db, 0.0, 1.0)
    table = np.full((256, 4), 255, dtype=np.uint8)
    table[:, :3] = lut(config.colormap)
    small = table.view(np.uint32)[:, 0][np.round(level * 255).astype(np.intp)][
        ::-1
    ]  # one gather a pixel
    rows = (np.arange(config.height) * bands) // config.height
    cols = (np.arange(config.width) * frames) // config.width
    pixels = small[rows[:, None], cols[None, :]]
    return pixels.view(np.uint8).reshape(config.height, config.width, 4)


def plot_box(config: SynthConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) pixels of the plot in an image of this style; right and bottom
    are exclusive. The whole image for "full"."""
    if config.style == "full":
        return 0, 0, config.width, config.height
    return _figure(config).box


class _Figure:
    """One style's matplotlib figure, its frame drawn once, redrawn per image by blitting."""

    def __init__(self, config: SynthConfig, bands: int, frames: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import ScalarFormatter

        self.config = config
        self.shape = (bands, frames)
        self.figure = Figure(figsize=(config.width / _DPI, config.height / _DPI), dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        placeholder = np.full((bands, frames), -config.top_db)
        limits = {"vmin": -config.top_db, "vmax": 0.0, "cmap": config.colormap}
        if config.style == "specshow":
            seconds = np.arange(frames + 1) * config.hop_length / config.sample_rate
            self.plot: Any = self.axes.pcolormesh(
                seconds, mel_edges(config), placeholder, shading="flat", edgecolors="none", **limits
            )
            self.axes.set_yscale("symlog", linthresh=1000.0, base=2)  # librosa's mel axis
            self.axes.set_ylim(config.fmin, config.fmax)
            self.axes.yaxis.set_major_formatter(ScalarFormatter())
            self.axes.set_xlabel("Time")
            self.axes.set_ylabel("Hz")
            self.figure.colorbar(self.plot, ax=self.axes, format="%+2.0f dB")
            self.axes.set_title("Mel-frequency spectrogram")
        else:
            self.plot = self.axes.imshow(placeholder, origin="lower", aspect="auto", **limits)
            self.axes.set_title("log-mel spectrogram")
        self.colorbar = self.figure.axes[1] if len(self.figure.axes) > 1 else None
        self.figure.tight_layout()
        self._background = self._frame()
        x0, y0, x1, y1 = self.axes.get_window_extent().extents
        height = config.height
        self.box = (round(x0), round(height - y1), round(x1), round(height - y0))

    def _dynamic(self) -> list[Any]:
        """What changes from image to image: the plot, the spines over it, the colorbar."""
        return [self.plot, *self.axes.spines.values(), *([self.colorbar] if self.colorbar else [])]

    def _frame(self) -> Any:
        """Everything but the dynamic artists, rendered once."""
        for artist in self._dynamic():
            artist.set_visible(False)
        self.canvas.draw()
        background = self.canvas.copy_from_bbox(self.figure.bbox)
        for artist in self._dynamic():
            artist.set_visible(True)
        return background

    def draw(self, mel_db: np.ndarray) -> np.ndarray:
        """The figure of `mel_db` as a (height, width, 4) uint8 RGBA array."""
        if mel_db.shape != self.shape:
            raise MnrError(f"mel_db has shape {mel_db.shape}; this figure draws {self.shape}")
        self.canvas.restore_region(self._background)
        if self.config.style == "specshow":
            self.plot.set_array(mel_db.ravel())
        else:
            self.plot.set_data(mel_db)
        self.plot.set_clim(float(mel_db.min()), float(mel_db.max()))  # autoscaled, as by default
        for artist in self._dynamic():
            self.figure.draw_artist(artist)
        return np.array(self.canvas.buffer_rgba(), dtype=np.uint8)

    def redraw(self, mel_db: np.ndarray) -> np.ndarray:
        """The same figure drawn in full, without blitting (what `draw` must equal)."""
        self.draw(mel_db)
        self.canvas.draw()
        return np.array(self.canvas.buffer_rgba(), dtype=np.uint8)


def _frames(config: SynthConfig) -> int:
    """Frames of a centred STFT of one clip."""
    return 1 + config.num_samples // config.hop_length


@functools.lru_cache(maxsize=8)
def _figure(config: SynthConfig) -> _Figure:
    return _Figure(config, config.n_mels, _frames(config))
