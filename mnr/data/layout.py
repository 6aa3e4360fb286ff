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
  when the colormap is known, else "rgb".

The result, a `FigureLayout`, is part of the decode-cache key, logged with every run, and
carried in the model's input config, so that prediction, evaluation and the served model crop
and read back exactly as training did. `check` refuses an image drawn another way (another
size, frame or colormap) with a message naming the file and both layouts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mnr.data.folder import ImageSet
from mnr.data.images import read_rgb
from mnr.errors import MnrError

__all__ = [
    "Channels",
    "FigureLayout",
    "LayoutReport",
    "check_folder_layout",
    "detect_layout",
    "full_bleed",
]

Channels = Literal["auto", "value", "rgb"]
SAMPLE = 64  # images looked at: enough that every plot pixel varies somewhere, ~0.3 s to read
_VARYING = 8  # a pixel whose channels span more than this across the sample is part of the plot
_COLORMAP_FIT = 6.0  # mean RGB distance to a colormap's table under which the plot uses it
_FRAME_TOLERANCE = 12.0  # mean RGB difference of an image's frame to the layout's, at most
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
        """What decoding depends on (for the cache key): size, box, colormap, channels."""
        return {
            "image_size": list(self.image_size),
            "box": list(self.box),
            "colormap": self.colormap if self.channels == "value" else None,
            "channels": self.channels,
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
        return f"{width}x{height} images, plot {where}, {colours}"

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
            mean = _frame_mean(rgb, self.box)
            if max(abs(a - b) for a, b in zip(mean, self.frame, strict=True)) > _FRAME_TOLERANCE:
                raise MnrError(
                    f"{name}: the figure around the plot differs from the model's layout (mean colour "
                    f"{_rgb(mean)}, expected {_rgb(self.frame)}); the model reads {self.describe()}. "
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
        is sampled by nearest neighbour, each output row taking the source row at the middle of
        its span: a plot stretches each mel band over two or three rows, and sampling keeps one
        band per row where averaging rows (what torchvision's `Resize` does) mixes neighbouring
        bands, which the lowest keys cannot afford (bn_cnn 98.2 % with bilinear rows, 99.8 %
        with this; docs/data.md). Rows are picked first, which also makes the rest cheaper.
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
        rows = ((np.arange(height) + 0.5) * (plot.shape[0] / height)).astype(np.intp)
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


@dataclass
class LayoutReport:
    """What `detect_layout` found: the layout, how many sampled images agree, and which differ."""

    layout: FigureLayout
    sampled: int
    differing: list[tuple[str, str]] = field(default_factory=list)  # (file, how it differs)
    fits: list[Any] = field(default_factory=list)  # the colormaps tried, best first (ColormapFit)

    @property
    def agreeing(self) -> int:
        return self.sampled - len(self.differing)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the cached detection)."""
        return {
            "layout": self.layout.to_dict(),
            "sampled": self.sampled,
            "differing": [list(item) for item in self.differing],
            "fits": [[fit.name, fit.distance] for fit in self.fits],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayoutReport:
        from mnr.data.colormaps import ColormapFit

        return cls(
            layout=FigureLayout.from_dict(data["layout"]),
            sampled=int(data["sampled"]),
            differing=[(str(path), str(why)) for path, why in data["differing"]],
            fits=[ColormapFit(str(name), float(distance)) for name, distance in data["fits"]],
        )

    def format(self) -> str:
        """The lines `mnr data check` prints."""
        layout = self.layout
        lines = [f"layout: {layout.describe()}"]
        left, top, right, bottom = layout.box
        lines.append(
            f"  plot box: left={left} top={top} right={right} bottom={bottom} (pixels, right/bottom exclusive)"
        )
        if self.fits:
            best = self.fits[0]
            if layout.colormap is None:
                lines.append(
                    f"  colormap: none of the known ones fits (closest: {best.name}, mean distance "
                    f"{best.distance:.1f}); the model reads the RGB colours"
                )
            else:
                lines.append(f"  colormap: {layout.colormap} (mean distance {best.distance:.2f}; next: "
                             f"{self.fits[1].name} {self.fits[1].distance:.1f})")  # fmt: skip
        lines.append(f"  {self.agreeing} of {self.sampled} sampled images agree")
        for path, why in self.differing[:20]:
            lines.append(f"  differs: {path}: {why}")
        if len(self.differing) > 20:
            lines.append(f"  ... and {len(self.differing) - 20} more")
        return "\n".join(lines)


def _frame_mean(rgb: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float, float]:
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


def _rgb(colour: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in colour) + ")"


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, stop) of the longest run of True in a 1-D mask; (0, 0) if there is none."""
    best = (0, 0)
    start = None
    for index, flag in enumerate([*mask.tolist(), False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start > best[1] - best[0]:
                best = (start, index)
            start = None
    return best


def _plot_box(images: np.ndarray) -> tuple[int, int, int, int]:
    """The rectangle where the images (N x H x W x 3) differ from each other.

    A pixel varies if its channels span more than `_VARYING` across the images. The plot's rows
    are the longest run of rows in which at least half as many pixels vary as in the row where
    most vary; its columns likewise, counted within those rows. Decorations that change a little
    (a colorbar's moving tick labels) are too narrow to pass.
    """
    spread = (images.max(axis=0).astype(np.int16) - images.min(axis=0)).max(axis=-1)
    varying = spread > _VARYING
    rows = varying.mean(axis=1)
    if rows.max() == 0:
        raise MnrError(
            "the sampled images are all identical: no plot to find (are they copies of one image?)"
        )
    top, bottom = _longest_run(rows >= 0.5 * rows.max())
    columns = varying[top:bottom].mean(axis=0)
    left, right = _longest_run(columns >= 0.5 * columns.max())
    return left, top, right, bottom


def _sample(count: int, size: int, seed: int) -> list[int]:
    if count <= size:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=size, replace=False).tolist())


def check_folder_layout(
    image_set: ImageSet, layout: FigureLayout, *, sample: int = 16, seed: int = 0
) -> None:
    """Refuse a folder whose plot box (found from `sample` of its images) is not `layout`'s.

    Each image is also checked on its own when it is read (`FigureLayout.check`); this catches
    what one image cannot show, such as figures of the model's size whose plot sits elsewhere.
    """
    arrays = []
    for index in _sample(len(image_set), sample, seed):
        try:
            arrays.append(read_rgb(image_set.path(index)))
        except MnrError:
            continue  # an unreadable image is reported when it is predicted, with the others
    same = [a for a in arrays if (a.shape[1], a.shape[0]) == layout.image_size]
    if len(same) < min(8, len(image_set)):
        return  # too few images of the model's size to find a box; each is checked as it is read
    box = _plot_box(np.stack(same))
    if any(abs(a - b) > 2 for a, b in zip(box, layout.box, strict=True)):
        found = FigureLayout(
            image_size=layout.image_size,
            box=box,
            colormap=layout.colormap,
            channels=layout.channels,
        )
        raise MnrError(
            f"{image_set.root}: these images are drawn with another layout than the model's: the plot "
            f"is at {found.describe()}, the model reads {layout.describe()}. Predict with a model "
            "trained on images drawn like these (see `mnr data check`)."
        )


def detect_layout(
    image_set: ImageSet,
    *,
    channels: Channels = "auto",
    sample: int = SAMPLE,
    seed: int = 0,
) -> LayoutReport:
    """Find the layout of a folder's images from a sample of them (see the module docstring).

    The sample's most common size is the layout's; images of another size are reported as
    differing. With fewer than two images the whole image is taken as the plot. `channels`
    chooses what the model reads: "auto" (value when a known colormap fits, else RGB), "value"
    (an error if no known colormap fits) or "rgb".
    """
    from mnr.data import colormaps

    if len(image_set) == 0:
        raise MnrError(f"{image_set.root}: no images to find a layout in")
    arrays = {}
    for index in _sample(len(image_set), sample, seed):
        try:
            arrays[index] = read_rgb(image_set.path(index))
        except MnrError:
            continue  # an unreadable image is reported by name where images are read one by one
    if not arrays:
        raise MnrError(
            f"{image_set.root}: none of the sampled images can be read, so no layout can be found"
        )
    picked = list(arrays)
    sizes = Counter((a.shape[1], a.shape[0]) for a in arrays.values())
    (width, height), _ = sizes.most_common(1)[0]
    differing = [
        (image_set.filenames[i], f"{a.shape[1]}x{a.shape[0]}, not {width}x{height}")
        for i, a in arrays.items()
        if (a.shape[1], a.shape[0]) != (width, height)
    ]
    stack = np.stack([a for a in arrays.values() if (a.shape[1], a.shape[0]) == (width, height)])
    box = _plot_box(stack) if len(stack) >= 2 else (0, 0, width, height)
    left, top, right, bottom = box
    frame = None
    if box != (0, 0, width, height):
        means = {
            i: _frame_mean(a, box)
            for i, a in arrays.items()
            if (a.shape[1], a.shape[0]) == (width, height)
        }
        reference = tuple(float(np.median([m[c] for m in means.values()])) for c in range(3))
        frame = reference  # type: ignore[assignment]
        differing += [
            (image_set.filenames[i], f"the figure around the plot differs (mean colour {_rgb(m)}, most have {_rgb(reference)})")
            for i, m in means.items()
            if max(abs(a - b) for a, b in zip(m, reference, strict=True)) > _FRAME_TOLERANCE
        ]  # fmt: skip
    plot = stack[:, top:bottom, left:right].reshape(-1, 3)
    plot = plot[np.random.default_rng(seed).permutation(len(plot))[:200_000]]
    fits = colormaps.fit(plot)
    best = fits[0]
    colormap = None
    distance = None
    if best.distance <= _COLORMAP_FIT:
        colormap = colormaps.orient(best.name, colormaps.ReadBack(best.name).values(plot[None])[0])
        distance = best.distance
    if channels == "value" and colormap is None:
        raise MnrError(
            f"data.channels=value needs a known colormap, but the plot's colours fit none of "
            f"{', '.join(colormaps.KNOWN)} (closest: {best.name}, mean distance {best.distance:.1f}); "
            "use data.channels=auto or rgb"
        )
    chosen = "value" if colormap is not None and channels != "rgb" else "rgb"
    layout = FigureLayout(
        image_size=(width, height),
        box=box,
        colormap=colormap,
        channels=chosen,
        frame=frame,
        distance=distance,
    )
    return LayoutReport(layout=layout, sampled=len(picked), differing=differing, fits=fits)
