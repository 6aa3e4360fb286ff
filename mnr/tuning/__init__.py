"""Hyper-parameter search with Optuna: one trial is one engine run with one more callback.

`tune` decodes the dataset once, then lets Optuna propose values for the search space (the
experiment's `search:` section, or learning rate and batch size); each trial copies the config,
sets the proposed values, and calls `run_training` with a `PruningCallback` that reports the
monitored metric (`train.monitor`, val_acc by default) every epoch and stops a trial the pruner
gives up on. Trials are short: `epochs` per trial (default: the config's `train.epochs`, at most
`DEFAULT_TUNE_EPOCHS`). `register=` (`--register`) retrains the best config for the config's
full epochs and registers the model.

The study lives in Optuna storage (a journal file `<study>.journal` in the working directory by
default, or an RDB URL), so running the same command again resumes it: finished trials stay,
and `trials` more are added. Several processes may share one storage; each adds its own trials.

In MLflow a study is one parent run (tags `mnr.study`, `mnr.storage`, `mnr.role=study`) and each
trial a child run holding the whole resolved config as params, per-epoch metrics, the tag
`mnr.trial` (the trial number) and `mnr.trial_state`. The parent's id is stored in the study
(user attr `mlflow_parent_run_id`) and the trial's run id in the trial (user attr
`mlflow_run_id`), so each side finds the other. Run statuses:

- COMPLETE trial: FINISHED.
- PRUNED trial: KILLED, with `mnr.prune_reason`. KILLED rather than FINISHED, so that filtering on
  `attributes.status = 'FINISHED'` lists only trials that ran their full length. A trial whose
  loss became NaN/inf (`DivergedError`) is pruned too: the sampler then learns that region is bad,
  which it would not from a failed trial.
- FAILED trial (any error in the trial, e.g. an invalid combination of values): FAILED, with
  `mnr.fail_reason`; the study goes on (Optuna logs the traceback).
- An interrupt (Ctrl-C, SIGTERM) marks the running trial FAIL in the study and its run KILLED
  (`mnr.fail_reason=interrupted`), the parent run KILLED, and re-raises; the study keeps every
  finished trial.
- A trial whose worker died (SIGKILL, OOM, a lost machine): FAIL, its run FAILED. With a journal,
  the next worker started on the same host notices the dead pid; an RDB's heartbeats notice it
  on any host, and queue the trial's values again as a new trial.

`jobs` (`--jobs`) runs the trials in that many worker processes that share the decoded data
(`workers`); `folds` (`--folds`) judges each trial by K-fold cross-validation, with one epoch of
one fold as the pruner's step (`folds`).

The package, one idea per module: `space` (the search space and the trial's config), `storage`,
`samplers` (sampler and pruner), `pruning` (the engine callback), `runs` (the Optuna-to-MLflow
bridge), `objective` (one trial), `folds` (a cross-validated trial), `workers` (trials in
worker processes), `report` (summary table, progress line, the parent run's record), `spec`
(what a study is: `StudySpec`, made by `study_spec`) and `study` (`tune` itself).

Example::

    from mnr.config import resolve_config
    from mnr.tuning import study_spec, tune

    config = resolve_config(model="baseline_cnn")
    result = tune(config, study_spec(config, name="lr-batch", epochs=5), trials=30)
    print(result.best_trial.params, result.parent_run_id)
"""

from __future__ import annotations

from mnr.config import DEFAULT_TUNE_EPOCHS
from mnr.tuning.pruning import PruningCallback
from mnr.tuning.report import format_summary
from mnr.tuning.samplers import make_pruner, make_sampler
from mnr.tuning.space import SearchParam, default_search_space, parse_search_space, trial_config
from mnr.tuning.spec import StudySpec, study_spec
from mnr.tuning.storage import describe_storage, make_storage
from mnr.tuning.study import TuneResult, tune

__all__ = [
    "DEFAULT_TUNE_EPOCHS",
    "PruningCallback",
    "SearchParam",
    "StudySpec",
    "TuneResult",
    "default_search_space",
    "describe_storage",
    "format_summary",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "parse_search_space",
    "study_spec",
    "trial_config",
    "tune",
]
