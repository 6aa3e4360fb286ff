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
    from mnr import api
    from mnr.config import to_yaml

    sigterm_as_ctrl_c()
    settings = dict(
        model=model, config=config_file, model_module=model_module, data=data, epochs=epochs,
        seed=seed, experiment=experiment, lr=lr, batch_size=batch_size, run_name=run_name,
        register=register, resume=resume, overrides=overrides,
    )  # fmt: skip
    if print_config:
        click.echo(to_yaml(api.train_config(**settings)[0]), nl=False)
        return
    try:
        result = api.train(**settings, progress=not quiet)
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
    from mnr import api

    sigterm_as_ctrl_c()
    try:
        result = api.cv(
            model=model, config=config_file, model_module=model_module, data=data, epochs=epochs,
            seed=seed, experiment=experiment, overrides=overrides, folds=folds, repeats=repeats,
            register=register, tta=tta, progress=not quiet,
        )  # fmt: skip
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
    "--jobs",
    callback=convert(int, "--jobs"),
    default=None,
    metavar="N",
    help="Trials run at once in N worker processes that share the decoded data and split the "
    "cores (default: one per core, at most 2; 1 runs them in this process).",
)
@click.option(
    "--folds",
    callback=convert(int, "--folds"),
    default=None,
    metavar="K",
    help="Judge each trial by K-fold cross-validation (its value is the folds' mean); a config "
    "that is poor in its first fold is pruned there. Default: one train/validation split.",
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
    jobs,
    folds,
    sampler,
    pruner,
    register,
    save_weights,
) -> None:
    """Search hyper-parameters with Optuna; each trial is a child MLflow run of one study run.

    The search space is the config's `search:` section, else learning rate (log 1e-4..0.1) and
    batch size (16, 32, 64, 128). Interrupting (Ctrl-C) keeps every finished trial.
    """
    from mnr import api
    from mnr.tuning import format_summary

    sigterm_as_ctrl_c()
    try:
        result = api.tune(
            model=model, config=config_file, model_module=model_module, data=data, epochs=epochs,
            seed=seed, experiment=experiment, overrides=overrides, trials=trials,
            timeout=timeout, study_name=study_name, storage=storage, jobs=jobs, folds=folds,
            sampler=sampler, pruner=pruner, register=register, save_weights=save_weights,
            progress=not quiet,
        )  # fmt: skip
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
    click.echo(f"best: trial {best.number} {result.monitor}={best.value:.4f} ({params})")
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
