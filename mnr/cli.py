"""The `mnr` command line: click commands that parse, call and print; nothing else lives here."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from mnr.config import DEFAULT_TUNE_EPOCHS
from mnr.errors import MnrError

# MLflow's telemetry thread can race the environment reads of torchrun ranks (a KeyError on
# _MLFLOW_TELEMETRY_SESSION_ID, seen in the scaling tests); off unless the user says otherwise.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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
            raise click.BadParameter(
                f"{value!r} is not a valid {kind.__name__}", param_hint=name
            ) from None

    return callback


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="mnr")
@click.option("-v", "--verbose", is_flag=True, help="Show libraries' INFO logs and every warning.")
def main(verbose: bool) -> None:
    """mnr: recognise which of the 88 piano keys sounds in a mel-spectrogram image.

    Train, tune, track (MLflow) and serve CNNs on data in the Kaggle "Music Scale Recognition"
    layout; with no --data, commands use the built-in synthetic dataset.
    """
    from mnr.console import configure_console

    configure_console(verbose=verbose)


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
def data_synth(out: Path, per_class: int, test_per_class: int, seed: int, workers: int | None, style: str,
               colormap: str | None, fmin: float | None, fmax: float | None, mel: str | None, n_fft: int | None,
               hop: int | None) -> None:  # fmt: skip
    """Write a synthetic piano dataset to OUT: train/ with truth.txt, test/, test_truth.txt.

    Every style and option writes the Kaggle layout; `mnr train --data OUT` reads any of them.
    """
    from mnr.data.synth import SynthConfig, generate_dataset

    config = SynthConfig.for_style(
        style, colormap=colormap, fmin=fmin, fmax=fmax, htk=None if mel is None else mel == "htk",
        n_fft=n_fft, hop_length=hop,
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
        f"wrote {root}/train (labelled), {root}/test and {root}/test_truth.txt ({style} style)"
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
    from mnr.data import check_folder

    report = check_folder(folder, truth=truth, channels=channels, workers=workers)
    click.echo(report.format())
    if report.layout is not None and str(preview) not in ("", "."):
        from mnr.config import DEFAULT_INPUT_SIZE
        from mnr.data.preview import write_preview

        sample = report.image_set.path(0)
        write_preview(sample, report.layout.layout, preview, input_size=DEFAULT_INPUT_SIZE)
        click.echo(f"preview of the layout: {preview}")
    if not report.ok:
        sys.exit(1)


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


# --------------------------------------------------------------------------------------- train
_CONFIG_OPTIONS = (  # shared by train, tune and cv: which config, which data, and the overrides
    click.option("--model", callback=_blank_is_none, default=None, help="Registered model name (default: baseline_cnn)."),
    click.option("--config", "config_file", callback=_blank_is_none, default=None,
                 help="Experiment YAML, or the name of a shipped one (default: experiments/MODEL.yaml)."),
    click.option("--model-module", callback=_blank_is_none, default=None,
                 help="A .py file or module whose @register_model models become available."),
    click.option("--data", callback=_blank_is_none, default=None,
                 help="Labelled folder or dataset root (default: the built-in dataset; builtin:specshow "
                 "and builtin:imshow are the same notes drawn as figures)."),
    click.option("--epochs", callback=_convert(int, "--epochs"), default=None, help="Epochs (default: the config's)."),
    click.option("--seed", callback=_convert(int, "--seed"), default=None, help="Random seed."),
    click.option("--experiment", callback=_blank_is_none, default=None, help="MLflow experiment name."),
    click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override any config key, e.g. -s optim.name=adamw -s train.augment.enabled=true."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines."),
)  # fmt: skip


def _config_options(f):
    """Decorate a command with `_CONFIG_OPTIONS`, in the order they are listed."""
    for option in reversed(_CONFIG_OPTIONS):
        f = option(f)
    return f


def _interrupts_as_keyboard() -> None:
    """SIGTERM behaves like Ctrl-C: the engine saves, the run is marked KILLED, exit non-zero."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@main.command("train")
