"""`mnr train`, `mnr cv` and `mnr tune`: the commands that train."""

from __future__ import annotations

import os
import sys

import click

from mnr.cli.base import blank_is_none, config_options, convert, main, sigterm_as_ctrl_c
from mnr.config import DEFAULT_TUNE_EPOCHS


@main.command("train")
@config_options
@click.option("--lr", callback=convert(float, "--lr"), default=None, help="Learning rate.")
@click.option(
    "--batch-size", callback=convert(int, "--batch-size"), default=None, help="Batch size."
)
@click.option("--run-name", callback=blank_is_none, default=None, help="MLflow run name.")
@click.option(
    "--register",
    callback=blank_is_none,
    default=None,
    help="Register the final model under this name.",
)
@click.option(
    "--resume",
    callback=blank_is_none,
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
    """Train a model with one experiment config; everything is tracked in MLflow.

    With --resume the run continues with the config it was trained with: --epochs, --register,
    --run-name (and -s keys such as train.early_stopping.patience) change it, and an option that
    would make it another experiment (--model, --data, --batch-size, --seed...) is refused.
    """
    from mnr.config import given_settings, resolve_config, to_yaml
    from mnr.distributed import distributed_session
    from mnr.resume import load_resume
    from mnr.training import run_training

    sigterm_as_ctrl_c()
    named = {  # dotted key: (the option, its value; None when not given)
        "model.module": ("--model-module", model_module),
        "data.path": ("--data", data),
        "train.epochs": ("--epochs", epochs),
        "optim.lr": ("--lr", lr),
        "train.batch_size": ("--batch-size", batch_size),
        "train.seed": ("--seed", seed),
        "tracking.experiment": ("--experiment", experiment),
        "tracking.run_name": ("--run-name", run_name),
        "tracking.register": ("--register", register),
    }
    options = {key: value for key, (_, value) in named.items()}
    resumed = None
    if resume is not None:
        resumed = load_resume(
            resume,
            given=given_settings(
                config=config_file, options={"model.name": model, **options}, overrides=overrides
            ),
            option_names={"model.name": "--model", **{k: flag for k, (flag, _) in named.items()}},
        )
        config = resumed.config
        for key, (old, new) in resumed.changes.items():
            click.echo(f"mnr: resuming run {resumed.run_id}: {key} {old} -> {new}", err=True)
    else:
        config = resolve_config(
            model=model or (None if config_file else "baseline_cnn"),
            config=config_file,
            options=options,
            overrides=overrides,
        )
    if print_config:
        click.echo(to_yaml(config), nl=False)
        return
    try:
        with distributed_session():
            result = run_training(config, resume=resumed, progress=not quiet)
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


# ------------------------------------------------------------------------------------------ cv
@main.command("cv")
@config_options
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
    callback=blank_is_none,
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
    from mnr.crossval import cross_validate

    sigterm_as_ctrl_c()
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
@config_options
@click.option(
    "--trials",
    callback=convert(int, "--trials"),
    default=None,
    metavar="N",
    help="Trials to ADD to the study from this process (default: 30, or as many as fit in "
    "--timeout). Re-running the same command resumes the study: finished trials are kept, "
    "never rerun, and this many more are added. 0 only re-logs the study (say, with --register).",
)
@click.option(
    "--timeout",
    callback=convert(float, "--timeout"),
    default=None,
    metavar="SECONDS",
    help="Start no new trial after this many seconds.",
)
@click.option(
    "--study-name",
    callback=blank_is_none,
    default=None,
    help="Optuna study name (default: mnr-MODEL).",
)
@click.option(
    "--storage",
    callback=blank_is_none,
    default=None,
    help="Optuna storage: an RDB URL (sqlite:///tune.db, postgresql://...) or a journal file "
    "path (default: STUDY_NAME.journal in the working directory).",
)
@click.option(
    "--n-jobs",
    callback=convert(int, "--n-jobs"),
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
    callback=blank_is_none,
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
    from mnr.tuning import format_summary, tune

    sigterm_as_ctrl_c()
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
