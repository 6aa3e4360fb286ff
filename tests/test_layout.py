"""Reading any figure: the plot box and colormap found, colours read back, other layouts refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import STYLED_LABELS, TINY, train

from mnr.config import resolve_config
from mnr.data import scan_folder
from mnr.data.colormaps import KNOWN, ReadBack, fit
from mnr.data.detection import detect_layout
from mnr.data.images import decode_png, png_bytes
from mnr.data.layout import FigureLayout
from mnr.data.synth import SynthConfig, mel_spectrogram_db, render_note
from mnr.data.synth.drawing import _figure, plot_box, spectrogram_image
from mnr.data.synth.mel import mel_edges
from mnr.errors import MnrError
from mnr.predict import Predictor, predict_folder

STYLES = ("full", "specshow", "imshow")
LABELS = STYLED_LABELS


@pytest.mark.parametrize("style", STYLES)
def test_the_plot_box_is_found_within_two_pixels_and_the_colormap_named(styled, style: str) -> None:
    config = SynthConfig.for_style(style)
    report = detect_layout(scan_folder(styled(style) / "train"))
    found, truth = report.layout.box, plot_box(config)
    assert all(abs(a - b) <= 2 for a, b in zip(found, truth, strict=True)), (found, truth)
    assert report.layout.colormap == config.colormap and report.layout.channels == "value"
    assert report.layout.image_size == (520, 394) and report.agreeing == report.sampled == 22
    assert report.layout.full_bleed == (style == "full")
    # drawn without interpolation, every band is found (also librosa's narrower low bands)
    if style == "imshow":
        assert report.layout.bands is None
    else:
        assert len(report.layout.bands) == config.n_mels


@pytest.mark.parametrize("colormap", [name for name in KNOWN if name != "magma"])
def test_every_known_colormap_is_named(styled, colormap: str) -> None:
    report = detect_layout(scan_folder(styled("full", colormap=colormap) / "train"))
    assert report.layout.colormap == colormap
    others = [
        f for f in report.fits if f.name != colormap and {f.name, colormap} != {"gray", "Greys"}
    ]
    assert report.fits[0].distance < 1.0 < others[0].distance  # gray and Greys share their colours


def test_an_unknown_colormap_falls_back_to_rgb_and_value_is_refused(styled) -> None:
    folder = styled("full", colormap="coolwarm") / "train"  # a diverging map mnr does not know
    report = detect_layout(scan_folder(folder))
    assert report.layout.colormap is None and report.layout.channels == "rgb"
    assert "none of the known ones fits" in report.format()
    with pytest.raises(MnrError, match="data.channels=value needs a known colormap"):
        detect_layout(scan_folder(folder), channels="value")


def _expected_levels(
    config: SynthConfig, mel_db: np.ndarray, plot_shape: tuple[int, int]
) -> np.ndarray:
    """What each pixel of the plot was drawn from, 0..1: the band and frame under its centre,
    scaled as the style scales colours (full: the -top_db..0 floor; figures: autoscaled)."""
    height, width = plot_shape
    bands, frames = mel_db.shape
    if config.style == "full":
        rows = (np.arange(height) * bands) // height
        cols = (np.arange(width) * frames) // width
        level = np.clip((mel_db + config.top_db) / config.top_db, 0, 1)
        return level[::-1][rows[:, None], cols[None, :]]
    figure = _figure(config)
    left, top, _, _ = figure.box
    x = left + np.arange(width) + 0.5
    y = config.height - (top + np.arange(height) + 0.5)  # display coordinates grow upwards
    points = np.stack(np.meshgrid(x, y), axis=-1).reshape(-1, 2)
    data = figure.axes.transData.inverted().transform(points)
    if config.style == "specshow":
        seconds = np.arange(frames + 1) * config.hop_length / config.sample_rate
        col = np.clip(np.searchsorted(seconds, data[:, 0]) - 1, 0, frames - 1)
        row = np.clip(np.searchsorted(mel_edges(config), data[:, 1]) - 1, 0, bands - 1)
        level = (mel_db - mel_db.min()) / (mel_db.max() - mel_db.min())
        return level[row, col].reshape(height, width)
    # imshow: data coordinates are the matrix's indices, and matplotlib's antialiasing
    # interpolates between them where it upsamples by less than 3x: compare with a bilinear one
    level = (mel_db - mel_db.min()) / (mel_db.max() - mel_db.min())
    col = np.clip(data[:, 0], 0, frames - 1)
    row = np.clip(data[:, 1], 0, bands - 1)
    c0, r0 = np.minimum(col.astype(int), frames - 2), np.minimum(row.astype(int), bands - 2)
    fc, fr = col - c0, row - r0
    top_row = level[r0, c0] * (1 - fc) + level[r0, c0 + 1] * fc
    next_row = level[r0 + 1, c0] * (1 - fc) + level[r0 + 1, c0 + 1] * fc
    return (top_row * (1 - fr) + next_row * fr).reshape(height, width)


@pytest.mark.parametrize("style", STYLES)
def test_the_read_back_recovers_the_drawn_matrix(style: str) -> None:
    config = SynthConfig.for_style(style)
    mel_db = mel_spectrogram_db(
        render_note(57, rng=np.random.default_rng(7), config=config), config=config
    )
    image = spectrogram_image(mel_db, config=config)
    box = plot_box(config)
    layout = FigureLayout(
        image_size=(520, 394), box=box, colormap=config.colormap, channels="value"
    )
    values = (
        decode_png(png_bytes(image), size=None, layout=layout)[0] / 255.0
    )  # at the plot's own size
    expected = _expected_levels(config, mel_db, values.shape)
    inner = (slice(2, -2), slice(2, -2))  # the spines are drawn over the plot's outermost pixels
    correlation = np.corrcoef(values[inner].ravel(), expected[inner].ravel())[0, 1]
    assert correlation >= 0.99, correlation


@pytest.mark.parametrize("name", KNOWN)
def test_read_back_is_within_a_few_entries_of_the_exact_nearest(name: str) -> None:
    from mnr.data.colormaps import lut

    table = lut(name)
    error = np.abs(ReadBack(name).values(table[None])[0].astype(int) - np.arange(256))
    assert (
        error.max() <= 5 and error.mean() <= 1.5
    )  # the 64^3 table's cells: at most 2 % of the range
    assert fit(table)[0].distance == 0.0


def test_gray_and_greys_are_told_apart_by_which_way_the_background_reads(styled) -> None:
    assert (
        detect_layout(scan_folder(styled("full", colormap="gray") / "train")).layout.colormap
        == "gray"
    )
    assert (
        detect_layout(scan_folder(styled("full", colormap="Greys") / "train")).layout.colormap
        == "Greys"
    )
    assert (
        detect_layout(scan_folder(styled("full", colormap="magma_r") / "train")).layout.colormap
        == "magma_r"
    )


def test_a_figure_of_another_size_or_layout_is_refused_by_name(styled) -> None:
    folder = styled("specshow") / "train"
    layout = detect_layout(scan_folder(folder)).layout
    image = next(folder.glob("*.png"))
    wrong_size = png_bytes(np.zeros((300, 400, 3), dtype=np.uint8))
    with pytest.raises(
        MnrError, match=r"<bytes>: the image is 400x300, but the model reads 520x394 images, plot"
    ):
        decode_png(wrong_size, size=(128, 16), layout=layout)
    full = next((styled("full") / "train").glob("*.png"))  # same size, but all plot
    with pytest.raises(MnrError, match=rf"{full.name}: the figure around the plot differs"):
        decode_png(full, size=(128, 16), layout=layout)
    assert decode_png(image, size=(128, 16), layout=layout).shape == (1, 128, 16)


@pytest.fixture(scope="module")
def specshow_model(styled, tmp_path_factory: pytest.TempPathFactory, isolated_module) -> Path:
    """A bn_cnn trained for 2 epochs on specshow figures: its best checkpoint."""
    root = styled("specshow")
    config = resolve_config(
        model="bn_cnn",
        options={"data.path": str(root), "train.epochs": 2, "train.batch_size": 8},
        overrides=[*TINY],
    )
    result = train(config, record=None)
    return result.checkpoint_dir / "best.pt"


def test_a_model_crops_as_training_did_and_refuses_another_layout(
    styled, specshow_model: Path
) -> None:
    predictor = Predictor.from_checkpoints([specshow_model])
    assert (
        predictor.layout.box == detect_layout(scan_folder(styled("specshow") / "train")).layout.box
    )
    result = predict_folder(predictor, styled("specshow") / "test")
    assert len(result.filenames) == len(LABELS) and not result.problems
    with pytest.raises(
        MnrError,
        match=r"drawn with another layout than the model's: the plot is at .* the model reads",
    ):
        predict_folder(predictor, styled("imshow") / "test")
    with pytest.raises(
        MnrError, match="the figure around the plot differs from the model's layout"
    ):
        predictor.predict(
            [next((styled("full") / "test").glob("*.png"))]
        )  # one image, no folder to compare
