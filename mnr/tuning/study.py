"""The study loop: `tune()` opens (or resumes) a study, runs its trials, and reports it.

Everything that can fail because of the command's options (counts, the search space, the
config, the tracking server) fails before the data is decoded; then the study is opened, its
MLflow parent run found or created, the trials run, the study logged on the parent run, and the
best config retrained when asked. The parent run always ends: FINISHED, KILLED on an interrupt,
FAILED on an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from mnr import tracking
from mnr.config import ExperimentConfig
from mnr.console import say
from mnr.data import TrainingData
from mnr.display import result_html, result_repr
from mnr.errors import MnrError
from mnr.interrupts import interrupts_as_keyboard
from mnr.monitor import Monitor
from mnr.run_record import RunRecord
from mnr.training import TrainResult, default_callbacks, load_data, run_training
from mnr.tuning.folds import check_folds
from mnr.tuning.objective import Objective
from mnr.tuning.report import TrialProgress, best_trial, log_study
from mnr.tuning.runs import (
    FOLDS_STUDY_ATTR,
    PARENT_ATTR,
    STUDY_TAG,
    fail_trials_of_dead_workers,
    find_parent,
    parent_tags,
)
from mnr.tuning.space import parse_search_space, trial_config
from mnr.tuning.spec import StudySpec, study_spec
from mnr.tuning.workers import SharedData, WorkerSpec, default_jobs, run_workers, threads_per_worker

__all__ = ["TuneResult", "tune"]


@dataclass
class TuneResult:
    """What `tune` leaves: the study, its MLflow parent run, the best trial, and any retrain."""

    study: optuna.Study
    parent_run_id: str
    best_trial: FrozenTrial | None
    registered_run_id: str | None = None
    study_name: str = ""
    storage: str = ""
    monitor: str = "val/acc"  # the metric a trial's value is the best of (`train.monitor`)

    @property
    def counts(self) -> dict[str, int]:
        """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
        counts: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts

    def _rows(self) -> dict[str, Any]:
        best = self.best_trial
        return {
            "study": self.study_name,
            "trials": ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.counts.items())),
            "best trial": None if best is None else best.number,
            "best value": None if best is None else best.value,
            "best params": None if best is None else best.params,
            "registered run": self.registered_run_id,
        }

    def __repr__(self) -> str:
        return result_repr("TuneResult", self._rows())

    def _repr_html_(self) -> str:
        return result_html("mnr.tune", self._rows(), run_id=self.parent_run_id)


