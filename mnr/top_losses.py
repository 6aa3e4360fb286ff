"""Top losses: the images a model got most confidently wrong, drawn as the model read them.

fastai's `plot_top_losses` is the picture people look at first when a classifier disappoints:
the few mistakes with the highest loss show at once whether the labels, the layout or the model
are to blame. Here the loss is the cross-entropy of one image, -log p(true key), taken among the
wrong predictions only, so a right answer with a low probability never crowds out a mistake.

`plot_top_losses` takes the images as an array, or as a function that decodes the images of
given indices, so that a caller holding only file names (`mnr.predict.evaluate`) decodes the
few images it draws and not the whole folder. The figure is a bare matplotlib `Figure` (no
pyplot, no backend switch): a notebook shows it inline and nothing has to close it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnr.errors import MnrError
from mnr.labels import label_to_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TopLosses", "plot_top_losses", "top_losses"]

DEFAULT_COUNT = 16  # a 4 x 4 grid: enough to see a pattern, small enough to read each title
_EPSILON = 1e-12  # p(true) of exactly 0 is a loss of 36 nats, not infinity

ImagesOrLoader = np.ndarray | Callable[[Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class TopLosses:
    """The most confidently wrong images of a labelled set, highest loss first."""

    indices: np.ndarray  # positions in the set
    losses: np.ndarray  # -log p(true) of each
    true: np.ndarray  # true labels
    predicted: np.ndarray  # predicted labels (the most probable key)
    probability: np.ndarray  # the predicted key's probability
    count: int  # images in the whole set
    mistakes: int  # wrong predictions in the whole set

    def titles(self) -> list[str]:
        """One title per image: ``true C4 / pred C#4 p=0.93``."""
        return [
            f"true {label_to_name(int(t))} / pred {label_to_name(int(p))} p={q:.2f}"
            for t, p, q in zip(self.true, self.predicted, self.probability, strict=True)
        ]


def top_losses(
    labels: np.ndarray, probabilities: np.ndarray, *, n: int = DEFAULT_COUNT
) -> TopLosses:
    """The `n` wrong predictions with the highest loss -log p(true), highest first (ties: the
    earlier image). `labels` is N true keys, `probabilities` N x classes."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise MnrError(
            f"probabilities must be N x classes for N labels, got shape {probabilities.shape} "
            f"for {len(labels)} labels"
        )
    if n < 0:
        raise MnrError(f"the number of top losses must be 0 or more, got {n}")
    predicted = probabilities.argmax(1) if len(labels) else np.zeros(0, dtype=np.int64)
    rows = np.arange(len(labels))
    losses = -np.log(np.clip(probabilities[rows, labels], _EPSILON, None))
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-losses[wrong], kind="stable")][:n]
    return TopLosses(
        indices=order,
        losses=losses[order],
        true=labels[order],
        predicted=predicted[order],
        probability=probabilities[order, predicted[order]],
        count=len(labels),
        mistakes=len(wrong),
    )


def plot_top_losses(
    images: ImagesOrLoader,
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    n: int = DEFAULT_COUNT,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A grid of the `n` most confidently wrong images (see `top_losses`), each titled
    ``true C4 / pred C#4 p=0.93``; with no mistakes, a figure that says so in words.

    `images` is the N x C x H x W array the model read (one value channel is drawn in grey,
    three as RGB), or a function that returns that array for a list of indices. The figure is
    returned (a notebook shows it) and, with `path`, also saved there as a PNG.
    """
    from matplotlib.figure import Figure

    picked = top_losses(labels, probabilities, n=n)
    heading = f"{title}: " if title else ""
    if len(picked.indices) == 0:
        figure = Figure(figsize=(5, 1.5), dpi=100)
        figure.text(
            0.5, 0.5, f"{heading}no mistakes on {picked.count} images", ha="center", va="center"
        )
    else:
        shown = images(picked.indices.tolist()) if callable(images) else images[picked.indices]
        columns = min(4, len(picked.indices))
        rows = math.ceil(len(picked.indices) / columns)
        figure = Figure(figsize=(3.2 * columns, 2.9 * rows + 0.5), dpi=100)
        axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
        for axis, image, text in zip(axes, shown, picked.titles(), strict=False):
            array = np.asarray(image)
            axis.imshow(
                array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0)),
                cmap="gray" if array.shape[0] == 1 else None,
                vmin=0 if array.dtype == np.uint8 else None,  # pixels as read, not stretched
                vmax=255 if array.dtype == np.uint8 else None,
                aspect="auto",
                interpolation="nearest",
            )
            axis.set_title(text, fontsize=9)
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
            if not axis.images:
                axis.set_axis_off()
        figure.suptitle(
            f"{heading}{len(picked.indices)} most confidently wrong of {picked.mistakes} "
            f"mistakes on {picked.count} images",
            fontsize=10,
        )
        figure.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    return figure
