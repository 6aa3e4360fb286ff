"""Hyper-parameter search with Optuna: one trial is one engine run with one more callback.

`tune` decodes the dataset once, then lets Optuna propose values for the search space (the
experiment's `search:` section, or learning rate and batch size); each trial copies the config,
sets the proposed values, and calls `run_training` with a `PruningCallback` that reports the
monitored metric (`train.monitor`, val_acc by default) every epoch and stops a trial the pruner
gives up on. Trials are short: `epochs` per trial (default: the config's `train.epochs`, at most
`DEFAULT_TUNE_EPOCHS`). `--register` retrains the best config for the config's full epochs.

The study lives in Optuna storage (a journal file `<study>.journal` in the working directory by
default, or an RDB URL), so running the same command again resumes it: finished trials stay,
and `trials` more are added. Several processes may share one storage; each adds its own trials.

In MLflow a study is one parent run (tags `mnr.study`, `mnr.storage`) and each trial a child run
holding the whole resolved config as params, per-epoch metrics, the tag `mnr.trial` (the trial
number) and `mnr.trial_state`. The parent's id is stored in the study (user attr
`mlflow_parent_run_id`) and the trial's run id in the trial (user attr `mlflow_run_id`), so each
side finds the other. Run statuses:

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

Example::

    from mnr.config import resolve_config
    from mnr.tune import tune

    config = resolve_config(model="baseline_cnn")
    result = tune(config, trials=30, study_name="lr-batch")
    print(result.best_trial.params, result.parent_run_id)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from mnr import settings, tracking
from mnr.config import DEFAULT_TUNE_EPOCHS, ExperimentConfig, from_dict, to_dict
from mnr.data import TrainingData
from mnr.engine import Callback, DivergedError, FitContext
from mnr.errors import MnrError
from mnr.training import TrainResult, load_data, run_training

__all__ = [
    "DEFAULT_TUNE_EPOCHS",
    "PruningCallback",
    "SearchParam",
    "TuneResult",
    "default_search_space",
    "describe_storage",
    "format_summary",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "parse_search_space",
    "trial_config",
    "tune",
]

PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
RUN_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
WORKER_ATTR = "mnr.worker"  # trial user attr: "host:pid" of the process running it
STUDY_TAG, STORAGE_TAG, TRIAL_TAG = "mnr.study", "mnr.storage", "mnr.trial"
STATE_TAG, PRUNE_TAG, FAIL_TAG = "mnr.trial_state", "mnr.prune_reason", "mnr.fail_reason"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
PARENT_WAIT_SECONDS = 120.0  # how long a second process waits for the first to name the parent run
_SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


# ------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class SearchParam:
    """One searched config key: `float`/`int` between low and high, or one of `choices`."""

    key: str
    type: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask the trial for a value; the Optuna parameter name is the dotted config key."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> str:
        """A short human form, e.g. `optim.lr: float 0.0001..0.1 (log)`."""
        if self.type == "categorical":
            return f"{self.key}: one of {list(self.choices)}"
        extra = " (log)" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.key}: {self.type} {self.low:g}..{self.high:g}{extra}"


def default_search_space() -> list[SearchParam]:
    """Learning rate (log-uniform 1e-4..0.1) and batch size (16, 32, 64 or 128)."""
    return [
        SearchParam("optim.lr", "float", low=1e-4, high=1e-1, log=True),
        SearchParam("train.batch_size", "categorical", choices=(16, 32, 64, 128)),
    ]


def _number(value: Any, where: str, *, integer: bool = False) -> float | int:
    """A finite number from YAML (which reads `1e-4`, with no dot, as a string)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MnrError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MnrError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _config_field(key: str) -> None:
    """Check that a dotted key names a setting of `ExperimentConfig` (not a section)."""
    cls: Any = ExperimentConfig
    parts = key.split(".")
    for index, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            where = ".".join(parts[:index]) or "the top level"
            raise MnrError(
                f"search.{key}: {key!r} is not a config key ({part!r} is not in {where}; "
                f"valid there: {', '.join(sorted(names))})"
            )
        hint = typing.get_type_hints(cls)[part]
        if dataclasses.is_dataclass(hint):
            if index == len(parts) - 1:
                raise MnrError(f"search.{key}: {key!r} is a config section; name one of its keys")
            cls = hint
            continue
        if typing.get_origin(hint) is dict or index == len(parts) - 1:
            return  # a leaf, or a free-form mapping such as model.kwargs.<name>
        raise MnrError(
            f"search.{key}: {'.'.join(parts[: index + 1])!r} is a single value, not a section"
        )


