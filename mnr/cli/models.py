"""`mnr models`, `register`, `promote`, `predict` and `evaluate`: architectures and registered models."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnr.cli.base import main
from mnr.errors import MnrError


# -------------------------------------------------------------------------------------- models
@main.command("models")
@click.argument("pattern", required=False)
@click.option(
    "--registered", is_flag=True, help="List models in the MLflow model registry instead."
)
@click.option(
    "--model-module",
    default=None,
    help="A .py file or module whose @register_model functions to load.",
)
def models_cmd(pattern: str | None, registered: bool, model_module: str | None) -> None:
    """List registered model architectures (wildcards allowed), or --registered MLflow models."""
    if registered:
        from mnr.tracking import model_registry

        click.echo(model_registry.format_registered(model_registry.list_registered(pattern)))
        return
    from mnr.models import describe_models, import_model_module

    if model_module:
        import_model_module(model_module)
    rows = describe_models(pattern)
    if not rows:
        raise MnrError(f"no model matches {pattern!r}; run `mnr models` to see them all")
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        params = f"{row['params']:,}" if row.get("params") is not None else "?"
        click.echo(f"{row['name']:<{width}}  {params:>12} params  {row['description']}")


# ------------------------------------------------------------------------- registered models
@main.command("register")
@click.argument("run_id")
@click.option("--name", required=True, help="Registered model name (created on first use).")
@click.option("--alias", default=None, help="Point this alias (e.g. champion) at the new version.")
def register_cmd(run_id: str, name: str, alias: str | None) -> None:
    """Register run RUN_ID's predictor (the image-taking pyfunc) as a new version of NAME."""
    from mnr.predict.logged import register_run

    version = register_run(run_id, name=name, alias=alias)
    shown = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}"
    click.echo(f"registered {name} version {version.version}: {shown}")


@main.command("promote")
@click.argument("name")
@click.argument("version", type=click.IntRange(min=1))
@click.option("--alias", required=True, help="The alias to move, e.g. champion.")
def promote_cmd(name: str, version: int, alias: str) -> None:
    """Point alias --alias of registered model NAME at VERSION (moving it from any other)."""
    from mnr.tracking import model_registry

    model_registry.promote(name, version, alias)
    click.echo(f"models:/{name}@{alias} -> version {version}")


def _predict_options(f):
    """Options shared by `predict` and `evaluate`: how the model runs."""
    f = click.option(
        "--tta",
        type=click.IntRange(1, 32),
        default=None,
        help="Test-time augmentation: average over N shifts along time (never frequency); "
        "default: the setting logged with the model (1, off, unless cross-validation set it).",
    )(f)
    f = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda", "mps"]),
        default="auto",
        show_default=True,
        help="Where the model runs.",
    )(f)
    f = click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Decode processes (default: all cores).",
    )(f)
    f = click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Images per inference batch (default: about a million pixels on a CPU, 512 on a GPU).",
    )(f)
    return f


@main.command("predict")
@click.argument("model_uri")
@click.argument("input_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("output.csv"),
    show_default=True,
    help="The submission CSV to write.",
)
@click.option(
    "--top-k",
    type=click.IntRange(1, 88),
    default=1,
    show_default=True,
    help="With K > 1, also write the K likeliest keys (label, note, probability).",
)
@click.option(
    "--id-column", default="filename", show_default=True, help="Header of the image-name column."
)
@click.option(
    "--label-column",
    default="label",
    show_default=True,
    help="Header of the predicted-label column.",
)
@click.option("--strip-extension", is_flag=True, help="Write img001 instead of img001.png.")
@_predict_options
def predict_cmd(
    model_uri: str,
    input_dir: Path,
    output: Path,
    top_k: int,
    id_column: str,
    label_column: str,
    strip_extension: bool,
    tta: int | None,
    batch_size: int | None,
    workers: int | None,
    device: str,
) -> None:
    """Predict every PNG in INPUT_DIR and write the Kaggle submission (filename,label per image).

    MODEL_URI is models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID (its predictor) or a checkpoint
    file (.pt). An unreadable image does not stop the others: it is listed here and in
    OUTPUT.errors.txt, every good row is written, and the exit status is 1.
    """
    from mnr.predict import (
        list_images,
        predict_model_on_folder,
        write_error_report,
        write_predictions,
    )

    images = list_images(input_dir)  # a wrong folder fails before the model loads
    result = predict_model_on_folder(
        model_uri, images, device=device, batch_size=batch_size, tta=tta, workers=workers
    )
    write_predictions(
        result,
        output,
        id_column=id_column,
        label_column=label_column,
        strip_extension=strip_extension,
        top_k=top_k,
    )
    report = write_error_report(result.problems, output)
    click.echo(f"wrote {len(result.filenames)} predictions to {output}")
    if result.problems:
        for problem in result.problems:
            click.echo(f"mnr: error: {problem}", err=True)
        click.echo(
            f"mnr: {len(result.problems)} of {result.total} image(s) could not be read; "
            f"listed in {report}",
            err=True,
        )
        sys.exit(1)


@main.command("evaluate")
@click.argument("model_uri")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Truth file (default: FOLDER/truth.txt).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Where the confusion matrix, top losses and per-class table are written.",
)
@click.option(
    "--log", "log_run", is_flag=True, help="Record the metrics and pictures on a new MLflow run."
)
@click.option("--experiment", default="mnr", show_default=True, help="MLflow experiment for --log.")
@_predict_options
def evaluate_cmd(
    model_uri: str,
    folder: Path,
    truth: Path | None,
    output_dir: Path,
    log_run: bool,
    experiment: str,
    tta: int | None,
    batch_size: int | None,
    workers: int | None,
    device: str,
) -> None:
    """Score MODEL_URI on the labelled FOLDER: accuracy, top-3, macro-F1, semitone and octave errors."""
    from mnr import api
    from mnr.predict import format_evaluation, labelled_images, log_evaluation

    images = labelled_images(folder, truth=truth)  # bad data fails before the model loads
    if log_run:
        from mnr import tracking

        tracking.configure_tracking(check=True)  # fail before the work, not after it
    model = api.load(model_uri, device=device, batch_size=batch_size, tta=tta)
    evaluation = model.evaluate(images, output_dir=output_dir, workers=workers)
    if log_run:
        log_evaluation(evaluation, experiment=experiment)
    click.echo(format_evaluation(evaluation))
