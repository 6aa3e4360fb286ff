"""Scaling out on real servers: shared tracking, tuning workers on one study, data-parallel training.

Each test starts real processes (`mnr train`, `mnr tune`, `torchrun`) against a real MLflow
tracking server backed by a real PostgreSQL (tests/servers.py, started once per session), with
the commands of docs/scaling.md. Skipped only when PostgreSQL is not installed.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from conftest import TINY, cli_overrides
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import MlflowServer, Postgres, mlflow_server, postgres  # noqa: F401 - fixtures

pytestmark = [pytest.mark.servers, pytest.mark.slow]

# the server test registers a model
SMALL = cli_overrides(*TINY, "tracking.log_model=true", "train.threads=1")
PROCESS_SECONDS = 300  # one subprocess, at most, on a loaded 2-core machine


def _env(server: MlflowServer, **extra: str) -> dict[str, str]:
    """The test's environment (isolated MNR_HOME and checkpoints) pointed at the server."""
    return {**os.environ, "MLFLOW_TRACKING_URI": server.url, "OMP_NUM_THREADS": "1", **extra}


def _mnr(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnr", *args]


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the process and its children (each is started in its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str], Path, dict[str, str]], subprocess.Popen]]:
    """Start a command with its output in a log file; whatever still runs at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(log, "w") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            _kill(process)


def _finish(process: subprocess.Popen, log: Path, *, expect: int = 0) -> None:
    """Wait for `process`; fail with the tail of its log if it times out or exits otherwise."""
    try:
        process.wait(timeout=PROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        _kill(process)
        pytest.fail(
            f"{' '.join(map(str, process.args))} ran over {PROCESS_SECONDS} s:\n{log.read_text()[-4000:]}"
        )
    assert process.returncode == expect, f"exit {process.returncode}:\n{log.read_text()[-4000:]}"


def _experiment_runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name!r} on the server"
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


# ------------------------------------------------------------------------------ shared tracking
def test_train_tracks_everything_on_the_server(
    mlflow_server: MlflowServer,
    synth_root: Path,
    isolated: Path,
    spawn: Callable,
) -> None:
    """`mnr train` with MLFLOW_TRACKING_URI=http://...: run, params, metrics, artifacts, model and
    registry entry land on the server; nothing is tracked in the working directory."""
    log = isolated / "train.log"
    command = _mnr(
        "train",
        "--data",
        str(synth_root),
        "--epochs",
        "2",
        *SMALL,
        "--experiment",
        "scaling-train",
        "--run-name",
        "shared",
        "--register",
        "scaling-piano",
    )
    _finish(spawn(command, log, _env(mlflow_server)), log)

    client = MlflowClient(mlflow_server.url)
    (run,) = _experiment_runs(client, "scaling-train")
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    # proxied by the server
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["data.input_size"] == "[32, 32]"
    assert len(client.get_metric_history(run_id, "val/acc")) == 2
    assert {"best/val_accuracy", "test/accuracy", "train/epochs_run"} <= set(run.data.metrics)

    artifacts = {f.path for f in client.list_artifacts(run_id)}
    assert {
        "config.yaml",
        "confusion_matrix.png",
        "per_class_accuracy.csv",
        "checkpoints",
    } <= artifacts
    assert [f.path for f in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.pt"]
    stored = {p.name for p in mlflow_server.artifacts.rglob("*") if p.is_file()}
    assert {"best.pt", "confusion_matrix.png", "config.yaml"} <= stored  # in the server's store

    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert {m.name for m in logged if m.source_run_id == run_id} >= {
        "baseline_cnn-torch",
        "baseline_cnn",
    }
    (version,) = client.search_model_versions("name = 'scaling-piano'")
    assert version.run_id == run_id

    leftovers = [
        name for name in ("mlflow.db", "mlruns", "mlartifacts") if (isolated / name).exists()
    ]
    assert not leftovers, f"tracked locally too: {leftovers}"


# ------------------------------------------------------------------------ tuning across processes
# each worker's train.seed, logged on its trials: it tells whose trial is whose
WORKER_SEEDS = (
    1,
    2,
    3,
)
TRIALS_PER_WORKER = 2
HEARTBEAT = "2"  # seconds; a trial silent for 4 s is failed and retried (production: 60 and 120)


def _trial_run_seed(client: MlflowClient, trial: optuna.trial.FrozenTrial) -> str | None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    return client.get_run(run_id).data.params.get("train.seed") if run_id else None


def test_tuning_workers_share_one_study_and_recover_a_killed_worker(
    mlflow_server: MlflowServer,
    postgres: Postgres,
    synth_root: Path,
    isolated: Path,
    spawn: Callable,
) -> None:
    """Three `mnr tune` workers on one PostgreSQL study; one is SIGKILLed mid-trial and started
    again to add its share. The study ends with exactly 3 x 2 COMPLETE trials, none run twice;
    the killed trial is FAILED by the heartbeat and retried as a new trial with its params; every
    trial is a child run of the study's one parent run."""
    storage = postgres.url("optuna")
    study_name = "scaling-study"
    env = _env(mlflow_server, MNR_HEARTBEAT_SECONDS=HEARTBEAT)

    def worker(seed: int, trials: int, name: str) -> tuple[subprocess.Popen, Path]:
        command = _mnr(
            "tune",
            "--storage",
            storage,
            "--study-name",
            study_name,
            "--trials",
            str(trials),
            "--data",
            str(synth_root),
            "--epochs",
            "12",  # long enough that the victim is still in its trial when it is killed
            *SMALL,
            "--seed",
            str(seed),
            "--pruner",
            "none",
            "--experiment",
            "scaling-tune",
            "--jobs",
            "1",  # each command is one worker, as on its own machine
        )
        log = isolated / f"{name}.log"
        return spawn(command, log, env), log

    workers = [worker(seed, TRIALS_PER_WORKER, f"worker{seed}") for seed in WORKER_SEEDS]
    victim, victim_log = workers[-1]
    client = MlflowClient(mlflow_server.url)

    # Wait until the victim is inside a trial (its MLflow run exists and training started), then kill it.
    deadline = time.monotonic() + PROCESS_SECONDS
    killed: optuna.trial.FrozenTrial | None = None
    study = None
    while killed is None:
        assert time.monotonic() < deadline, (
            f"the victim never started a trial:\n{victim_log.read_text()[-3000:]}"
        )
        assert victim.poll() is None, f"the victim exited early:\n{victim_log.read_text()[-3000:]}"
        time.sleep(0.5)
        if study is None:  # the workers, started together, create the tables and the study; not us
            try:
                rdb = optuna.storages.RDBStorage(
                    storage, skip_table_creation=True, skip_compatibility_check=True
                )
                study = optuna.load_study(study_name=study_name, storage=rdb)
            except (
                KeyError,
                optuna.exceptions.StorageInternalError,
                sqlalchemy.exc.SQLAlchemyError,
            ):
                continue  # not there yet
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _trial_run_seed(client, trial) == str(WORKER_SEEDS[-1]):
                killed = trial
                break
    _kill(victim)
    # killed mid-trial
    assert study.get_trials(deepcopy=False)[killed.number].state == TrialState.RUNNING

    # The victim's machine comes back: the same command adds the trials it did not finish.
    finished_by_victim = sum(
        _trial_run_seed(client, t) == str(WORKER_SEEDS[-1])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    )
    restarted = worker(WORKER_SEEDS[-1], TRIALS_PER_WORKER - finished_by_victim, "restarted")
    for process, log in [*workers[:-1], restarted]:
        _finish(process, log)

    trials = study.get_trials(deepcopy=False)
    states = {state: [t for t in trials if t.state == state] for state in TrialState}
    # A trial whose loss diverges (a high sampled lr over 12 epochs) ends PRUNED even with
    # `--pruner none`: it finished, it is not a failure, and it counts toward `--trials`.
    complete = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    assert len(complete) == len(WORKER_SEEDS) * TRIALS_PER_WORKER, [
        (t.number, t.state.name) for t in trials
    ]
    assert [t.number for t in states[TrialState.FAIL]] == [killed.number]
    assert not states[TrialState.RUNNING] and not states[TrialState.WAITING]

    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params), "a trial ran twice"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry in complete and retry.number > killed.number
    assert retry.params == killed.params and retry.system_attrs["retry_history"] == [killed.number]

    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = _experiment_runs(client, "scaling-tune")
    studies = [r for r in runs if r.data.tags.get("mnr.role") == "study"]
    assert [r.info.run_id for r in studies] == [parent]
    children = {r.info.run_id: r for r in runs if r.info.run_id != parent}
    assert all(r.data.tags.get("mlflow.parentRunId") == parent for r in children.values())
    assert len(children) == len(complete) + 1  # one run per trial, the killed one included
    for trial in complete:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mnr.trial"] == str(trial.number)
        assert run.info.status == ("FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
    (dead,) = [r for r in children.values() if r.data.tags.get("mnr.trial") == str(killed.number)]
    assert dead.info.status == "FAILED" and "heartbeat" in dead.data.tags["mnr.fail_reason"]


# ------------------------------------------------------------------------- data-parallel training
# baseline_cnn learns something in 3 epochs of 18 images with these; its default SGD does not.
DDP_ARGS = [
    "--epochs",
    "3",
    *SMALL,
    "--batch-size",
    "8",
    "-s",
    "optim.name=adam",
    "--lr",
    "0.003",
    "-s",
    "tracking.log_model=false",
    "--experiment",
    "scaling-ddp",
]
LOSS_TOLERANCE = 1e-3  # per-epoch val_loss; measured: equal to 1e-6
ACC_TOLERANCE = 1 / 6 + 1e-9  # final val accuracy: one of the 6 validation images; measured: equal


def test_torchrun_two_processes_match_one_and_log_one_run(
    mlflow_server: MlflowServer,
    synth_root: Path,
    isolated: Path,
    spawn: Callable,
) -> None:
    """`torchrun --nproc_per_node=2 -m mnr train` (gloo) gives one MLflow run whose metrics match
    a single process with the same config: train.batch_size is the global batch and each step's
    images are the same, so only floating-point summation order differs (baseline_cnn has no
    BatchNorm or dropout, whose per-process statistics would add more)."""
    args = ["--data", str(synth_root), *DDP_ARGS]
    env = _env(mlflow_server)
    single_log, ddp_log = isolated / "single.log", isolated / "ddp.log"
    single = spawn(_mnr("train", *args, "--run-name", "single"), single_log, env)
    # `torchrun` is `python -m torch.distributed.run`; the module form needs no PATH.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = spawn([*torchrun, "-m", "mnr", "train", *args, "--run-name", "ddp"], ddp_log, env)
    _finish(single, single_log)
    _finish(ddp, ddp_log)

    client = MlflowClient(mlflow_server.url)
    runs = {r.info.run_name: r for r in _experiment_runs(client, "scaling-ddp")}
    assert sorted(runs) == ["ddp", "single"], "rank 1 must not create a run"
    ddp_run = runs["ddp"]
    assert ddp_run.info.status == "FINISHED"
    assert ddp_run.data.params["train.batch_size"] == "8"

    history = {
        name: {
            key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
            for key in ("val/loss", "val/acc")
        }
        for name, run in runs.items()
    }
    assert len(history["ddp"]["val/loss"]) == 3  # one value per epoch: only rank 0 logged
    for one, two in zip(history["single"]["val/loss"], history["ddp"]["val/loss"], strict=True):
        assert math.isclose(one, two, abs_tol=LOSS_TOLERANCE), history
    single_acc, ddp_acc = (
        runs["single"].data.metrics["best/val_accuracy"],
        ddp_run.data.metrics["best/val_accuracy"],
    )
    assert abs(single_acc - ddp_acc) <= ACC_TOLERANCE, history

    # Checkpoints: written once, by rank 0, into the run's folder; the best one uploaded.
    checkpoints = isolated / "checkpoints"
    assert sorted(p.name for p in (checkpoints / ddp_run.info.run_id).iterdir()) == [
        "best.pt",
        "last.pt",
    ]
    assert not list(checkpoints.glob("local-*"))
    assert [f.path for f in client.list_artifacts(ddp_run.info.run_id, "checkpoints")] == [
        "checkpoints/best.pt"
    ]