def tune(
    config: ExperimentConfig,
    study: StudySpec | None = None,
    *,
    trials: int | None,
    timeout: float | None = None,
    jobs: int | None = 1,
    register: str | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run (or resume) the study `study` describes (None: `study_spec(config)`'s defaults):
    add `trials` trials; see `mnr.tuning`.

    `trials` is how many trials THIS call adds (None: until `timeout` seconds); trials already
    in the study are never rerun. `jobs` runs them in that many worker processes
    (`mnr.tuning.workers`; 1: in this process; None: `default_jobs()`, what `mnr tune` uses).
    `register` retrains the best config for the config's full `train.epochs` and registers the
    model under that name. A study keeps the fold count it was created with.
    """
    study = study or study_spec(config)
    jobs = default_jobs() if jobs is None else jobs
    _check_limits(trials=trials, timeout=timeout, jobs=jobs)
    space = parse_search_space(config.search)
    trial_config(config, {}, epochs=study.epochs)  # a bad config fails before the data is decoded
    # an unreachable tracking server fails here, before the data is decoded
    tracking.configure_tracking(check=True)
    data = load_data(config, progress=progress)
    if study.folds > 1:
        check_folds(study.folds, data.folder.labels)
    storage_text = study.describe_storage()
    storage = study.open_storage()
    optuna_study, created = _open_study(study, storage, direction=_direction(config))
    _check_study_folds(optuna_study, study.folds, created=created, study_name=study.name)
    found = find_parent(
        optuna_study, created, config, study_name=study.name, storage_text=storage_text
    )
    with tracking.tracked_run(
        experiment=config.tracking.experiment,
        run_name=study.name,
        tags=parent_tags(config, study_name=study.name, storage_text=storage_text, space=space),
        run_id=found,
        description=(
            f"Optuna study {study.name} of {config.model.name} ({storage_text}): "
            + "; ".join(p.describe() for p in space)
            + f"; {study.epochs} epochs per trial"
            + (f" on each of {study.folds} folds" if study.folds > 1 else "")
            + ", each trial a child run."
        ),
        source="mnr tune",
        system_metrics=config.tracking.system_metrics,  # the study's, not each trial's
    ) as parent:
        optuna_study.set_user_attr(PARENT_ATTR, parent)
        if not isinstance(storage, optuna.storages.RDBStorage):  # an RDB has heartbeats
            fail_trials_of_dead_workers(
                optuna_study, experiment=config.tracking.experiment, parent=parent
            )
        objective = Objective(
            config=config,
            space=space,
            data=data,
            parent=parent,
            study=study,
            threads=threads_per_worker(jobs, config.train.threads) if jobs > 1 else None,
        )
        runner = _in_process if jobs == 1 else _in_workers(jobs)
        best, registered = _run_study(
            optuna_study,
            objective,
            runner,
            trials=trials,
            timeout=timeout,
            register=register,
            progress=progress,
        )
    return TuneResult(
        study=optuna_study,
        parent_run_id=parent,
        best_trial=best,
        registered_run_id=registered,
        study_name=study.name,
        storage=storage_text,
        monitor=config.train.monitor,
    )


def _check_limits(*, trials: int | None, timeout: float | None, jobs: int) -> None:
    """Reject a study that would never end, a negative count or a process count below 1."""
    if trials is None and timeout is None:
        raise MnrError("give --trials, --timeout or both; otherwise the study would never end")
    if trials is not None and trials < 0:
        raise MnrError(f"--trials must be 0 or more, got {trials}")
    if jobs < 1:
        raise MnrError(f"--jobs must be a positive number of worker processes, got {jobs}")


def _check_study_folds(study: optuna.Study, folds: int, *, created: bool, study_name: str) -> None:
    """A study's values must mean one thing: one split, or the mean of one number of folds."""
    if created:
        study.set_user_attr(FOLDS_STUDY_ATTR, folds)
        return
    before = int(study.user_attrs.get(FOLDS_STUDY_ATTR, 1))
    if before != folds:
        given = f"--folds {folds}" if folds > 1 else "no --folds"
        was = f"--folds {before}" if before > 1 else "one split (no --folds)"
        raise MnrError(
            f"study {study_name!r} judges its trials by {was}, and this command gives {given}; "
            f"give the same, or use another --study-name"
        )


def _direction(config: ExperimentConfig) -> str:
    return Monitor(config.train.monitor, config.train.monitor_mode).direction


def _open_study(
    study: StudySpec, storage: optuna.storages.BaseStorage, *, direction: str
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; True when this process created it.

    Creation is atomic in every Optuna storage (one wins, the others get DuplicatedStudyError),
    which is what decides, among processes started together, who creates the MLflow parent run.
    """
    sampler, pruner = study.new_sampler(), study.new_pruner()
    try:
        created = optuna.create_study(
            study_name=study.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=False,
        )
        return created, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    loaded = optuna.load_study(
        study_name=study.name, storage=storage, sampler=sampler, pruner=pruner
    )
    if len(loaded.directions) != 1 or loaded.direction.name.lower() != direction:
        raise MnrError(
            f"study {study.name!r} exists and optimises {[d.name.lower() for d in loaded.directions]}, but "
            f"train.monitor_mode asks to {direction}; use another --study-name"
        )
    return loaded, False


def _in_process(
    study: optuna.Study,
    objective: Objective,
    *,
    trials: int | None,
    timeout: float | None,
    shown: TrialProgress | None,
) -> None:
    """Run the trials one after another in this process (`--jobs 1`)."""
    study.optimize(
        objective,
        n_trials=trials,
        timeout=timeout,
        catch=(Exception,),
        callbacks=[shown] if shown is not None else [],
    )


def _in_workers(jobs: int) -> Runner:
    """Run the trials in `jobs` worker processes that share the decoded data (`--jobs N`)."""

    def run(
        study: optuna.Study,
        objective: Objective,
        *,
        trials: int | None,
        timeout: float | None,
        shown: TrialProgress | None,
    ) -> None:
        shared, block = SharedData.create(objective.data, folds=objective.study.folds > 1)
        try:
            spec = WorkerSpec(
                config=objective.config,
                study=objective.study,
                parent=objective.parent,
                threads=objective.threads or 1,
                deadline=None if timeout is None else time.time() + timeout,
                data=shared,
            )
            run_workers(
                spec,
                jobs=jobs,
                trials=trials,
                study=study,
                on_trial=shown,
                on_dead=lambda: fail_trials_of_dead_workers(
                    study, experiment=objective.config.tracking.experiment, parent=objective.parent
                ),
            )
        finally:
            block.close()
            block.unlink()

    return run


Runner = Callable[..., None]  # _in_process, or what _in_workers returns


def _run_study(
    study: optuna.Study,
    objective: Objective,
    runner: Runner,
    *,
    trials: int | None,
    timeout: float | None,
    register: str | None,
    progress: bool,
) -> tuple[FrozenTrial | None, str | None]:
    """Run the trials, log the study, retrain the best if asked; return (best, retrained run).

    A failing trial does not stop the study (`catch`); an interrupt does, after the running
    trials are recorded. Either way the signal handlers are restored (the caller's
    `tracked_run` ends the parent run).
    """
    parent = objective.parent
    shown = TrialProgress(total=trials) if progress else None
    registered: str | None = None
    with _install_interrupts(objective.stop):
        runner(study, objective, trials=trials, timeout=timeout, shown=shown)
        if shown is not None:
            shown.close()
        best = best_trial(study)
        log_study(study, parent, best=best, monitor=objective.config.train.monitor)
        if register is not None:
            registered = _register_best(objective, best, register=register, progress=progress)
    return best, registered


def _register_best(
    objective: Objective, best: FrozenTrial | None, *, register: str, progress: bool
) -> str | None:
    """Retrain the best trial's config and register it; the parent run records the new run."""
    if best is None:
        raise MnrError(
            f"study {objective.study.name!r} has no completed trial; nothing to register"
        )
    retrained = _retrain_best(
        objective.config,
        best,
        data=objective.data,
        parent=objective.parent,
        study_name=objective.study.name,
        register=register,
        progress=progress,
    )
    tracking.set_tags(objective.parent, {"mnr.registered_run_id": retrained.run_id})
    return retrained.run_id


def _retrain_best(
    config: ExperimentConfig,
    best: FrozenTrial,
    *,
    data: TrainingData,
    parent: str,
    study_name: str,
    register: str,
    progress: bool,
) -> TrainResult:
    """Train the best trial's config for the config's full epochs and register the model."""
    cfg = trial_config(config, dict(best.params), run_name=f"{study_name}-best", log_model=True)
    cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, register=register))
    if progress:
        say(
            f"retraining trial {best.number}'s config for {cfg.train.epochs} epochs; registering as {register!r}"
        )
    tags = {"mnr.role": "retrain-best", STUDY_TAG: study_name, "mnr.best_trial": str(best.number)}
    return run_training(
        cfg,
        data,
        callbacks=default_callbacks(cfg, data, progress=progress),
        record=RunRecord(parent_run_id=parent, tags=tags),
    )


def _install_interrupts(stop: threading.Event) -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM interrupt, and set `stop`, which `PruningCallback` checks every epoch:
    the running trial ends at its next epoch even if a library swallowed the interrupt."""
    return interrupts_as_keyboard((signal.SIGINT, signal.SIGTERM), on_signal=stop.set)
