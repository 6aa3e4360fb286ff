"""Top losses: the most confidently wrong images, in order, and a picture that says when there
are none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnr.errors import MnrError
from mnr.top_losses import plot_top_losses, top_losses


def _probabilities(rows: list[tuple[int, float]], classes: int = 88) -> np.ndarray:
    """One row per (predicted key, its probability), the rest spread evenly over the others."""
    out = np.empty((len(rows), classes))
    for index, (key, p) in enumerate(rows):
        out[index] = (1 - p) / (classes - 1)
        out[index, key] = p
    return out


def test_picks_the_wrong_images_by_loss_highest_first() -> None:
    labels = np.array([39, 40, 41, 42, 43])
    # right at 0.2 (lowest p(true), but right: never picked); wrong at 0.93, 0.5, 0.99
    probabilities = _probabilities([(39, 0.2), (41, 0.93), (44, 0.5), (43, 0.99), (43, 0.9)])
    picked = top_losses(labels, probabilities, n=2)
    assert picked.indices.tolist() == [3, 1]  # p(true) smallest where p(pred) is largest
    assert picked.mistakes == 3 and picked.count == 5
    assert picked.losses[0] > picked.losses[1] > 0
    assert picked.losses[0] == pytest.approx(-np.log(0.01 / 87))
    assert picked.titles() == ["true D#4 / pred E4 p=0.99", "true C#4 / pred D4 p=0.93"]
    assert top_losses(labels, probabilities, n=10).indices.tolist() == [3, 1, 2]


def test_a_grid_of_the_images_as_read(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2])
    probabilities = _probabilities([(5, 0.9), (1, 0.9), (7, 0.6)])
    images = np.random.default_rng(0).integers(0, 255, (3, 1, 16, 12), dtype=np.uint8)
    asked: list[list[int]] = []

    def load(indices: list[int]) -> np.ndarray:
        asked.append(indices)
        return images[indices]

    figure = plot_top_losses(load, labels, probabilities, path=tmp_path / "top.png")
    assert asked == [[0, 2]]  # only the images drawn are decoded
    titles = [axis.get_title() for axis in figure.axes if axis.images]
    assert titles == ["true A0 / pred D1 p=0.90", "true B0 / pred E1 p=0.60"]
    assert (tmp_path / "top.png").stat().st_size > 1000
    rgb = np.zeros((3, 3, 16, 12), dtype=np.uint8)
    assert len([a for a in plot_top_losses(rgb, labels, probabilities, n=1).axes if a.images]) == 1


def test_no_mistakes_says_so(tmp_path: Path) -> None:
    labels = np.array([10, 20])
    figure = plot_top_losses(
        np.zeros((2, 1, 8, 8)),
        labels,
        _probabilities([(10, 0.9), (20, 0.4)]),
        path=tmp_path / "t.png",
    )
    assert [text.get_text() for text in figure.texts] == ["no mistakes on 2 images"]
    assert not any(axis.images for axis in figure.axes)
    assert (tmp_path / "t.png").is_file()


def test_shapes_must_agree() -> None:
    with pytest.raises(MnrError, match="N x classes"):
        top_losses(np.array([1, 2]), np.zeros((3, 88)))
