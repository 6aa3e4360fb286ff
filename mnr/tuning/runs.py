"""The Optuna-to-MLflow bridge: a study is one parent run, each trial a child run.

Each side records the other: the study holds its parent run's id (user attr `PARENT_ATTR`), each
trial its run's id (`RUN_ATTR`) and its worker (`WORKER_ATTR`, "host:pid"); the runs carry the
study's name and storage and the trial's number as tags. That is what lets a resumed study, or a
second process on the same study, find the parent run again, and lets whichever worker notices a
dead trial (no heartbeat, or a dead pid on this host) mark its run FAILED as well as the trial.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnr import tracking
from mnr.config import ExperimentConfig
from mnr.console import note
from mnr.errors import MnrError
from mnr.tuning.space import SearchParam

__all__ = [
    "FAIL_TAG",
    "FOLDS_ATTR",
    "FOLDS_STUDY_ATTR",
    "PARENT_ATTR",
    "PARENT_WAIT_SECONDS",
    "PRUNE_TAG",
    "RUN_ATTR",
    "STATE_TAG",
    "STORAGE_TAG",
    "STUDY_TAG",
    "TRIAL_TAG",
    "WORKER_ATTR",
    "RetryStaleTrial",
    "child_run",
    "close_child",
    "fail_trials_of_dead_workers",
    "find_parent",
    "parent_tags",
    "worker",
]

PARENT_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
RUN_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
WORKER_ATTR = "mnr.worker"  # trial user attr: "host:pid" of the process running it
FOLDS_ATTR = "fold_values"  # trial user attr: a cross-validated trial's best value per fold
FOLDS_STUDY_ATTR = "mnr.folds"  # study user attr: the folds each trial is judged on (1: a split)
STUDY_TAG, STORAGE_TAG, TRIAL_TAG = "mnr.study", "mnr.storage", "mnr.trial"
STATE_TAG, PRUNE_TAG, FAIL_TAG = "mnr.trial_state", "mnr.prune_reason", "mnr.fail_reason"
PARENT_WAIT_SECONDS = 120.0  # how long a second process waits for the first to name the parent run


# --------------------------------------------------------------------------------- parent run
def parent_tags(
    config: ExperimentConfig, *, study_name: str, storage_text: str, space: list[SearchParam]
) -> dict[str, str]:
    """The tags that name a study's parent run (and find it again when the study resumes)."""
    return {
        STUDY_TAG: study_name,
        STORAGE_TAG: storage_text,
        "mnr.role": "study",
        "model": config.model.name,
        "mnr.search_space": "; ".join(p.describe() for p in space),
    }


def find_parent(
    study: optuna.Study,
    created: bool,
    config: ExperimentConfig,
    *,
    study_name: str,
    storage_text: str,
) -> str | None:
    """The id of the study's MLflow parent run if it has one; None when it needs a new one.

    A study this process just created has none yet. A process that loaded the study waits for
    the creator to store the id (it may be creating the run right now). A study whose parent is
    missing (say, a new tracking store) gets the run tagged with its name and storage, if any.
    """
    if created:
        return None
    experiment = config.tracking.experiment
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
        return parent
    found = tracking.find_runs(
        experiment=experiment,
        tags={STUDY_TAG: study_name, STORAGE_TAG: storage_text, "mnr.role": "study"},
    )
    return found[0].info.run_id if found else None


def _no_finished_trials(study: optuna.Study) -> bool:
    """Worth waiting for the creator to name the parent run: the study has no finished trial yet."""
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    return not finished


# --------------------------------------------------------------------------------- child runs
def child_run(run_id: str | None, *, experiment: str, parent: str, number: int) -> str | None:
    """The trial's MLflow run: `run_id` when known, else by its tags (it failed before fitting)."""
    if run_id is not None:
        return run_id
    found = tracking.find_runs(
        experiment=experiment,
        tags={TRIAL_TAG: str(number), tracking.PARENT_TAG: parent},
        max_results=1,
    )
    return found[0].info.run_id if found else None


def close_child(run_id: str | None, *, state: str, status: str, reason: str | None = None) -> None:
    """Record how a trial ended on its run (if it has one): `mnr.trial_state`, reason, status."""
    if run_id is None:
        return
    tags = {STATE_TAG: state}
    if reason:
        tags[PRUNE_TAG if state == "PRUNED" else FAIL_TAG] = reason
    tracking.set_tags(run_id, tags)
    tracking.set_run_status(run_id, status)  # run_training has ended and flushed the run already


# ------------------------------------------------------------------------------- dead workers
class RetryStaleTrial:
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
                close_child(
                    run_id,
                    state="FAIL",
                    status="FAILED",
                    reason="its worker stopped sending heartbeats",
                )
            except Exception as exc:  # noqa: BLE001 - the retry matters more than the run's status
                note(
                    f"could not mark MLflow run {run_id} of stale trial {trial.number} FAILED: {exc}"
                )
        self._retry(study, trial)


def worker() -> str:
    """This process as a trial records it (`WORKER_ATTR`): "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_trials_of_dead_workers(study: optuna.Study, *, experiment: str, parent: str) -> list[int]:
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
        run_id = child_run(
            frozen.user_attrs.get(RUN_ATTR),
            experiment=experiment,
            parent=parent,
            number=frozen.number,
        )
        close_child(run_id, state="FAIL", status="FAILED", reason=reason)
        failed.append(frozen.number)
    return failed


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
