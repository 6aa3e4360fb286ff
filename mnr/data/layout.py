"""Where the plot is in a folder's figures, and how its colours read back: the figure layout.

Nobody knows how a user's images were drawn. Most are matplotlib or librosa figures: a plot with
axes, ticks, labels, a title, often a colorbar, white margins, in some colormap. Squeezing the
whole figure to the model's input size gives the plot fewer rows than it has mel bands and
feeds the decorations to the network. What tells the plot apart is that it changes from image
to image, while the decorations are the same in every one. So `detect_layout` looks at a sample
of a folder's images and finds:

- the plot box: the rectangle of pixels that vary across the sample (a full-bleed image is its
  own plot box);
- the colormap: the known colormap whose lookup table the plot's pixels lie closest to
  (`mnr.data.colormaps`), if any lies close, and its direction;
- the channels the model sees: "value" (one channel, the value read back through the colormap)
  when the colormap is known, else "rgb";
- the bands: a plot drawn without interpolation (`pcolormesh`, a full-bleed render) repeats
  each mel band over a few identical rows in every image, so the rows where the images change
  from one row to the next are the band edges. Reading the middle row of each band keeps every
  band once, also where they are not all of one height (librosa's mel axis is linear below
  1 kHz and logarithmic above, so its low bands are narrower). An interpolated plot (`imshow`)
  has no such rows, and is sampled evenly.

The result, a `FigureLayout`, is part of the decode-cache key, logged with every run, and
carried in the model's input config, so that prediction, evaluation and the served model crop
and read back exactly as training did. `check` refuses an image drawn another way (another
size, frame or colormap) with a message naming the file and both layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mnr.errors import MnrError

__all__ = [
    "Channels",
    "FigureLayout",
    "full_bleed",
]

Channels = Literal["auto", "value", "rgb"]
FRAME_TOLERANCE = 12.0  # mean RGB difference of an image's frame to the layout's, at most
_ACCEPT_DISTANCE = 12.0  # an image's plot may lie this far from the colormap (mean), at most


@dataclass(frozen=True)
class FigureLayout:
    """How a folder's images are drawn: image size, plot box, colormap and the model's channels.

    `box` is (left, top, right, bottom) in pixels, right and bottom exclusive. `colormap` is None
    when no known colormap fits; `channels` is "value" (one channel read back through the
    colormap) or "rgb". `frame` is the mean colour of everything outside the box (None for a
    full-bleed image), and `distance` the plot's mean distance to the colormap: what `check`
    compares an image with.
    """

    image_size: tuple[int, int]  # (width, height)
    box: tuple[int, int, int, int]
    colormap: str | None = None
    channels: Literal["value", "rgb"] = "rgb"
    frame: tuple[float, float, float] | None = None
    distance: float | None = None
    bands: tuple[int, ...] | None = None  # the middle row of each band, from the box's top

    @property
    def in_chans(self) -> int:
        """Channels of the decoded image: 1 for "value", 3 for "rgb"."""
        return 1 if self.channels == "value" else 3

    @property
    def plot_size(self) -> tuple[int, int]:
        """(height, width) of the plot box in pixels."""
        left, top, right, bottom = self.box
        return bottom - top, right - left

    @property
    def full_bleed(self) -> bool:
        return self.box == (0, 0, *self.image_size)

    def key(self) -> dict[str, Any]:
        """What decoding depends on (for the cache key): size, box, colormap, channels, bands."""
        return {
            "image_size": list(self.image_size),
            "box": list(self.box),
            "colormap": self.colormap if self.channels == "value" else None,
            "channels": self.channels,
            "bands": None if self.bands is None else list(self.bands),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, for the model's input config, MLflow params and layout.json."""
        return {
            **self.key(),
            "colormap": self.colormap,
            "frame": None if self.frame is None else [round(v, 2) for v in self.frame],
            "distance": None if self.distance is None else round(self.distance, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FigureLayout:
        """The inverse of `to_dict`; a damaged or foreign dict is an `MnrError`."""
        try:
            width, height = (int(v) for v in data["image_size"])
            left, top, right, bottom = (int(v) for v in data["box"])
            channels = data.get("channels", "rgb")
            if channels not in ("value", "rgb"):
                raise ValueError(f"channels {channels!r}")
            frame = data.get("frame")
            return cls(
                image_size=(width, height),
                box=(left, top, right, bottom),
                colormap=data.get("colormap"),
                channels=channels,
                frame=None if frame is None else tuple(float(v) for v in frame),  # type: ignore[arg-type]
                distance=None if data.get("distance") is None else float(data["distance"]),
                bands=None if data.get("bands") is None else tuple(int(v) for v in data["bands"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MnrError(
                f"the figure layout {data!r} is damaged ({exc}); was it written by mnr?"
            ) from None

    def describe(self) -> str:
        """One line, e.g. `520x394, plot 332x299 at (80, 36), magma, 1 value channel`."""
        left, top, right, bottom = self.box
        width, height = self.image_size
        where = (
            "the whole image"
            if self.full_bleed
            else f"{right - left}x{bottom - top} at ({left}, {top})"
        )
        colours = f"{self.colormap} read back to 1 value channel" if self.channels == "value" else (
            f"{self.colormap or 'unknown colormap'}, RGB kept"
        )  # fmt: skip
        bands = f", {len(self.bands)} bands" if self.bands is not None else ""
        return f"{width}x{height} images, plot {where}{bands}, {colours}"

    def matches(self, other: FigureLayout, *, tolerance: int = 2) -> bool:
        """Same size, channels and colormap, and a box within `tolerance` pixels on every side."""
        return (
            self.image_size == other.image_size
            and self.channels == other.channels
            and (self.channels == "rgb" or self.colormap == other.colormap)
            and all(abs(a - b) <= tolerance for a, b in zip(self.box, other.box, strict=True))
        )

    def check(self, rgb: np.ndarray, *, name: str) -> None:
        """Refuse an image (H x W x 3 uint8) that was not drawn like this layout.

        Its size must be the layout's; its frame (outside the box) must have the layout's mean
        colour; with a colormap, its plot must lie near that colormap. The message names the file
        and both layouts, so that a wrong folder or a wrong model is never a silent wrong answer.
        """
        height, width = rgb.shape[:2]
        if (width, height) != self.image_size:
            raise MnrError(
                f"{name}: the image is {width}x{height}, but the model reads {self.describe()}. "
                "Predict with a model trained on images drawn like these."
            )
        if self.frame is not None:
            mean = frame_mean(rgb, self.box)
            if max(abs(a - b) for a, b in zip(mean, self.frame, strict=True)) > FRAME_TOLERANCE:
                raise MnrError(
                    f"{name}: the figure around the plot differs from the model's layout (mean colour "
                    f"{rgb_text(mean)}, expected {rgb_text(self.frame)}); the model reads {self.describe()}. "
                    "The image was drawn with another layout: use a model trained on such images."
                )
        if self.channels == "value" and self.colormap is not None:
            from mnr.data.colormaps import ReadBack

            left, top, right, bottom = self.box
            distance = float(
                ReadBack(self.colormap).distances(rgb[top:bottom:3, left:right:3]).mean()
            )
            limit = max(_ACCEPT_DISTANCE, 3.0 * (self.distance or 0.0))
            if distance > limit:
                raise MnrError(
                    f"{name}: the plot's colours lie {distance:.1f} from {self.colormap} on average (at "
                    f"most {limit:.1f} expected); the model reads {self.describe()}. The image was drawn "
                    "with another colormap or layout: use a model trained on such images."
                )

    def blank_image(self) -> np.ndarray:
        """An H x W x 3 image drawn with this layout: the frame's colour around a silent plot
        (the colormap's low end, or black). What a logged model's input example shows."""
        width, height = self.image_size
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = np.round(self.frame) if self.frame is not None else 0
        left, top, right, bottom = self.box
        if self.colormap is not None:
            from mnr.data.colormaps import lut

            image[top:bottom, left:right] = lut(self.colormap)[0]
        else:
            image[top:bottom, left:right] = 0
        return image

    def extract(self, rgb: np.ndarray, *, size: tuple[int, int], name: str) -> np.ndarray:
        """What a model reads of an H x W x 3 uint8 image: C x size[0] x size[1] uint8.

        The image is checked (`check`), its plot box cropped, and the box resized to `size` one
        axis at a time, because the two axes of a spectrogram are not alike. Frequency (height)
        is sampled by nearest neighbour: each output row takes one source row, the middle row of
        a band where the bands are known (`bands`), else the row at the middle of its span. A
        plot stretches each mel band over a few rows, and sampling keeps one band per row where
        averaging rows (what torchvision's `Resize` does) mixes neighbouring bands, which the
        lowest keys cannot afford (bn_cnn 98.2 % with bilinear rows, 99.8 % with this;
        docs/data.md). Rows are picked first, which also makes the rest cheaper.
        With a value channel, each pixel is then read back through the colormap before any
        averaging (an average of two colours is not the colour of their average value). Time
        (width) is averaged last with Pillow's antialiased bilinear filter: a held note's pitch
        does not change along time, so averaging frames keeps it and smooths the noise.
        """
        from PIL import Image

        self.check(rgb, name=name)
        left, top, right, bottom = self.box
        height, width = size
        plot = rgb[top:bottom, left:right]
        sources = (
            np.asarray(self.bands, dtype=np.intp)
            if self.bands is not None
            else np.arange(plot.shape[0])
        )
        rows = sources[((np.arange(height) + 0.5) * (len(sources) / height)).astype(np.intp)]
        plot = plot[rows]
        if self.channels == "value":
            from mnr.data.colormaps import ReadBack

            plot = ReadBack(self.colormap).values(plot)  # type: ignore[arg-type]
        if plot.shape[1] != width:
            resized = Image.fromarray(np.ascontiguousarray(plot)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
            plot = np.asarray(resized)
        return np.ascontiguousarray(plot.reshape(height, width, -1).transpose(2, 0, 1))


def full_bleed(width: int, height: int) -> FigureLayout:
    """The layout of an image that is all plot, colours kept as RGB (what a layout-less model reads)."""
    return FigureLayout(image_size=(width, height), box=(0, 0, width, height))


def frame_mean(rgb: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """Mean colour of the pixels outside `box`, on every 4th row and column (a sixteenth of the
    work, and the same pixels every time)."""
    left, top, right, bottom = box
    grid = rgb[::4, ::4].astype(np.float64)
    rows = np.arange(0, rgb.shape[0], 4)
    cols = np.arange(0, rgb.shape[1], 4)
    inside = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    outside = grid[~inside]
    if len(outside) == 0:
        return (0.0, 0.0, 0.0)
    return tuple(float(v) for v in outside.mean(axis=0))  # type: ignore[return-value]


def rgb_text(colour: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in colour) + ")"
