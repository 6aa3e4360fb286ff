"""A picture of how mnr reads a folder's figures: the plot box it found and what the model sees.

`mnr data check` writes it and every training run logs it, so that a wrong crop or a wrong
colormap is seen at a glance instead of being discovered as poor accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnr.data.images import read_rgb
from mnr.data.layout import FigureLayout

__all__ = ["write_preview"]


def write_preview(
    image: str | Path,
    layout: FigureLayout,
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Draw `image` with the layout's plot box outlined, beside the values read back from it
    (at the plot's own resolution, and at `input_size` when given) and save it as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # inside the call: importing mnr.data must not pick a backend
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rgb = read_rgb(image)
    name = Path(image).name
    plot = layout.extract(rgb, size=layout.plot_size, name=name)
    panels = [
        ("plot as read" + (" (value channel)" if layout.channels == "value" else " (RGB)"), plot)
    ]
    if input_size is not None:
        panels.append(
            (
                f"model input {input_size[0]} x {input_size[1]}",
                layout.extract(rgb, size=input_size, name=name),
            )
        )
    figure = Figure(figsize=(4.2 * (1 + len(panels)), 3.8), dpi=100)
    axes = figure.subplots(1, 1 + len(panels))
    left, top, right, bottom = layout.box
    axes[0].imshow(rgb)
    axes[0].add_patch(
        Rectangle(
            (left - 0.5, top - 0.5),
            right - left,
            bottom - top,
            fill=False,
            edgecolor="red",
            linewidth=1.5,
        )
    )
    axes[0].set_title(f"{name}: plot box in red", fontsize=9)
    for axis, (title, array) in zip(axes[1:], panels, strict=True):
        shown = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
        axis.imshow(
            shown,
            cmap="gray" if array.shape[0] == 1 else None,
            aspect="auto",
            interpolation="nearest",
        )
        axis.set_title(title, fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(layout.describe(), fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
