"""`mnr data synth` and `mnr data check`: generate and validate datasets in the Kaggle layout."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnr.cli.base import Group, main


# ---------------------------------------------------------------------------------------- data
@main.group(cls=Group)
def data() -> None:
    """Generate and validate datasets in the Kaggle layout."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", default=32, show_default=True, help="Training images per key.")
@click.option("--test-per-class", default=10, show_default=True, help="Test images per key.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option(
    "--style",
    type=click.Choice(["full", "specshow", "imshow"]),
    default="full",
    show_default=True,
    help="How the spectrograms are drawn: the whole image (the built-in set), a librosa specshow "
    "figure with axes and a colorbar, or a plain matplotlib imshow figure.",
)
@click.option(
    "--colormap",
    default=None,
    help="A matplotlib colormap (default: the style's, magma or viridis).",
)
@click.option(
    "--fmin", type=float, default=None, help="Lowest frequency in Hz (default: the style's)."
)
@click.option(
    "--fmax", type=float, default=None, help="Highest frequency in Hz (default: the style's)."
)
@click.option(
    "--mel",
    type=click.Choice(["htk", "slaney"]),
    default=None,
    help="Mel scale (default: the style's).",
)
@click.option(
    "--n-fft", type=int, default=None, help="FFT window in samples (default: the style's)."
)
@click.option(
    "--hop", type=int, default=None, help="Hop between frames in samples (default: the style's)."
)
@click.option(
    "--instruments",
    default=None,
    metavar="NAMES",
    help="Comma-separated instrument families to play, dealt out evenly over every key "
    "(default: all of piano, epiano, harpsichord, organ). Each image's instrument is in "
    "OUT/manifest.csv.",
)
def data_synth(out: Path, per_class: int, test_per_class: int, seed: int, workers: int | None, style: str,
               colormap: str | None, fmin: float | None, fmax: float | None, mel: str | None, n_fft: int | None,
               hop: int | None, instruments: str | None) -> None:  # fmt: skip
    """Write a synthetic piano dataset to OUT: train/ with truth.txt, test/, test_truth.txt.

    Every style and option writes the Kaggle layout; `mnr train --data OUT` reads any of them.
    """
    from mnr.data.synth import SynthConfig, generate_dataset

    config = SynthConfig.for_style(
        style, colormap=colormap, fmin=fmin, fmax=fmax, htk=None if mel is None else mel == "htk",
        n_fft=n_fft, hop_length=hop,
        instruments=None if instruments is None else tuple(
            name.strip() for name in instruments.split(",") if name.strip()
        ),
    )  # fmt: skip
    root = generate_dataset(
        out,
        per_class=per_class,
        test_per_class=test_per_class,
        seed=seed,
        workers=workers,
        config=config,
    )
    click.echo(
        f"wrote {root}/train (labelled), {root}/test, {root}/test_truth.txt and "
        f"{root}/manifest.csv ({style} style; {', '.join(config.instruments)})"
    )


@data.command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Truth file (default: FOLDER/truth.txt if present, else the folder is unlabelled).",
)
@click.option("--workers", type=int, default=None, help="Decode processes (default: all cores).")
@click.option(
    "--channels",
    type=click.Choice(["auto", "value", "rgb"]),
    default="auto",
    show_default=True,
    help="What a model would read: the value read back through a known colormap, or the RGB colours.",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("layout_preview.png"),
    show_default=True,
    help="Where to write a picture of the plot box found and the values read back ('' for none).",
)
def data_check(
    folder: Path, truth: Path | None, workers: int | None, channels: str, preview: Path
) -> None:
    """Validate FOLDER in one pass: every problem with its file and line, then what it holds.

    It also finds how the images are drawn (the plot box, the colormap) and lists every image
    drawn otherwise.
    """
    from mnr import api

    report = api.check(folder, truth=truth, channels=channels, workers=workers)
    click.echo(report.format())
    if report.layout is not None and str(preview) not in ("", "."):
        from mnr.config import DEFAULT_INPUT_SIZE
        from mnr.data.preview import write_preview

        sample = report.image_set.path(0)
        write_preview(sample, report.layout.layout, preview, input_size=DEFAULT_INPUT_SIZE)
        click.echo(f"preview of the layout: {preview}")
    if not report.ok:
        sys.exit(1)
