"""What a study is: `StudySpec`, made once by `study_spec` from the command's options.

The command that opens a study and every worker process that joins it share one `StudySpec`:
the study's name and storage, how it samples and prunes, and how each trial trains (epochs,
folds, whether it keeps its weights). How much of the study one command runs (trials, timeout,
worker processes) and what it does at the end (register the best) stay `tune`'s own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from mnr.config import DEFAULT_TUNE_EPOCHS, ExperimentConfig
from mnr.errors import MnrError
from mnr.tuning.folds import check_folds
from mnr.tuning.samplers import make_pruner, make_sampler
from mnr.tuning.storage import describe_storage, make_storage

__all__ = ["StudySpec", "study_spec"]


@dataclass(frozen=True)
class StudySpec:
    """One study's identity and its trials' recipe (picklable: workers get a copy)."""

    name: str
    storage: str | None = None  # None: the default SQLite file (`mnr.tuning.storage`)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = 0  # the sampler's
    epochs: int = DEFAULT_TUNE_EPOCHS  # per trial (per fold, with folds)
    folds: int = 1  # 2 or more: a trial's value is the mean over that many folds
    save_weights: bool = False  # keep each trial's checkpoints and log its model

    def open_storage(self) -> optuna.storages.BaseStorage:
        return make_storage(self.storage, self.name)

    def describe_storage(self) -> str:
        return describe_storage(self.storage, self.name)

    def new_sampler(self) -> optuna.samplers.BaseSampler:
        return make_sampler(self.sampler, self.seed)

    def new_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.pruner, self.epochs)


def study_spec(
    config: ExperimentConfig,
    *,
    name: str | None = None,
    storage: str | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = 0,
    save_weights: bool = False,
) -> StudySpec:
    """The study `mnr tune`'s options describe for `config`, checked before anything runs.

    `name` defaults to ``mnr-<model>``; `epochs` to the config's `train.epochs`, at most
    `DEFAULT_TUNE_EPOCHS`. An unknown sampler or pruner, a bad fold count, or weights kept for
    cross-validated trials (one model per fold) is an `MnrError`.
    """
    if folds is not None:
        check_folds(folds)
    folds = folds or 1
    if folds > 1 and save_weights:
        raise MnrError(
            "--save-weights keeps one model per trial, and a cross-validated trial trains one "
            "per fold; leave out --save-weights (--register retrains the best config)"
        )
    trial_epochs = epochs if epochs is not None else min(config.train.epochs, DEFAULT_TUNE_EPOCHS)
    if trial_epochs < 1:
        raise MnrError(f"--epochs must be at least 1, got {trial_epochs}")
    spec = StudySpec(
        name=name or f"mnr-{config.model.name}",
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        epochs=trial_epochs,
        folds=folds,
        save_weights=save_weights,
    )
    spec.new_sampler(), spec.new_pruner()  # an unknown name fails here, before any work
    return spec
