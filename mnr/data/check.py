"""`mnr data check`: validate a folder in one pass and describe what is in it.

Besides the truth file and every image's readability, it reports the figure layout mnr finds
(`mnr.data.layout`: plot box, colormap, channels) and lists every image drawn otherwise.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mnr.data.detection import LayoutReport, detect_layout
from mnr.data.folder import ImageSet, Problem, scan_folder
from mnr.data.images import ImageInfo, load_png
from mnr.data.layout import Channels, FigureLayout
from mnr.data.parallel import map_images
from mnr.display import result_repr
from mnr.errors import MnrError
from mnr.labels import label_octave, label_to_name

__all__ = ["CheckReport", "check_folder"]


@dataclass
class CheckReport:
    """Everything `mnr data check` found: problems, label counts, image sizes and modes."""

    image_set: ImageSet
    problems: list[Problem]
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    layout: LayoutReport | None = None  # None when no image could be read

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __repr__(self) -> str:
        return result_repr(
            "CheckReport",
            {"root": self.image_set.root, "images": len(self.image_set), "ok": self.ok,
             "errors": len(self.errors), "problems": len(self.problems)},
        )  # fmt: skip

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.format())}</pre>"

    def label_counts(self) -> Counter:
        return Counter(self.image_set.labels or [])

    def octave_counts(self) -> Counter:
        return Counter(label_octave(label) for label in self.image_set.labels or [])

    def format(self) -> str:
        """A human-readable report: problems first, then what the folder holds."""
        out = [f"{self.image_set.root}: {len(self.image_set)} image(s)"]
        if self.image_set.labelled:
            out[0] += f", labelled by {self.image_set.truth_path.name}"
            labels = self.label_counts()
            out.append(f"labels: {len(labels)} of 88 keys present")
            out.append(
                "per label: "
                + ", ".join(
                    f"{label}/{label_to_name(label)}={count}"
                    for label, count in sorted(labels.items())
                )
            )
            out.append(
                "per octave: "
                + ", ".join(
                    f"{octave}={count}" for octave, count in sorted(self.octave_counts().items())
                )
            )
        else:
            out[0] += ", unlabelled"
        if self.layout is not None:
            out.append(self.layout.format())
        if self.sizes:
            out.append(
                "sizes (W x H): "
                + ", ".join(f"{w}x{h}={n}" for (w, h), n in self.sizes.most_common())
            )
            out.append("modes: " + ", ".join(f"{mode}={n}" for mode, n in self.modes.most_common()))
        warnings = [p for p in self.problems if p.severity == "warning"]
        if warnings:
            out.append(f"{len(warnings)} warning(s):")
            out.extend(f"  {p}" for p in warnings)
        if self.errors:
            out.append(f"{len(self.errors)} error(s):")
            out.extend(f"  {p}" for p in self.errors)
        else:
            out.append("no errors")
        return "\n".join(out)


def inspect_figure(path: str | os.PathLike, *, name: str, layout: FigureLayout | None) -> ImageInfo:
    """Fully decode a PNG (proving it readable) and check it against the folder's layout."""
    rgb, mode = load_png(path, name=name)
    if layout is not None:
        layout.check(rgb, name=name)
    return ImageInfo(width=rgb.shape[1], height=rgb.shape[0], mode=mode)


def check_folder(
    root: str | os.PathLike,
    *,
    truth: str | os.PathLike | None = None,
    channels: Channels = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Validate a data folder: its truth file, its layout and every image, fully decoded."""
    image_set = scan_folder(Path(root), truth=truth)
    layout = None
    if len(image_set):
        try:
            layout = detect_layout(image_set, channels=channels)
        except MnrError as exc:
            image_set.problems.append(
                Problem(str(image_set.root), f"no figure layout found: {exc}")
            )
    infos, image_problems = map_images(
        partial(inspect_figure, layout=layout.layout if layout else None),
        image_set,
        workers=workers,
        progress=progress,
        desc=f"checking {image_set.root.name}",
    )
    report = CheckReport(
        image_set=image_set, problems=list(image_set.problems) + image_problems, layout=layout
    )
    for info in infos:
        if isinstance(info, ImageInfo):
            report.sizes[(info.width, info.height)] += 1
            report.modes[info.mode] += 1
    return report