@_config_options
@click.option("--lr", callback=_convert(float, "--lr"), default=None, help="Learning rate.")
@click.option(
    "--batch-size", callback=_convert(int, "--batch-size"), default=None, help="Batch size."
)
@click.option("--run-name", callback=_blank_is_none, default=None, help="MLflow run name.")
@click.option(
    "--register",
    callback=_blank_is_none,
    default=None,
    help="Register the final model under this name.",
)
@click.option(
    "--resume",
    callback=_blank_is_none,
    default=None,
    metavar="RUN_ID_OR_PATH",
    help="Continue a run from its last checkpoint, in the same MLflow run.",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved config as YAML and exit without training.",
)
def train_cmd(
    model,
    config_file,
    model_module,
    data,
    epochs,
    seed,
    experiment,
    overrides,
    quiet,
    lr,
    batch_size,
    run_name,
    register,
    resume,
    print_config,
) -> None:
    """Train a model with one experiment config; everything is tracked in MLflow."""
    from mnr.config import resolve_config, to_yaml
    from mnr.distributed import distributed_session
    from mnr.training import run_training

    _interrupts_as_keyboard()
    config = resolve_config(
        model=model or (None if config_file else "baseline_cnn"),
        config=config_file,
        options={
            "model.module": model_module,
            "data.path": data,
            "train.epochs": epochs,
            "optim.lr": lr,
            "train.batch_size": batch_size,
            "train.seed": seed,
            "tracking.experiment": experiment,
            "tracking.run_name": run_name,
            "tracking.register": register,
        },
        overrides=overrides,
    )
    if print_config:
        click.echo(to_yaml(config), nl=False)
        return
    try:
        with distributed_session():
            result = run_training(config, resume=resume, progress=not quiet)
    except KeyboardInterrupt:  # run_training has said how to resume, if there is anything to resume
        click.echo("mnr: interrupted", err=True)
        sys.exit(130)
    if result.run_id is None or int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 reports
    metrics = result.final_metrics
    shown = ", ".join(
        f"{k}={metrics[k]:.4f}"
        for k in ("best/val_accuracy", "test/accuracy", "test/semitone_mae")
        if k in metrics
    )
    click.echo(f"run {result.run_id} {result.status}: {shown}")
    if result.model_uri:
        click.echo(f"model: {result.model_uri}")


# ------------------------------------------------------------------------- registered models
@main.command("register")
@click.argument("run_id")
@click.option("--name", required=True, help="Registered model name (created on first use).")
@click.option("--alias", default=None, help="Point this alias (e.g. champion) at the new version.")
def register_cmd(run_id: str, name: str, alias: str | None) -> None:
    """Register run RUN_ID's predictor (the image-taking pyfunc) as a new version of NAME."""
    from mnr.tracking import model_registry

    version = model_registry.register_run(run_id, name=name, alias=alias)
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
    help="Where the confusion matrix and per-class table are written.",
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
    from mnr.predict import (
        evaluate_folder,
        format_evaluation,
        labelled_images,
        load_predictor,
        log_evaluation,
    )

    images = labelled_images(folder, truth=truth)
    if log_run:
        from mnr import tracking

        tracking.configure_tracking(check=True)  # fail before the work, not after it
    predictor = load_predictor(model_uri, device=device, batch_size=batch_size, tta=tta)
    evaluation = evaluate_folder(
        predictor, images, model_uri=model_uri, output_dir=output_dir, workers=workers
    )
    if log_run:
        log_evaluation(evaluation, experiment=experiment)
    click.echo(format_evaluation(evaluation))


# ------------------------------------------------------------------------------------------ cv
@main.command("cv")
@_config_options
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Stratified folds (K).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Repeat the K folds with other seeds (split and training), for the score's spread.",
)
@click.option(
    "--register",
    callback=_blank_is_none,
    default=None,
    metavar="NAME",
    help="Register the folds' ensemble (one model, probabilities averaged) as NAME.",
)
@click.option(
    "--tta",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Time shifts the ensemble averages over when it predicts (stored with it).",
)
def cv_cmd(model, config_file, model_module, data, epochs, seed, experiment, overrides, quiet, folds, repeats,
           register, tta) -> None:  # fmt: skip
    """K-fold cross-validation: one child run per fold, out-of-fold predictions, the ensemble.

    Re-running the same command continues it: finished folds are kept, a killed one resumes
    from its checkpoint, nothing is trained twice.
    """
    from mnr.config import resolve_config
    from mnr.cv import cross_validate

    _interrupts_as_keyboard()
    config = resolve_config(
        model=model or (None if config_file else "baseline_cnn"),
        config=config_file,
        options={
            "model.module": model_module, "data.path": data, "train.epochs": epochs, "train.seed": seed,
            "tracking.experiment": experiment,
        },
        overrides=overrides,
    )  # fmt: skip
    try:
        result = cross_validate(
            config, folds=folds, repeats=repeats, register=register, tta=tta, progress=not quiet
        )
    except KeyboardInterrupt:
        click.echo(
            "mnr: interrupted; finished folds are kept. Run the same command again to continue.",
            err=True,
        )
        sys.exit(130)
    summary = result.summary
    click.echo(
        f"{len(result.folds)} folds: val accuracy {summary['cv/accuracy_mean']:.4f} +- {summary['cv/accuracy_std']:.4f}, "
        f"semitone error {summary['cv/semitone_mae_mean']:.4f}; out-of-fold accuracy {summary['cv/oof_accuracy']:.4f}"
    )
    if result.test_metrics:
        click.echo(
            f"ensemble on the test split: accuracy {result.test_metrics['test/accuracy']:.4f}, semitone error "
            f"{result.test_metrics['test/semitone_mae']:.4f} (folds alone: {result.test_metrics['test/fold_accuracy_mean']:.4f})"
        )
    click.echo(f"MLflow parent run: {result.parent_run_id}")
    if result.registered_version is not None:
        click.echo(f"registered {register} version {result.registered_version.version}: models:/{register}/"
                   f"{result.registered_version.version}")  # fmt: skip


