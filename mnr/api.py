"""mnr from Python: `train`, `tune`, `cv`, `lr_find`, `load` and `check`, the functions behind
the commands.

`mnr train`, `mnr tune`, `mnr cv`, `mnr lr-find`, `mnr data check` and `mnr evaluate` parse their
options and call these, so a notebook and a shell run the same code. Keyword arguments carry the command
line's names (`--batch-size` is `batch_size=`) and the same precedence: the experiment YAML
(`config=`, else the model's shipped one) < the keyword arguments < `overrides`, a mapping of
dotted config keys to values (`-s key=value` on the command line).

Each call is quiet in a notebook (library logs and known-harmless warnings hidden for the
call only, `mnr.console.libraries_quiet`) and leaves no MLflow run active, so it can be called
again in the same kernel. An interrupt (Ctrl-C, a kernel interrupt) propagates as
`KeyboardInterrupt` after the run is marked KILLED with a checkpoint to resume from, as on the
command line. Heavy libraries (torch, MLflow, Optuna) are imported inside the functions:
`import mnr` stays cheap.

Example::

    >>> import mnr
    >>> result = mnr.train(model="baseline_cnn", epochs=3)        # doctest: +SKIP
    >>> model = mnr.load(result.model_uri)                        # doctest: +SKIP
    >>> model.predict("test/")[["filename", "label", "note"]]     # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnr.display import result_repr

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from mnr.config import ExperimentConfig, Overrides
    from mnr.crossval_report import CvResult
    from mnr.data import ImageSet
    from mnr.data.check import CheckReport
    from mnr.engine import Callback
    from mnr.lr_range import LrFindResult
    from mnr.predict import Evaluation, FolderPredictions, Predictor
    from mnr.resume import Resume
    from mnr.training import TrainResult
    from mnr.tuning.study import TuneResult

__all__ = [
    "LoadedModel",
    "check",
    "cv",
    "experiment_config",
    "load",
    "lr_find",
    "train",
    "train_config",
    "tune",
]

DEFAULT_MODEL = "baseline_cnn"  # the model a call without `model` or `config` trains
DEFAULT_TRIALS = 30  # trials `tune` adds when given neither `trials` nor `timeout`


def experiment_config(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: Overrides | None = None,
) -> ExperimentConfig:
    """The config a call trains with: the YAML (`config`, else `model`'s shipped one, else
    `baseline_cnn`'s) < the options (`model_module`, `data`, `seed` and `experiment`, which
    every call takes, and `options`, dotted key -> value; None = not given) < `overrides`."""
    from mnr.config import resolve_config

    common = {
        "model.module": model_module,
        "data.path": None if data is None else str(data),
        "train.seed": seed,
        "tracking.experiment": experiment,
    }
    return resolve_config(
        model=model or (None if config else DEFAULT_MODEL),
        config=config,
        options={**common, **(options or {})},
        overrides=overrides or (),
    )


def _train_options(**values: Any) -> dict[str, tuple[str, Any]]:
    """dotted key -> (the command-line option, its value) of `train`'s named settings."""
    names = {
        "model.module": ("--model-module", "model_module"),
        "data.path": ("--data", "data"),
        "train.epochs": ("--epochs", "epochs"),
        "optim.lr": ("--lr", "lr"),
        "train.batch_size": ("--batch-size", "batch_size"),
        "train.seed": ("--seed", "seed"),
        "tracking.experiment": ("--experiment", "experiment"),
        "tracking.run_name": ("--run-name", "run_name"),
        "tracking.register": ("--register", "register"),
    }
    return {key: (flag, values[name]) for key, (flag, name) in names.items()}


def train_config(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    run_name: str | None = None,
    register: str | None = None,
    resume: str | None = None,
    overrides: Overrides | None = None,
) -> tuple[ExperimentConfig, Resume | None]:
    """What `train` would train with (what `mnr train --print-config` prints): the config and,
    with `resume` (a run id or checkpoint file), the checkpoint it continues.

    A resumed run keeps its own config: `epochs`, `register`, `run_name` and overrides such as
    ``train.early_stopping.patience`` change it, and a setting that would make it another
    experiment (`model`, `data`, `batch_size`, `seed`...) is an `MnrError` naming it.
    """
    named = _train_options(
        model_module=model_module, data=None if data is None else str(data), epochs=epochs,
        lr=lr, batch_size=batch_size, seed=seed, experiment=experiment, run_name=run_name,
        register=register,
    )  # fmt: skip
    options = {key: value for key, (_, value) in named.items()}
    if resume is None:
        return experiment_config(
            model=model, config=config, options=options, overrides=overrides
        ), None
    from mnr.config import given_settings
    from mnr.console import note
    from mnr.resume import load_resume

    resumed = load_resume(
        str(resume),
        given=given_settings(
            config=config, options={"model.name": model, **options}, overrides=overrides or ()
        ),
        option_names={"model.name": "--model", **{k: flag for k, (flag, _) in named.items()}},
    )
    for key, (old, new) in resumed.changes.items():
        note(f"resuming run {resumed.run_id}: {key} {old} -> {new}")
    return resumed.config, resumed


