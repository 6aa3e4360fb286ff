"""`mnr data check`: validate a folder in one pass and describe what is in it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mnr.data.folder import ImageSet, Problem, scan_folder
from mnr.data.images import ImageInfo, inspect_png
from mnr.data.parallel import map_images
from mnr.labels import label_octave, label_to_name

__all__ = ["CheckReport", "check_folder"]


@dataclass
class CheckReport:
    """Everything `mnr data check` found: problems, label counts, image sizes and modes."""

    image_set: ImageSet
    problems: list[Problem]
    sizes: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

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


def check_folder(
    root: str | os.PathLike,
    *,
    truth: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Validate a data folder: its truth file and every image, fully decoded, in one pass."""
    image_set = scan_folder(Path(root), truth=truth)
    infos, image_problems = map_images(
        inspect_png,
        image_set,
        workers=workers,
        progress=progress,
        desc=f"checking {image_set.root.name}",
    )
    report = CheckReport(image_set=image_set, problems=list(image_set.problems) + image_problems)
    for info in infos:
        if isinstance(info, ImageInfo):
            report.sizes[(info.width, info.height)] += 1
            report.modes[info.mode] += 1
    return report