# ---------------------------------------------------------------------------------------- tune
@main.command("tune")
@_config_options
@click.option(
    "--trials",
    callback=_convert(int, "--trials"),
    default=None,
    metavar="N",
    help="Trials to ADD to the study from this process (default: 30, or as many as fit in "
    "--timeout). Re-running the same command resumes the study: finished trials are kept, "
    "never rerun, and this many more are added. 0 only re-logs the study (say, with --register).",
)
@click.option(
    "--timeout",
    callback=_convert(float, "--timeout"),
    default=None,
    metavar="SECONDS",
    help="Start no new trial after this many seconds.",
)
@click.option(
    "--study-name",
    callback=_blank_is_none,
    default=None,
    help="Optuna study name (default: mnr-MODEL).",
)
@click.option(
    "--storage",
    callback=_blank_is_none,
    default=None,
    help="Optuna storage: an RDB URL (sqlite:///tune.db, postgresql://...) or a journal file "
    "path (default: STUDY_NAME.journal in the working directory).",
)
@click.option(
    "--n-jobs",
    callback=_convert(int, "--n-jobs"),
    default=None,
    metavar="N",
    help="Trials run at once in threads of this process (default 1; -1 = one per core).",
)
@click.option(
    "--sampler",
    type=click.Choice(["tpe", "random"]),
    default="tpe",
    show_default=True,
    help="How trials pick values.",
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="How bad trials are stopped early.",
)
@click.option(
    "--register",
    callback=_blank_is_none,
    default=None,
    metavar="NAME",
    help="Retrain the best config for the config's full train.epochs and register the model as NAME.",
)
@click.option(
    "--save-weights",
    is_flag=True,
    help="Keep each trial's checkpoints and log its model (default: trials write no weights).",
)
def tune_cmd(
    model,
    config_file,
    model_module,
    data,
    epochs,
    seed,
    experiment,
    overrides,
    quiet,
    trials,
    timeout,
    study_name,
    storage,
    n_jobs,
    sampler,
    pruner,
    register,
    save_weights,
) -> None:
    """Search hyper-parameters with Optuna; each trial is a child MLflow run of one study run.

    The search space is the config's `search:` section, else learning rate (log 1e-4..0.1) and
    batch size (16, 32, 64, 128). Interrupting (Ctrl-C) keeps every finished trial.
    """
    import optuna

    from mnr.config import resolve_config
    from mnr.tune import format_summary, tune

    _interrupts_as_keyboard()
    config = resolve_config(
        model=model or (None if config_file else "baseline_cnn"),
        config=config_file,
        options={
            "model.module": model_module,
            "data.path": data,
            "train.seed": seed,
            "tracking.experiment": experiment,
        },
        overrides=overrides,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # mnr prints one line per trial instead
    try:
        result = tune(
            config,
            trials=trials if trials is not None or timeout is not None else 30,
            epochs=epochs,
            timeout=timeout,
            study_name=study_name,
            storage=storage,
            n_jobs=n_jobs or 1,
            sampler=sampler,
            pruner=pruner,
            seed=config.train.seed,
            register=register,
            save_weights=save_weights,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        click.echo(
            "mnr: interrupted; finished trials are kept in the study, the running one is marked failed "
            "and the study's MLflow run KILLED. Run the same command again to continue.",
            err=True,
        )
        sys.exit(130)
    click.echo(format_summary(result.study))
    counts = result.counts
    click.echo(
        f"\nstudy {result.study_name} ({result.storage}): "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    )
    click.echo(f"MLflow parent run: {result.parent_run_id}")
    if result.best_trial is None:
        click.echo("no trial completed", err=True)
        sys.exit(1)
    best = result.best_trial
    params = ", ".join(f"{k}={v}" for k, v in best.params.items())
    click.echo(f"best: trial {best.number} {config.train.monitor}={best.value:.4f} ({params})")
    if result.registered_run_id:
        click.echo(f"retrained and registered as {register!r}: run {result.registered_run_id}")


for _param in tune_cmd.params:  # the shared options mean something slightly different when tuning
    if _param.name == "epochs":
        _param.help = (
            f"Epochs per trial (default: the config's train.epochs, at most {DEFAULT_TUNE_EPOCHS}); "
            "--register retrains for the config's full train.epochs."
        )
    elif _param.name == "seed":
        _param.help = (
            "Seed for training and for the sampler (trial N draws the same values in any process)."
        )


if __name__ == "__main__":  # pragma: no cover
    main()