def train(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    run_name: str | None = None,
    register: str | None = None,
    resume: str | None = None,
    overrides: Overrides | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> TrainResult:
    """Train one model, tracked in MLflow, as `mnr train` does; see `train_config` for the
    arguments. `callbacks` are extra engine hooks (`mnr.engine.Callback`) for this run.

    Returns the `TrainResult`: run id, status, per-epoch history, final metrics and the
    logged model's URI (``runs:/RUN_ID/MODEL`` or, with `register`, the registered version's).
    """
    with _quiet():  # the libraries are imported inside it: some warn when imported
        resolved, resumed = train_config(
            model=model, config=config, model_module=model_module, data=data, epochs=epochs,
            seed=seed, experiment=experiment, lr=lr, batch_size=batch_size, run_name=run_name,
            register=register, resume=resume, overrides=overrides,
        )  # fmt: skip
        from mnr import tracking
        from mnr.distributed import distributed_session, is_main_process
        from mnr.training import default_callbacks, load_data, run_training

        with distributed_session():
            main = is_main_process()
            if main:  # an unreachable tracking server fails here, before any work
                tracking.configure_tracking(check=True)
            data = load_data(resolved, progress=progress and main)
            chosen = [*default_callbacks(resolved, data, progress=progress and main), *callbacks]
            return run_training(resolved, data, callbacks=chosen, resume=resumed)


def tune(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    overrides: Overrides | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    jobs: int | None = None,
    folds: int | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    register: str | None = None,
    save_weights: bool = False,
    progress: bool = True,
) -> TuneResult:
    """Search hyper-parameters with Optuna as `mnr tune` does: add `trials` trials (default 30,
    or as many as fit in `timeout` seconds) of `epochs` epochs each to the study `study_name` in
    `storage`, resuming it if it exists; `register` retrains the best config and registers it.
    `jobs` worker processes run the trials (None: one per core, at most 2; 1: this process);
    `folds` judges each trial by that many folds' mean (`mnr.tuning.folds`).

    The search space is the config's `search:` section. Returns the `TuneResult` (the study,
    its MLflow parent run, the best trial). The keywords after `overrides` describe the study
    (`mnr.tuning.study_spec`) or how much of it to run (`mnr.tuning.tune`).
    """
    resolved = experiment_config(
        model=model, config=config, model_module=model_module, data=data, seed=seed,
        experiment=experiment, overrides=overrides,
    )  # fmt: skip
    with _quiet():
        import optuna

        from mnr.tuning import study_spec
        from mnr.tuning import tune as run_study

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial comes from mnr
        study = study_spec(
            resolved, name=study_name, storage=storage, epochs=epochs, folds=folds,
            sampler=sampler, pruner=pruner, seed=resolved.train.seed, save_weights=save_weights,
        )  # fmt: skip
        return run_study(
            resolved,
            study,
            trials=DEFAULT_TRIALS if trials is None and timeout is None else trials,
            timeout=timeout,
            jobs=jobs,
            register=register,
            progress=progress,
        )


def cv(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    overrides: Overrides | None = None,
    folds: int = 5,
    repeats: int = 1,
    register: str | None = None,
    tta: int = 1,
    progress: bool = True,
) -> CvResult:
    """K-fold cross-validation as `mnr cv` does: one child run per fold, out-of-fold
    predictions, the folds' ensemble (registered as `register` when given). Calling it again
    continues it: finished folds are kept. Returns the `CvResult`."""
    resolved = experiment_config(
        model=model, config=config, model_module=model_module, data=data, seed=seed,
        experiment=experiment, options={"train.epochs": epochs}, overrides=overrides,
    )  # fmt: skip
    with _quiet():
        from mnr.crossval import cross_validate

        return cross_validate(
            resolved, folds=folds, repeats=repeats, register=register, tta=tta, progress=progress
        )


def lr_find(
    *,
    model: str | None = None,
    config: str | os.PathLike | None = None,
    model_module: str | None = None,
    data: str | os.PathLike | None = None,
    seed: int | None = None,
    experiment: str | None = None,
    batch_size: int | None = None,
    overrides: Overrides | None = None,
    steps: int = 200,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    progress: bool = True,
) -> LrFindResult:
    """A learning-rate range test as `mnr lr-find` runs it (`mnr.lr_range`): the loss over
    `steps` mini-batches while the lr grows from `start_lr` to `end_lr`, logged to one MLflow
    run. Returns the `LrFindResult`: `.suggestion`, `.lrs`, `.losses`, `.plot()`."""
    resolved = experiment_config(
        model=model, config=config, model_module=model_module, data=data, seed=seed,
        experiment=experiment, options={"train.batch_size": batch_size}, overrides=overrides,
    )  # fmt: skip
    with _quiet():
        from mnr.lr_range import lr_find as sweep

        return sweep(resolved, start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress)


def check(
    folder: str | os.PathLike,
    *,
    truth: str | os.PathLike | None = None,
    channels: str = "auto",
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Validate a data folder as `mnr data check` does: every problem with its file and line,
    what it holds, how its images are drawn. `report.ok` is False when it has errors and
    `print(report.format())` shows it all."""
    from mnr.data import check_folder

    return check_folder(folder, truth=truth, channels=channels, workers=workers, progress=progress)  # type: ignore[arg-type]


class LoadedModel:
    """A trained model loaded for predictions: `predict` images or a folder, `evaluate` on a
    labelled folder, `write_submission` for Kaggle. `predictor` is the `mnr.predict.Predictor`
    underneath (the same object the served model and `mnr predict` use)."""

    def __init__(self, predictor: Predictor, *, model_uri: str) -> None:
        self.predictor = predictor
        self.model_uri = model_uri

    def __repr__(self) -> str:
        return result_repr(
            "LoadedModel",
            {"model_uri": self.model_uri, "models": len(self.predictor.models), "tta": self.predictor.tta},
        )  # fmt: skip

    def predict_folder(
        self, folder: str | os.PathLike, *, workers: int | None = None, progress: bool = True
    ) -> FolderPredictions:
        """Every image of `folder`, in filename order (a broken file is a problem, not an
        error); what `predict` and `write_submission` read a folder with."""
        with _quiet():
            from mnr.predict import predict_folder

            return predict_folder(self.predictor, folder, workers=workers, progress=progress)

    def predict(self, inputs: Any, *, top_k: int = 1, progress: bool = True) -> pd.DataFrame:
        """One row per image: a folder (a ``filename`` column first, in the order of
        output.csv), or image paths, PNG bytes or uint8 arrays; then label, midi, note,
        probability and the top-`top_k` columns."""
        with _quiet():
            from mnr.predict import prediction_frame

            if not (isinstance(inputs, (str, os.PathLike)) and Path(inputs).is_dir()):
                return self.predictor.predict(inputs, top_k=top_k)
            found = self.predict_folder(inputs, progress=progress)
            frame = prediction_frame(found.probabilities, top_k=top_k)
        frame.insert(0, "filename", found.filenames)
        return frame

    def write_submission(
        self, folder: str | os.PathLike, output: str | os.PathLike = "output.csv", **options: Any
    ) -> Path:
        """Predict `folder` and write the Kaggle submission CSV (`filename,label`) to `output`;
        `options` are `mnr.predict.write_predictions`' (`top_k`, `strip_extension`, ...)."""
        from mnr.predict import write_predictions

        return write_predictions(self.predict_folder(folder), output, **options)

    def evaluate(
        self,
        folder: str | os.PathLike | ImageSet,
        truth: str | os.PathLike | None = None,
        *,
        output_dir: str | os.PathLike = "evaluation",
        workers: int | None = None,
        progress: bool = True,
    ) -> Evaluation:
        """Accuracy, top-k, macro-F1, semitone and octave errors on the labelled `folder`
        (its truth.txt, or `truth`; or `labelled_images` already read), as `mnr evaluate`; the confusion matrix and per-class
        table are written to `output_dir`."""
        with _quiet():
            from mnr.data.folder import ImageSet
            from mnr.predict import evaluate_folder, labelled_images

            images = (
                folder if isinstance(folder, ImageSet) else labelled_images(folder, truth=truth)
            )
            return evaluate_folder(
                self.predictor, images, model_uri=self.model_uri, output_dir=output_dir,
                workers=workers, progress=progress,
            )  # fmt: skip

    def top_losses(
        self,
        folder: str | os.PathLike | ImageSet,
        truth: str | os.PathLike | None = None,
        *,
        n: int = 16,
        path: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> Figure:
        """The `n` images of the labelled `folder` this model gets most confidently wrong (true
        and predicted note, probability, the plot as the model read it); a figure that says so
        when it makes no mistake. Saved to `path` when given."""
        with _quiet():
            from mnr.predict import plot_folder_top_losses

            return plot_folder_top_losses(
                self.predictor, folder, truth=truth, n=n, path=path, progress=progress
            )


def load(
    model_uri: str,
    *,
    device: str | None = "auto",
    batch_size: int | None = None,
    tta: int | None = None,
) -> LoadedModel:
    """The model behind `model_uri` (``models:/NAME@alias``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID``, a model folder or a ``.pt`` checkpoint), ready to predict."""
    with _quiet():
        from mnr.predict import load_predictor

        predictor = load_predictor(model_uri, device=device, batch_size=batch_size, tta=tta)
    return LoadedModel(predictor, model_uri=model_uri)


def _quiet() -> Any:
    """The quiet of one API call (`mnr.console.libraries_quiet`), imported when called."""
    from mnr.console import libraries_quiet

    return libraries_quiet()
