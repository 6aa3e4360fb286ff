"""The `mnr` command line: click commands that parse, call and print; nothing else lives here."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from mnr.errors import MnrError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """A group that turns `MnrError` into a one-line message and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MnrError as exc:
            click.echo(f"mnr: error: {exc}", err=True)
            ctx.exit(2)


def _blank_is_none(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """MLproject passes every parameter; an empty one means "not given" (use the config's)."""
    return None if value in ("", None) else value


def _convert(kind: type, name: str):
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        value = _blank_is_none(ctx, param, value)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a valid {kind.__name__}", param_hint=name) from None

    return callback


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="mnr")
def main() -> None:
    """mnr: recognise which of the 88 piano keys sounds in a mel-spectrogram image.

    Train, tune, track (MLflow) and serve CNNs on data in the Kaggle "Music Scale Recognition"
    layout; with no --data, commands use the built-in synthetic dataset.
    """


# ---------------------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data() -> None:
    """Generate and validate datasets in the Kaggle layout."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", default=32, show_default=True, help="Training images per key.")
@click.option("--test-per-class", default=10, show_default=True, help="Test images per key.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
def data_synth(out: Path, per_class: int, test_per_class: int, seed: int, workers: int | None) -> None:
    """Write a synthetic piano dataset to OUT: train/ with truth.txt, test/, test_truth.txt."""
    from mnr.data.synth import generate_dataset

    root = generate_dataset(out, per_class=per_class, test_per_class=test_per_class, seed=seed, workers=workers)
    click.echo(f"wrote {root}/train (labelled), {root}/test and {root}/test_truth.txt")


@data.command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Truth file (default: FOLDER/truth.txt if present, else the folder is unlabelled).")
@click.option("--workers", type=int, default=None, help="Decode processes (default: all cores).")
def data_check(folder: Path, truth: Path | None, workers: int | None) -> None:
    """Validate FOLDER in one pass: every problem with its file and line, then what it holds."""
    from mnr.data import check_folder

    report = check_folder(folder, truth=truth, workers=workers)
    click.echo(report.format())
    if not report.ok:
        sys.exit(1)


# -------------------------------------------------------------------------------------- models
@main.command("models")
@click.argument("pattern", required=False)
@click.option("--registered", is_flag=True, help="List models in the MLflow model registry instead.")
@click.option("--model-module", default=None, help="A .py file or module whose @register_model functions to load.")
def models_cmd(pattern: str | None, registered: bool, model_module: str | None) -> None:
    """List registered model architectures (wildcards allowed), or --registered MLflow models."""
    if registered:
        from mnr import registry

        click.echo(registry.format_registered(registry.list_registered(pattern)))
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


# --------------------------------------------------------------------------------------- train
def _config_options(f):
    """Options shared by `train` and `tune`: the config file and the overrides."""
    f = click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. -s optim.name=adamw -s train.augment.enabled=true.")(f)
    f = click.option("--experiment", callback=_blank_is_none, default=None, help="MLflow experiment name.")(f)
    f = click.option("--seed", callback=_convert(int, "--seed"), default=None, help="Random seed.")(f)
    f = click.option("--epochs", callback=_convert(int, "--epochs"), default=None, help="Epochs (default: the config's).")(f)
    f = click.option("--data", callback=_blank_is_none, default=None,
                     help="Labelled folder or dataset root (default: the built-in dataset).")(f)
    f = click.option("--model-module", callback=_blank_is_none, default=None,
                     help="A .py file or module whose @register_model models become available.")(f)
    f = click.option("--config", "config_file", callback=_blank_is_none, default=None,
                     help="Experiment YAML (default: experiments/MODEL.yaml when it exists).")(f)
    f = click.option("--model", callback=_blank_is_none, default=None, help="Registered model name (default: baseline_cnn).")(f)
    return f


def _interrupts_as_keyboard() -> None:
    """SIGTERM behaves like Ctrl-C: the engine saves, the run is marked KILLED, exit non-zero."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@main.command("train")
@_config_options
@click.option("--lr", callback=_convert(float, "--lr"), default=None, help="Learning rate.")
@click.option("--batch-size", callback=_convert(int, "--batch-size"), default=None, help="Batch size.")
@click.option("--run-name", callback=_blank_is_none, default=None, help="MLflow run name.")
@click.option("--register", callback=_blank_is_none, default=None, help="Register the final model under this name.")
@click.option("--resume", callback=_blank_is_none, default=None, metavar="RUN_ID_OR_PATH",
              help="Continue a run from its last checkpoint, in the same MLflow run.")
def train_cmd(model, config_file, model_module, data, epochs, seed, experiment, overrides, lr, batch_size,
              run_name, register, resume) -> None:
    """Train a model with one experiment config; everything is tracked in MLflow."""
    from mnr.config import resolve_config
    from mnr.distributed import distributed_session
    from mnr.training import run_training

    _interrupts_as_keyboard()
    config = resolve_config(
        model=model or (None if config_file else "baseline_cnn"),
        config=config_file,
        options={
            "model.module": model_module, "data.path": data, "train.epochs": epochs, "optim.lr": lr,
            "train.batch_size": batch_size, "train.seed": seed, "tracking.experiment": experiment,
            "tracking.run_name": run_name, "tracking.register": register,
        },
        overrides=overrides,
    )
    try:
        with distributed_session():
            result = run_training(config, resume=resume)
    except KeyboardInterrupt:
        click.echo("mnr: interrupted; the last completed epoch is checkpointed and the run is marked KILLED. "
                   "Continue with: mnr train --resume RUN_ID", err=True)
        sys.exit(130)
    if result.run_id is None:
        return
    metrics = result.final_metrics
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("val_accuracy", "test_accuracy", "test_semitone_mae") if k in metrics)
    click.echo(f"run {result.run_id} {result.status}: {shown}")
    if result.model_uri:
        click.echo(f"model: {result.model_uri}")


if __name__ == "__main__":  # pragma: no cover
    main()
