"""Finding a folder's figure layout from a sample of its images (`mnr.data.layout` says what
a layout is and why it is found this way)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnr.data.folder import ImageSet
from mnr.data.images import read_rgb
from mnr.data.layout import FRAME_TOLERANCE, Channels, FigureLayout, frame_mean, rgb_text
from mnr.errors import MnrError

__all__ = ["SAMPLE", "LayoutReport", "check_folder_layout", "detect_layout"]

SAMPLE = 64  # images looked at: enough that every plot pixel varies somewhere, ~0.3 s to read
_VARYING = 8  # a pixel whose channels span more than this across the sample is part of the plot
_COLORMAP_FIT = 6.0  # mean RGB distance to a colormap's table under which the plot uses it


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


def _bands(plot: np.ndarray) -> tuple[int, ...] | None:
    """The middle row of each run of rows that are identical in every image (N x h x w x 3),
    or None when the plot has no such runs (it was interpolated: each row its own)."""
    same = (plot[:, 1:] == plot[:, :-1]).all(axis=(0, 2, 3))
    starts = np.concatenate([[0], np.flatnonzero(~same) + 1])
    if len(starts) > 0.75 * plot.shape[1]:  # fewer than 1.33 rows per run: no bands to find
        return None
    stops = np.concatenate([starts[1:], [plot.shape[1]]])
    return tuple(int(v) for v in (starts + stops - 1) // 2)


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
            i: frame_mean(a, box)
            for i, a in arrays.items()
            if (a.shape[1], a.shape[0]) == (width, height)
        }
        reference = tuple(float(np.median([m[c] for m in means.values()])) for c in range(3))
        frame = reference  # type: ignore[assignment]
        differing += [
            (image_set.filenames[i], f"the figure around the plot differs (mean colour {rgb_text(m)}, most have {rgb_text(reference)})")
            for i, m in means.items()
            if max(abs(a - b) for a, b in zip(m, reference, strict=True)) > FRAME_TOLERANCE
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
        bands=_bands(stack[:, top:bottom, left:right]) if len(stack) >= 2 else None,
    )
    return LayoutReport(layout=layout, sampled=len(picked), differing=differing, fits=fits)
