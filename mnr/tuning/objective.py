"""The objective: one trial is one engine run of the config with the trial's values set.

`Objective` is what `study.optimize` calls, once per trial, in the command's process or in each
worker process of `--jobs` (it holds no per-trial state). It records how each trial ended on
both sides, the trial's user attrs and its MLflow run, in one place: `_ending` says which end
an exception means.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import optuna

from mnr import tracking
from mnr.config import ExperimentConfig
from mnr.data import TrainingData
from mnr.engine import DivergedError
from mnr.monitor import Monitor, best_name
from mnr.run_record import RunRecord
from mnr.training import checkpoint_callback, run_training, stopping_callbacks
from mnr.tuning.folds import train_folds
from mnr.tuning.pruning import PruningCallback, best_reported
from mnr.tuning.runs import (
    FOLDS_ATTR,
    RUN_ATTR,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    WORKER_ATTR,
    child_run,
    close_child,
    worker,
)
from mnr.tuning.space import SearchParam, trial_config
from mnr.tuning.spec import StudySpec

__all__ = ["TRIAL_SETTINGS", "Objective", "trial_name"]


# settings every trial runs with: system metrics go on the study's parent run instead, which
# lives as long as the study (a trial's own would be a few samples, and a thread per trial)
TRIAL_SETTINGS: dict[str, Any] = {"tracking.system_metrics": False}


@dataclass(frozen=True)
class Objective:
    """Train `config` with one trial's values for `study.epochs` epochs; return its best
    monitored value.

    Each trial is a child run of `parent` named by its number and values (`trial 007 lr=0.0194
    batch_size=16`, so that the UI's run list tells trials apart), on the already decoded
    `data`, with a `PruningCallback`; `study.save_weights` keeps its checkpoints and logs its
    model. With `study.folds` of 2 or more the trial is cross-validated (`mnr.tuning.folds`) and
    its value is the folds' mean. `threads` sets each trial's torch threads (worker processes
    split the cores).
    A trial the pruner stopped, or whose loss diverged, is PRUNED (its run KILLED); an interrupt
    fails the trial and KILLs its run; any other error fails both. `stop` is set on Ctrl-C (in a
    worker process, instead of an immediate KeyboardInterrupt), and the trial ends at its next
    epoch, recorded as interrupted.
    """

    config: ExperimentConfig
    space: list[SearchParam]
    data: TrainingData
    parent: str
    study: StudySpec
    threads: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker())
        params = {p.key: p.suggest(trial) for p in self.space}
        pruning = PruningCallback(trial, self.config.train.monitor, stop=self.stop)
        try:
            value, run_id, steps = self._train(trial, params, pruning)
        except BaseException as exc:
            ending = _ending(exc)
            if ending is None:  # SystemExit and the like: not a trial's outcome
                raise
            self._record(trial, pruning, ending)
            if ending.state == "PRUNED":
                raise optuna.TrialPruned(ending.reason) from None
            raise
        return self._complete(trial, value, run_id=run_id, steps=steps)

    def _train(
        self, trial: optuna.Trial, params: dict[str, Any], pruning: PruningCallback
    ) -> tuple[float, str | None, int]:
        """Train the trial; return its value, its run and the epochs it trained."""
        settings = dict(TRIAL_SETTINGS)
        if self.threads is not None:
            settings["train.threads"] = self.threads
        cfg = trial_config(
            self.config,
            {**params, **settings},
            epochs=self.study.epochs,
            run_name=trial_name(trial.number, params),
            log_model=self.config.tracking.log_model and self.study.save_weights,
        )
        tags = {TRIAL_TAG: str(trial.number), STUDY_TAG: self.study.name, STATE_TAG: "RUNNING"}
        if self.study.folds > 1:
            scores = train_folds(
                cfg,
                self.data,
                folds=self.study.folds,
                pruning=pruning,
                parent=self.parent,
                run_name=cfg.tracking.run_name or "",
                tags=tags,
            )
            trial.set_user_attr(FOLDS_ATTR, scores.values)
            return scores.mean, scores.run_id, scores.steps
        # no progress lines and no evaluation beyond the per-epoch one; the weights are kept
        # (checkpoints, the best restored and logged) only when the study will use them
        kept = [checkpoint_callback(cfg)] if self.study.save_weights else []
        result = run_training(
            cfg,
            self.data,
            callbacks=[*stopping_callbacks(cfg), *kept, pruning],
            record=RunRecord(parent_run_id=self.parent, tags=tags, source="mnr tune"),
        )
        monitor = Monitor(self.config.train.monitor, self.config.train.monitor_mode)
        return best_reported(result.history, monitor), result.run_id, len(result.history)

    def _record(self, trial: optuna.Trial, pruning: PruningCallback, ending: _Ending) -> None:
        """The reason as a trial user attr; state, reason and status on the trial's run."""
        trial.set_user_attr(
            "prune_reason" if ending.state == "PRUNED" else "fail_reason", ending.reason
        )
        run_id = child_run(
            pruning.run_id,
            experiment=self.config.tracking.experiment,
            parent=self.parent,
            number=trial.number,
        )
        close_child(run_id, state=ending.state, status=ending.status, reason=ending.reason)

    def _complete(
        self, trial: optuna.Trial, value: float, *, run_id: str | None, steps: int
    ) -> float:
        if run_id is not None:
            trial.set_user_attr(RUN_ATTR, run_id)
            tracking.set_tags(run_id, {STATE_TAG: "COMPLETE"})
            tracking.log_metrics(run_id, {best_name(self.config.train.monitor): value}, step=steps)
        return value


class _Ending(NamedTuple):
    state: str  # the trial's Optuna state
    status: str  # its MLflow run's status
    reason: str


def _ending(exc: BaseException) -> _Ending | None:
    """How a trial that raised `exc` ends; None for what is not a trial's outcome.

    A diverged loss is pruned rather than failed, so that the sampler learns the region is bad.
    """
    if isinstance(exc, optuna.TrialPruned | DivergedError):
        return _Ending("PRUNED", "KILLED", str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return _Ending("FAIL", "KILLED", "interrupted")
    if isinstance(exc, Exception):
        return _Ending("FAIL", "FAILED", f"{type(exc).__name__}: {exc}")
    return None


def trial_name(number: int, params: dict[str, Any]) -> str:
    """`trial 007 lr=0.0194 batch_size=16`: the number first, then each value under its key's
    last part (what the MLflow run list shows first)."""
    shown = " ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in params.items())
    return f"trial {number:03d} {shown}".rstrip()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