def _check_value(key: str, value: Any) -> None:
    """Reject a value the config would reject, naming the search key (type checks)."""
    data = to_dict(ExperimentConfig())
    _set_dotted(data, key, value)
    try:
        from_dict(ExperimentConfig, data)
    except MnrError as exc:
        raise MnrError(f"search.{key}: {exc}") from None


def _parse_param(key: Any, spec: Any) -> SearchParam:
    if not isinstance(key, str) or not key:
        raise MnrError(f"search: keys must be dotted config keys such as optim.lr, got {key!r}")
    where = f"search.{key}"
    if not isinstance(spec, dict):
        raise MnrError(
            f"{where}: expected a mapping such as {{type: float, low: 0.0001, high: 0.1, log: true}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise MnrError(f"{where}.type: expected float, int or categorical, got {kind!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS[kind])
    if unknown:
        raise MnrError(
            f"{where}: unknown key {unknown[0]!r} for type {kind}; valid: {', '.join(sorted(_SPEC_KEYS[kind]))}"
        )
    _config_field(key)
    if key.startswith("data.") or key == "train.epochs" or key.startswith("search."):
        raise MnrError(
            f"{where}: {key} cannot be searched (data.* would need a new decode per trial; the "
            "trial length is --epochs)"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MnrError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise MnrError(f"{where}.choices: {choice!r} is not a number, string, bool or null")
            _check_value(key, choice)
        return SearchParam(key, "categorical", choices=tuple(choices))
    for name in ("low", "high"):
        if name not in spec:
            raise MnrError(f"{where}: missing {name!r}")
    integer = kind == "int"
    low = _number(spec["low"], f"{where}.low", integer=integer)
    high = _number(spec["high"], f"{where}.high", integer=integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MnrError(f"{where}.log: expected true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer=integer)
        if step <= 0:
            raise MnrError(f"{where}.step: must be positive, got {step}")
        if log and step != 1:
            raise MnrError(f"{where}: step and log cannot be combined")
    if low > high:
        raise MnrError(f"{where}: low ({low}) is above high ({high})")
    if log and low <= 0:
        raise MnrError(f"{where}: log needs low > 0, got {low}")
    for value in (low, high):
        _check_value(key, value)
    return SearchParam(key, kind, low=low, high=high, step=step if not log else None, log=log)


def parse_search_space(search: dict[str, Any] | None) -> list[SearchParam]:
    """Validate a config's `search:` section; None means `default_search_space()`.

    Each key is a dotted config key and each value a spec: `{type: float, low:, high:, log:,
    step:}`, `{type: int, low:, high:, step:, log:}` or `{type: categorical, choices: [...]}`.
    Unknown spec keys, wrong types and keys that are not config keys raise `MnrError` naming the
    key, before any trial runs.
    """
    if search is None:
        return default_search_space()
    if not isinstance(search, dict) or not search:
        raise MnrError(
            "search: expected a mapping of config keys to specs, e.g. optim.lr: {type: float, low: 0.0001, high: 0.1, log: true}"
        )
    return [_parse_param(key, spec) for key, spec in search.items()]


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def trial_config(
    config: ExperimentConfig,
    params: dict[str, Any],
    *,
    epochs: int | None = None,
    run_name: str | None = None,
    log_model: bool | None = None,
) -> ExperimentConfig:
    """A copy of `config` with `params` (dotted keys) set, re-validated like any config."""
    data = to_dict(config)
    for key, value in params.items():
        _set_dotted(data, key, value)
    if epochs is not None:
        data["train"]["epochs"] = epochs
    if run_name is not None:
        data["tracking"]["run_name"] = run_name
    if log_model is not None:
        data["tracking"]["log_model"] = log_model
    return from_dict(ExperimentConfig, data)


# -------------------------------------------------------------------- storage, sampler, pruner
def _journal_path(url: str | None, study_name: str) -> Path | None:
    if url and "://" in url:
        return None
    if url:
        return Path(url).expanduser()
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "_", study_name) + ".journal")


def _heartbeat_seconds() -> int:
    """MNR_HEARTBEAT_SECONDS as a whole number of seconds, at least 1."""
    value = settings.MNR_HEARTBEAT_SECONDS.get()
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise MnrError(
            f"MNR_HEARTBEAT_SECONDS={value!r}: expected a whole number of seconds, at least 1"
        )
    return seconds


class _RetryStaleTrial:
    """A trial whose worker stopped sending heartbeats (killed, machine lost): mark its MLflow
    run FAILED, then queue its params again as a new trial (Optuna's retry, at most 3 times).

    Called in whichever worker notices the trial went stale, when that worker starts a trial.
    """

    def __init__(self, *, max_retry: int = 3) -> None:
        self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id:
            try:
                _close_child(
                    run_id,
                    state="FAIL",
                    status="FAILED",
                    reason="its worker stopped sending heartbeats",
                )
            except Exception as exc:  # noqa: BLE001 - the retry matters more than the run's status
                warnings.warn(
                    f"could not mark MLflow run {run_id} of stale trial {trial.number} FAILED: {exc}",
                    stacklevel=2,
                )
        self._retry(study, trial)


def _open_rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An RDBStorage, retried while another worker creates Optuna's tables in a new database.

    Workers started together on an empty database all create the tables, and all but one fail
    with an IntegrityError (optuna/optuna#1092); a moment later the tables exist.
    """
    import sqlalchemy.exc

    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.5 * (attempt + 1))
    return optuna.storages.RDBStorage(url, **kwargs)


def make_storage(url: str | None, study_name: str) -> optuna.storages.BaseStorage:
    """Optuna storage for a study: a journal file by default, or an RDB for a URL.

    No URL means `<study_name>.journal` in the working directory; a plain path is a journal file
    too. Both are safe for several processes on one machine. A URL (sqlite:///..., postgresql://...)
    is an RDB with heartbeats every MNR_HEARTBEAT_SECONDS (60): a trial whose worker died is
    failed after twice that and retried up to 3 times as a new trial, which is what scaling out
    over machines relies on.
    """
    journal = _journal_path(url, study_name)
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(journal))
            return optuna.storages.JournalStorage(backend)
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _open_rdb(
                url,
                heartbeat_interval=_heartbeat_seconds(),
                grace_period=2 * _heartbeat_seconds(),
                heartbeat_stale_trial_callback=_RetryStaleTrial(max_retry=3),
            )
    except (OSError, ValueError, ImportError) as exc:
        raise MnrError(
            f"--storage {url or journal}: cannot open the Optuna storage ({exc})"
        ) from None
    except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server, missing driver
        if type(exc).__module__.startswith("sqlalchemy"):
            raise MnrError(f"--storage {url}: cannot open the Optuna storage ({exc})") from None
        raise


def describe_storage(url: str | None, study_name: str) -> str:
    """The storage as recorded in MLflow: the journal's absolute path, or the URL sans password."""
    journal = _journal_path(url, study_name)
    if journal is not None:
        return str(journal.resolve())
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url or "")


class _TrialSeededSampler(BaseSampler):
    """A sampler whose randomness depends on (seed, trial number) only.

    A plain seeded sampler replays the same random draws in every process, and again when a study
    is resumed, so two workers (or a resumed run) would repeat each other's first trials. Trial
    numbers are unique within a study, so seeding per trial gives distinct, reproducible draws.
    The inner sampler (TPE or random) is rebuilt per trial; it reads all history from the study.
    """

    def __init__(self, build: Callable[[int], BaseSampler], seed: int, name: str) -> None:
        self._build, self._seed, self._name = build, seed, name
        self._samplers: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self._name}(seed={self._seed}, per trial)"

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            sampler = self._samplers.get(trial.number)
            if sampler is None:
                state = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
                sampler = self._samplers[trial.number] = self._build(int(state))
            return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._for(trial)
        with self._lock:
            self._samplers.pop(trial.number, None)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial is seeded from its number (Optuna calls this per thread)."""


def make_sampler(name: str, seed: int | None) -> BaseSampler:
    """`tpe` (5 random startup trials, then TPE) or `random`; seeded per trial number.

    Five startup trials rather than Optuna's ten: a study here is ~30 trials over 2-3 values,
    and most random learning rates leave short trials at chance level. With a seed, trial N
    samples the same values whichever process runs it; with None, draws are fresh each run.
    """
    if name == "tpe":

        def build(s: int | None) -> BaseSampler:
            return optuna.samplers.TPESampler(seed=s, n_startup_trials=5)
    elif name == "random":

        def build(s: int | None) -> BaseSampler:
            return optuna.samplers.RandomSampler(seed=s)
    else:
        raise MnrError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    if seed is None:
        return build(None)
    return _TrialSeededSampler(build, seed, name)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """`median`, `hyperband` (1..epochs) or `none`.

    Median prunes a trial whose best value so far is below the median of completed trials at
    the same epoch, once 5 trials have completed and from epoch 2 on (after one epoch, most
    configs are still at chance level). Hyperband stops most trials after 1 or 3 epochs.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=min(2, max(epochs - 1, 0))
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise MnrError(f"--pruner {name!r}: expected one of {', '.join(PRUNERS)}")


# ------------------------------------------------------------------------------------ pruning
class PruningCallback(Callback):
    """Report the monitored metric to the trial every epoch; stop the run when Optuna says so.

    Raises `optuna.TrialPruned` from `on_epoch_end` at once, which ends the engine's fit like
    any error (callbacks get `on_fit_end`); the objective turns it into a PRUNED trial. `stop`,
    an event set on Ctrl-C, makes trials in worker threads stop at their next epoch too.
    """

    def __init__(
        self, trial: optuna.Trial, monitor: str = "val_acc", *, stop: threading.Event | None = None
    ) -> None:
        self.trial = trial
        self.monitor = monitor
        self.stop = stop
        self.run_id: str | None = None
        self.last_value: float | None = None

    def on_fit_start(self, ctx: FitContext) -> None:
        for callback in ctx.callbacks:
            if isinstance(callback, tracking.MlflowLogger):
                self.run_id = callback.run_id
                self.trial.set_user_attr(RUN_ATTR, callback.run_id)
        self._check_stop()

    def on_epoch_end(self, ctx: FitContext, metrics: dict[str, float]) -> None:
        self._check_stop()
        if self.monitor not in metrics:
            raise MnrError(
                f"train.monitor={self.monitor!r} is not a metric of the epoch; "
                f"pick one of {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.monitor])
        self.last_value = value
        self.trial.report(value, ctx.epoch)
        last = ctx.epoch >= ctx.config.train.epochs  # stopping now saves nothing: let it complete
        if not last and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {ctx.epoch}: {self.monitor}={value:.4f}")

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt("tuning interrupted")


# --------------------------------------------------------------------------------------- tune
@dataclass
class TuneResult:
    """What `tune` leaves: the study, its MLflow parent run, the best trial, and any retrain."""

    study: optuna.Study
    parent_run_id: str
    best_trial: FrozenTrial | None
    registered_run_id: str | None = None
    study_name: str = ""
    storage: str = ""

    @property
    def counts(self) -> dict[str, int]:
        """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
        counts: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
        return counts


def _direction(config: ExperimentConfig) -> str:
    return "maximize" if config.train.monitor_mode == "max" else "minimize"


def _open_study(
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    sampler: BaseSampler,
    pruner: optuna.pruners.BasePruner,
    direction: str,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; True when this process created it.

    Creation is atomic in every Optuna storage (one wins, the others get DuplicatedStudyError),
    which is what decides, among processes started together, who creates the MLflow parent run.
    """
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=False,
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=sampler, pruner=pruner
    )
    if len(study.directions) != 1 or study.direction.name.lower() != direction:
        raise MnrError(
            f"study {study_name!r} exists and optimises {[d.name.lower() for d in study.directions]}, but "
            f"train.monitor_mode asks to {direction}; use another --study-name"
        )
    return study, False


def _create_parent(
    config: ExperimentConfig, *, study_name: str, storage_text: str, space: list[SearchParam]
) -> str:
    return tracking.create_run(
        experiment=config.tracking.experiment,
        run_name=study_name,
        tags={
            STUDY_TAG: study_name,
            STORAGE_TAG: storage_text,
            "mnr.role": "study",
            "model": config.model.name,
            "mnr.search_space": "; ".join(p.describe() for p in space),
        },
    )


def _parent_run(
    study: optuna.Study,
    created: bool,
    config: ExperimentConfig,
    *,
    study_name: str,
    storage_text: str,
    space: list[SearchParam],
) -> str:
    """The study's MLflow parent run: created with the study, found again when it resumes.

    The creating process makes the run and stores its id in the study; a process that loaded the
    study waits for that id (another process may be creating it right now). A study whose parent
    is missing (say, a new tracking store) gets one from the runs tagged with its name and
    storage, or a new one.
    """
    tracking.configure_tracking(check=True)
    experiment = config.tracking.experiment
    if created:
        parent = _create_parent(
            config, study_name=study_name, storage_text=storage_text, space=space
        )
        study.set_user_attr(PARENT_ATTR, parent)
        return parent
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    parent = study.user_attrs.get(PARENT_ATTR)
    while parent is None and time.monotonic() < deadline and _no_finished_trials(study):
        time.sleep(0.25)
        parent = study.user_attrs.get(PARENT_ATTR)
    run = tracking.get_run(parent) if parent else None
    if run is not None:
        wanted = tracking.experiment_id(experiment)
        if run.info.experiment_id != wanted:
            raise MnrError(
                f"study {study_name!r} records its trials in another MLflow experiment (id "
                f"{run.info.experiment_id}); pass that --experiment, or use another --study-name"
            )
        if run.info.status != "RUNNING":
            tracking.set_run_status(parent, "RUNNING")
        return parent
    found = tracking.find_runs(
        experiment=experiment,
        tags={STUDY_TAG: study_name, STORAGE_TAG: storage_text, "mnr.role": "study"},
    )
    parent = (
        found[0].info.run_id
        if found
        else _create_parent(config, study_name=study_name, storage_text=storage_text, space=space)
    )
    if found:
        tracking.set_run_status(parent, "RUNNING")
    study.set_user_attr(PARENT_ATTR, parent)
    return parent


def _no_finished_trials(study: optuna.Study) -> bool:
    """Worth waiting for the creator to name the parent run: the study has no finished trial yet."""
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    return not finished


def _child_run(
    pruning: PruningCallback, *, experiment: str, parent: str, number: int
) -> str | None:
    """The trial's MLflow run: from the callback, or by its tags when it failed before fitting."""
    if pruning.run_id is not None:
        return pruning.run_id
    found = tracking.find_runs(
        experiment=experiment,
        tags={TRIAL_TAG: str(number), tracking.PARENT_TAG: parent},
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _close_child(run_id: str | None, *, state: str, status: str, reason: str | None = None) -> None:
    if run_id is None:
        return
    tags = {STATE_TAG: state}
    if reason:
        tags[PRUNE_TAG if state == "PRUNED" else FAIL_TAG] = reason
    tracking.set_tags(run_id, tags)
    tracking.set_run_status(run_id, status)  # run_training has ended and flushed the run already


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process `pid` (on this host) is still running; a zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _fail_trials_of_dead_workers(study: optuna.Study, *, experiment: str, parent: str) -> list[int]:
    """Mark FAIL each RUNNING trial whose worker process on this host has died; return their numbers.

    A journal file has no heartbeats: a trial whose process was killed (SIGKILL, OOM, a lost
    terminal) would stay RUNNING forever, neither finished nor failed. Each trial records its
    worker as `host:pid` (`WORKER_ATTR`); a worker starting on the same host fails the trials of
    dead ones, and marks their MLflow runs FAILED. Trials of other hosts are left alone (use an
    RDB storage, whose heartbeats cover them). A reused pid only keeps a trial RUNNING longer.
    """
    host = socket.gethostname()
    failed = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(frozen.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        reason = (
            f"its worker process {pid} on {host} died (killed or crashed) before the trial ended"
        )
        try:
            optuna.Trial(study, frozen._trial_id).set_user_attr("fail_reason", reason)
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        except (RuntimeError, ValueError):  # another worker got there first
            continue
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id is None:
            found = tracking.find_runs(
                experiment=experiment,
                tags={TRIAL_TAG: str(frozen.number), tracking.PARENT_TAG: parent},
                max_results=1,
            )
            run_id = found[0].info.run_id if found else None
        _close_child(run_id, state="FAIL", status="FAILED", reason=reason)
        failed.append(frozen.number)
    return failed


def _best_of(history: list[dict[str, float]], monitor: str, mode: str) -> float:
    values = [h[monitor] for h in history if monitor in h and math.isfinite(h[monitor])]
    if not values:
        raise MnrError(f"train.monitor={monitor!r} was never reported; the trial ran no epoch")
    return max(values) if mode == "max" else min(values)


def _install_interrupts(stop: threading.Event) -> dict[int, Any]:
    """Ctrl-C and SIGTERM set `stop` (worker threads end at their next epoch) and interrupt."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def tune(
    config: ExperimentConfig,
    *,
    trials: int | None,
    epochs: int | None = None,
    timeout: float | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    n_jobs: int = 1,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = 0,
    register: str | None = None,
    save_weights: bool = False,
    progress: bool = True,
) -> TuneResult:
    """Run (or resume) a study: add `trials` trials of `epochs` epochs each; see the module doc.

    `trials` is how many trials THIS call adds (None: until `timeout`); trials already in the
    study are never rerun. `epochs` defaults to the config's `train.epochs`, at most
    `DEFAULT_TUNE_EPOCHS`. `register` retrains the best config for the config's full
    `train.epochs` and registers the model under that name. `save_weights` keeps each trial's
    checkpoints and logs its model (off: trials write no weights).
    """
    if trials is None and timeout is None:
        raise MnrError("give --trials, --timeout or both; otherwise the study would never end")
    if trials is not None and trials < 0:
        raise MnrError(f"--trials must be 0 or more, got {trials}")
    if n_jobs == 0 or n_jobs < -1:
        raise MnrError(
            f"--n-jobs must be a positive number of threads (or -1 for one per core), got {n_jobs}"
        )
    space = parse_search_space(config.search)
    tune_epochs = epochs if epochs is not None else min(config.train.epochs, DEFAULT_TUNE_EPOCHS)
    if tune_epochs < 1:
        raise MnrError(f"--epochs must be at least 1, got {tune_epochs}")
    study_name = study_name or f"mnr-{config.model.name}"
    monitor, mode = config.train.monitor, config.train.monitor_mode
    the_sampler, the_pruner = make_sampler(sampler, seed), make_pruner(pruner, tune_epochs)
    trial_config(config, {}, epochs=tune_epochs)  # a bad config fails before the data is decoded
    # an unreachable tracking server fails here, before the data is decoded
    tracking.configure_tracking(check=True)
    data = load_data(config, progress=progress)
    optuna_storage = make_storage(storage, study_name)
    storage_text = describe_storage(storage, study_name)
    study, created = _open_study(
        study_name=study_name,
        storage=optuna_storage,
        sampler=the_sampler,
        pruner=the_pruner,
        direction=_direction(config),
    )
    parent = _parent_run(
        study, created, config, study_name=study_name, storage_text=storage_text, space=space
    )
    experiment = config.tracking.experiment
    if not isinstance(optuna_storage, optuna.storages.RDBStorage):  # an RDB has heartbeats instead
        _fail_trials_of_dead_workers(study, experiment=experiment, parent=parent)
    stop = threading.Event()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, _worker())
        params = {p.key: p.suggest(trial) for p in space}
        pruning = PruningCallback(trial, monitor, stop=stop)
        tags = {TRIAL_TAG: str(trial.number), STUDY_TAG: study_name, STATE_TAG: "RUNNING"}
        try:
            cfg = trial_config(
                config,
                params,
                epochs=tune_epochs,
                run_name=f"{study_name}-{trial.number}",
                log_model=config.tracking.log_model and save_weights,
            )
            result = run_training(
                cfg,
                data=data,
                parent_run_id=parent,
                extra_callbacks=[pruning],
                extra_tags=tags,
                track=True,
                save_checkpoints=save_weights,
                final_evaluation=False,
                progress=False,
            )
        except (optuna.TrialPruned, DivergedError) as exc:
            reason = str(exc)
            trial.set_user_attr("prune_reason", reason)
            _close_child(
                _child_run(pruning, experiment=experiment, parent=parent, number=trial.number),
                state="PRUNED",
                status="KILLED",
                reason=reason,
            )
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            _close_child(
                _child_run(pruning, experiment=experiment, parent=parent, number=trial.number),
                state="FAIL",
                status="KILLED",
                reason="interrupted",
            )
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            _close_child(
                _child_run(pruning, experiment=experiment, parent=parent, number=trial.number),
                state="FAIL",
                status="FAILED",
                reason=reason,
            )
            raise
        if result.run_id is not None:
            trial.set_user_attr(RUN_ATTR, result.run_id)
        value = _best_of(result.history, monitor, mode)
        if result.run_id is not None:
            tracking.set_tags(result.run_id, {STATE_TAG: "COMPLETE"})
            tracking.log_metrics(
                result.run_id, {f"best_{monitor}": value}, step=len(result.history)
            )
        return value

    callbacks = [_progress_line] if progress else []
    previous = _install_interrupts(stop)
    registered: str | None = None
    status = "FAILED"
    try:
        study.optimize(
            objective,
            n_trials=trials,
            timeout=timeout,
            n_jobs=n_jobs,
            catch=(Exception,),
            callbacks=callbacks,
        )
        best = _best_trial(study)
        _log_study(study, parent, best=best, monitor=monitor)
        if register is not None:
            if best is None:
                raise MnrError(f"study {study_name!r} has no completed trial; nothing to register")
            retrained = _retrain_best(
                config,
                best,
                data=data,
                parent=parent,
                study_name=study_name,
                register=register,
                progress=progress,
            )
            registered = retrained.run_id
            tracking.set_tags(parent, {"mnr.registered_run_id": registered})
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        tracking.end_run(parent, status)
    return TuneResult(
        study=study,
        parent_run_id=parent,
        best_trial=best,
        registered_run_id=registered,
        study_name=study_name,
        storage=storage_text,
    )


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _progress_line(study: optuna.Study, trial: FrozenTrial) -> None:
    value = f"{trial.value:.4f}" if trial.value is not None else "-"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
    best = _best_trial(study)
    best_text = f"; best #{best.number} {best.value:.4f}" if best is not None else ""
    print(
        f"trial {trial.number:>3} {trial.state.name:<8} {value:>7} {seconds:6.1f}s  {params}"
        + (f"  ({reason[:80]})" if reason else "")
        + best_text,
        file=sys.stderr,
        flush=True,
    )


def _log_study(
    study: optuna.Study,
    parent: str,
    *,
    best: FrozenTrial | None,
    monitor: str,
) -> None:
    """Best value and params, trial counts, the summary table and the plots on the parent run."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        state: sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    tracking.log_metrics(
        parent,
        {f"trials_{state.name.lower()}": float(n) for state, n in counts.items()},
        step=len(trials),
    )
    tracking.set_tags(parent, {"mnr.monitor": monitor})
    if best is not None:
        tracking.log_metrics(
            parent,
            {"best_value": float(best.value), "best_trial": float(best.number)},
            step=len(trials),
        )
        best_params = {f"best.{key}": value for key, value in best.params.items()}
        changed = tracking.log_new_params(parent, best_params)
        # params cannot change once logged; tags always hold the current best
        tracking.set_tags(
            parent,
            {
                **best_params,
                "mnr.best_trial": best.number,
                "mnr.best_run_id": best.user_attrs.get(RUN_ATTR, ""),
            },
        )
        if changed:
            warnings.warn(
                f"the best params changed since they were first logged ({', '.join(changed)}); MLflow params "
                "are immutable, so the parent run's best.* tags hold the current best",
                stacklevel=3,
            )
    tracking.log_text(parent, format_summary(study), "trials.txt")
    with tempfile.TemporaryDirectory() as tmp:
        for path in _plots(study, Path(tmp)):
            tracking.log_artifact(parent, path, artifact_path="plots")


def _plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and intermediate values as PNG files.

    A plot that cannot be drawn (importances need two completed trials with different values)
    is skipped with a warning; the study is not worse for it.
    """
    import matplotlib

    matplotlib.use("Agg")  # inside the call: importing mnr.tune must not pick a backend
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # fANOVA with 16 trees (default 64): a second instead of several, and just as readable
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)
    plots: list[tuple[str, Callable[[optuna.Study], Any]]] = [
        ("optimization_history", ovm.plot_optimization_history),
        ("intermediate_values", ovm.plot_intermediate_values),
    ]
    if len(complete) >= 2 and len({t.value for t in complete}) >= 2:
        plots.insert(
            1,
            (
                "param_importances",
                lambda study: ovm.plot_param_importances(study, evaluator=evaluator),
            ),
        )
    else:
        warnings.warn(
            "skipped the parameter-importance plot: it needs 2 completed trials with different values",
            stacklevel=3,
        )
    written = []
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # the history plot of a study without a completed trial has an empty legend
                warnings.filterwarnings("ignore", "No artists with labels", UserWarning)
                axes = plot(study)
            figure = np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else axes.figure
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        except Exception as exc:  # noqa: BLE001 - a plot is a nicety; the study is what matters
            warnings.warn(f"skipped the {name} plot: {type(exc).__name__}: {exc}", stacklevel=3)
    return written


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
        print(
            f"retraining trial {best.number}'s config for {cfg.train.epochs} epochs; registering as {register!r}",
            file=sys.stderr,
            flush=True,
        )
    return run_training(
        cfg,
        data=data,
        parent_run_id=parent,
        progress=progress,
        extra_tags={
            "mnr.role": "retrain-best",
            STUDY_TAG: study_name,
            "mnr.best_trial": str(best.number),
        },
    )


# ------------------------------------------------------------------------------------ summary
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_summary(study: optuna.Study) -> str:
    """A table of every trial, best first: number, state, value, duration and params.

    Completed trials are sorted by value (in the study's direction), then pruned trials by
    their last reported value, then the rest; a pruned trial's last value is in brackets.
    """
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return "no trials yet"
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    sign = -1.0 if maximize else 1.0
    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def last(trial: FrozenTrial) -> float | None:
        if trial.value is not None:
            return trial.value
        if trial.intermediate_values:
            return trial.intermediate_values[max(trial.intermediate_values)]
        return None

    def key(trial: FrozenTrial) -> tuple[int, float, int]:
        value = last(trial)
        return (
            rank.get(trial.state, 2),
            sign * value if value is not None else math.inf,
            trial.number,
        )

    names = sorted({name for trial in trials for name in trial.params})
    header = ["trial", "state", "value", "seconds", *names, "note"]
    rows = []
    for trial in sorted(trials, key=key):
        value = last(trial)
        if value is None:
            shown = "-"
        elif trial.state == TrialState.COMPLETE:
            shown = f"{value:.4f}"
        else:
            shown = f"({value:.4f})"
        seconds = f"{trial.duration.total_seconds():.1f}" if trial.duration else "-"
        note = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
        rows.append(
            [
                str(trial.number),
                trial.state.name,
                shown,
                seconds,
                *(_fmt(trial.params[n]) if n in trial.params else "-" for n in names),
                note[:60],
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
