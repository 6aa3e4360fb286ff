"""Nothing is lost under faults: kills, interrupts, full disks, unwritable stores, divergence.

The fault tests start real `python -m mnr ...` processes (marked slow) and hurt them from the
outside the way a user or a machine would: SIGKILL, Ctrl-C (SIGINT), SIGTERM, a file-size
limit imposed mid-run (a full disk), a NaN loss. Faults that must be caught before any work
(an unreachable server, an unwritable folder) run the CLI in-process: they never reach training.
Every fault and what mnr does about it is listed in docs/faults.md.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, cli_overrides, torch_model_uri, train

from mnr.checkpoint import load_checkpoint, save_checkpoint
from mnr.cli import main
from mnr.config import resolve_config
from mnr.errors import MnrError
from mnr.metrics import HEADLINE

REPO = Path(__file__).resolve().parent.parent
# bn_cnn on the 24-image synthetic set, batch 2, one thread: an epoch of a fraction of a second
# to about a second, long enough to be killed in the middle of.
FAST = [*TINY, "train.threads=1"]
# state a resume must restore besides the weights: AdamW's moments (bn_cnn's optimizer), the
# schedule, and the generator that draws the batch order and the augmentation
STATEFUL = [
    "scheduler.name=cosine",
    "train.augment.enabled=true",
    "train.augment.time_shift=0.1",
    "train.augment.freq_masks=1",
]


pytestmark = pytest.mark.usefixtures("empty_store")  # every test starts on a ready store


def client() -> mlflow.MlflowClient:
    """A client for this test's store (mlflow's global URI may still name an earlier test's)."""
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def train_args(data: Path, *overrides: str, epochs: int, model: str = "bn_cnn") -> list[str]:
    args = [
        "train",
        "--model",
        model,
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--batch-size",
        "2",
        "--seed",
        "0",
    ]
    for item in [*FAST, *overrides]:
        args += ["-s", item]
    return args


class Mnr:
    """One `python -m mnr ...` process with its output in files (a full pipe would block it)."""

    def __init__(self, args: list[str], *, cwd: Path, name: str = "mnr", **popen) -> None:
        self.out, self.err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mnr", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                **popen,
            )

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mnr did not end in {timeout} s:\n{self.output}") from None

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.stderr


def run_mnr(
    args: list[str], *, cwd: Path, name: str = "mnr", timeout: float = 240
) -> tuple[int, Mnr]:
    process = Mnr(args, cwd=cwd, name=name)
    return process.wait(timeout), process


def wait_for_epoch(
    checkpoints: Path, epoch: int, process: Mnr, *, timeout: float = 180
) -> tuple[Path, dict]:
    """Poll until some run's last.pt holds `epoch` or more completed epochs; return it and its state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in checkpoints.glob("*/last.pt"):
            try:
                state = load_checkpoint(path)
            except MnrError:
                continue
            if state["epoch"] >= epoch:
                return path, state
        if process.proc.poll() is not None:
            raise AssertionError(
                f"mnr ended (exit {process.proc.returncode}) before epoch {epoch}:\n{process.output}"
            )
        time.sleep(0.02)
    process.proc.kill()
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout} s:\n{process.output}")


def metric_by_step(run_id: str, key: str) -> dict[int, float]:
    """A metric's history, one value per step (a step logged twice keeps the later value)."""
    history = sorted(client().get_metric_history(run_id, key), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


def only_run(experiment: str = "mnr"):
    runs = client().search_runs([client().get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# ------------------------------------------------------------------------------------- kills
@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    synth_root: Path, isolated: Path
) -> None:
    epochs = 5
    args = train_args(synth_root, *STATEFUL, epochs=epochs)
    victim = Mnr(args, cwd=isolated, name="killed")
    last, state = wait_for_epoch(isolated / "checkpoints", 1, victim)
    time.sleep(min(state["history"][-1]["train/epoch_seconds"] / 2, 1.0))  # into the next epoch
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    run_id = last.parent.name
    killed_at = load_checkpoint(last)["epoch"]
    assert 1 <= killed_at < epochs, "the kill came too late to test anything"
    assert (
        client().get_run(run_id).info.status == "RUNNING"
    )  # nobody could mark it: it is unfinished

    code, resumed = run_mnr(["train", "--resume", run_id], cwd=isolated, name="resumed")
    assert code == 0, resumed.output
    assert f"run {run_id} FINISHED" in resumed.output
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mnr.resumed"] == "true"
    assert len(client().search_runs([run.info.experiment_id])) == 1  # logged into the same run

    # The same config, never interrupted, in this process (one thread, like the subprocesses).
    threads = torch.get_num_threads()
    try:
        config = resolve_config(
            model="bn_cnn",
            options={
                "data.path": str(synth_root),
                "train.epochs": epochs,
                "train.batch_size": 2,
                "train.seed": 0,
            },
            overrides=[*FAST, *STATEFUL, "tracking.experiment=straight"],
        )
        straight = train(config)
    finally:
        torch.set_num_threads(threads)
    for key in ("val/acc", "val/loss", "train/loss", "train/lr"):
        assert metric_by_step(run_id, key) == {
            i + 1: h[key] for i, h in enumerate(straight.history)
        }, key
    # per-octave accuracies go to the per_octave_accuracy.csv table, not to run metrics
    expected = {
        k: v
        for k, v in straight.final_metrics.items()
        if k.split("/")[-1].removeprefix("val_") in HEADLINE
    }
    final = {k: v for k, v in run.data.metrics.items() if k in straight.final_metrics}
    assert final == expected and "test/accuracy" in final and "best/val_accuracy" in final


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_checkpoints_and_marks_the_run_killed(
    synth_root: Path, isolated: Path, signum: int
) -> None:
    process = Mnr(train_args(synth_root, epochs=30), cwd=isolated)
    last, _ = wait_for_epoch(isolated / "checkpoints", 1, process)
    process.proc.send_signal(signum)
    assert process.wait() == 130, process.output
    run_id = last.parent.name
    no_traceback(process.stderr)
    assert f"run {run_id} marked KILLED; resume with: mnr train --resume {run_id}" in process.stderr
    assert client().get_run(run_id).info.status == "KILLED"
    state = load_checkpoint(last)
    assert 1 <= state["epoch"] < 30 and state["run_id"] == run_id
    assert "checkpoints/last.pt" in {a.path for a in client().list_artifacts(run_id, "checkpoints")}
    assert len(client().get_metric_history(run_id, "val/acc")) >= state["epoch"]


# --------------------------------------------------------------------------------- full disk
@pytest.mark.slow
def test_full_disk_mid_run_is_a_clear_error_and_keeps_what_was_logged(
    synth_root: Path, isolated: Path
) -> None:
    """The disk fills up after epoch 1: simulated with RLIMIT_FSIZE, lowered on the running process.

    Tests run as root, for whom permissions are no obstacle; a file-size limit is. Python ignores
    SIGXFSZ, so an oversized write fails with EFBIG like a write to a full disk (ENOSPC) would.
    """
    # at 64 x 64 the checkpoint (weights and AdamW's two moments, ~6 MB) outgrows the MLflow
    # database (~1 MB) by enough to put the limit between them
    process = Mnr(train_args(synth_root, "data.input_size=[64,64]", epochs=30), cwd=isolated)
    last, _ = wait_for_epoch(isolated / "checkpoints", 1, process)
    limit = last.stat().st_size * 2 // 3
    assert (isolated / "mlflow.db").stat().st_size < limit - 512 * 1024
    resource.prlimit(process.proc.pid, resource.RLIMIT_FSIZE, (limit, limit))
    assert process.wait() == 2, process.output
    no_traceback(process.stderr)
    message = process.stderr
    assert re.search(
        rf"mnr: error: cannot write checkpoint {re.escape(str(last.parent))}/(best|last)\.pt",
        message,
    ), message
    assert "File too large" in message and "MNR_CHECKPOINT_DIR" in message
    run = only_run()
    assert run.info.status == "FAILED"
    kept = load_checkpoint(last)  # the previous checkpoint is intact, not half overwritten
    assert kept["epoch"] >= 1 and not list(last.parent.glob("*.tmp"))
    assert run.data.params["data.input_size"] == "[64, 64]"
    logged = set(
        metric_by_step(run.info.run_id, "val/acc")
    )  # the failing epoch's metrics are logged too
    assert set(range(1, kept["epoch"] + 1)) <= logged <= set(range(1, kept["epoch"] + 2))


def test_checkpoint_write_failure_is_an_mnr_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    """The same fault in a forked child: torch.save's own error for a failed write is a vague RuntimeError."""
    path = save_checkpoint({"model": {"w": torch.zeros(4)}}, tmp_path / "ckpt" / "last.pt")
    big = {"model": {"w": torch.zeros(200_000)}}
    pid = os.fork()
    if pid == 0:  # a child, so the limit does not reach the test process
        code = 3
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
            save_checkpoint(big, path)
        except MnrError as exc:
            code = 0 if str(path) in str(exc) and "MNR_CHECKPOINT_DIR" in str(exc) else 4
        except BaseException:  # noqa: BLE001
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert load_checkpoint(path)["model"]["w"].shape == (4,)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


# ----------------------------------------------------------------------- unwritable folders
def test_checkpoint_folder_under_a_file_fails_before_training(
    synth_root: Path, isolated: Path, monkeypatch
) -> None:
    blocker = isolated / "file.txt"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("MNR_CHECKPOINT_DIR", str(blocker / "checkpoints"))
    result = CliRunner().invoke(main, train_args(synth_root, epochs=1))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"checkpoint folder {blocker / 'checkpoints'}" in result.output
    assert "set MNR_CHECKPOINT_DIR to a writable folder" in result.output
    run = only_run()
    assert run.info.status == "FAILED" and "val/acc" not in run.data.metrics
    assert run.data.params["train.batch_size"] == "2"  # what was logged before stays


def test_unwritable_artifact_store_fails_before_training(synth_root: Path, isolated: Path) -> None:
    blocker = isolated / "file.txt"
    blocker.write_text("a file, not a folder")
    client().create_experiment("blocked", artifact_location=str(blocker / "artifacts"))
    result = CliRunner().invoke(
        main, [*train_args(synth_root, epochs=1), "--experiment", "blocked"]
    )
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "cannot store artifact config.yaml" in result.output and str(blocker) in result.output
    run = only_run("blocked")
    assert run.info.status == "FAILED" and "val/acc" not in run.data.metrics
    assert not (isolated / "checkpoints").exists()  # no training started
    assert run.data.params["model.name"] == "bn_cnn"


# --------------------------------------------------------------------------------- divergence
@pytest.mark.slow
def test_divergence_later_in_a_run_names_epoch_and_step_and_keeps_the_last_good_checkpoint(
    synth_root: Path, isolated: Path
) -> None:
    # a normal lr for epoch 1, then x1e12 per epoch: epoch 1 is fine, a later epoch blows up
    overrides = ["scheduler.name=step", "scheduler.step_size=1", "scheduler.gamma=1e12"]
    code, process = run_mnr(train_args(synth_root, *overrides, epochs=6), cwd=isolated)
    assert code == 2, process.output
    no_traceback(process.stderr)
    found = re.search(
        r"mnr: error: training diverged: the loss became (nan|inf) at epoch (\d+), step (\d+)",
        process.stderr,
    )
    assert found, process.stderr
    diverged_epoch = int(found.group(2))
    assert diverged_epoch >= 2 and "lower optim.lr" in process.stderr
    run = only_run()
    assert run.info.status == "FAILED"
    last = isolated / "checkpoints" / run.info.run_id / "last.pt"
    state = load_checkpoint(last)  # still loadable, and from the last good epoch
    assert state["epoch"] == diverged_epoch - 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert sorted(metric_by_step(run.info.run_id, "val/loss")) == list(range(1, diverged_epoch))
    assert "checkpoints/last.pt" in {
        a.path for a in client().list_artifacts(run.info.run_id, "checkpoints")
    }


# ----------------------------------------------------------------------- unreachable server
def test_unreachable_server_fails_tune_before_any_trial(
    synth_root: Path, isolated: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    args = [
        "tune",
        "--data",
        str(synth_root),
        "--trials",
        "1",
        "--epochs",
        "1",
        *cli_overrides(*TINY),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "http://127.0.0.1:9 is unreachable" in result.output
    assert "decoding" not in result.output and not list(isolated.glob("*.journal"))  # checked first


def test_unreachable_server_fails_predict_before_reading_images(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not read")
    result = CliRunner().invoke(
        main, ["predict", "models:/piano@champion", str(folder), "-o", str(tmp_path / "out.csv")]
    )
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "http://127.0.0.1:9 is unreachable" in result.output
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------------------------- safety
class _Payload:
    """Pickles as a call to os.system: what a malicious "checkpoint" would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(
    tmp_path: Path, synth_root: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "epoch": 1, "x": _Payload(marker)}, evil)
    with pytest.raises(MnrError, match="cannot be loaded"):
        load_checkpoint(evil)
    for args in (
        ["train", "--resume", str(evil)],
        ["predict", str(evil), str(synth_root / "test")],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and "cannot be loaded" in result.output, result.output
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # proof the payload is live: unsafe loading runs it
    assert marker.exists()


# --------------------------------------------------------------------------------- tuning
TUNE_CONFIG = """\
model: {name: bn_cnn}
data: {input_size: [32, 32]}
train: {batch_size: 2, eval_batch_size: 64, threads: 1}
tracking: {log_model: false, experiment: tune}
search:
  optim.lr: {type: float, low: 0.001, high: 0.01, log: true}
"""


@pytest.mark.slow
def test_sigkilled_tune_worker_leaves_a_failed_trial_and_rerunning_finishes_the_study(
    synth_root: Path, isolated: Path
) -> None:
    import optuna
    from optuna.trial import TrialState

    from mnr.tuning import make_storage

    (isolated / "tune.yaml").write_text(TUNE_CONFIG)
    args = [
        "tune",
        "--config",
        "tune.yaml",
        "--data",
        str(synth_root),
        "--study-name",
        "killed",
        "--trials",
        "2",
        "--epochs",
        "4",
        "--pruner",
        "none",
        "--sampler",
        "random",
        "--jobs",
        "1",  # the trials run in the killed process itself
    ]
    worker = Mnr(args, cwd=isolated, name="worker")
    storage = make_storage(str(isolated / "killed.journal"), "killed")
    deadline = time.monotonic() + 240
    while True:  # wait for trial 0 to complete and trial 1 to be training
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except KeyError:
            trials = []
        if (
            len(trials) == 2
            and trials[0].state == TrialState.COMPLETE
            and "mlflow_run_id" in trials[1].user_attrs
        ):
            break
        time.sleep(0.05)
    worker.proc.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
    study = optuna.load_study(study_name="killed", storage=storage)
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]  # nobody could say
    killed_run = study.trials[1].user_attrs["mlflow_run_id"]
    assert client().get_run(killed_run).info.status == "RUNNING"

    code, rerun = run_mnr(args, cwd=isolated, name="rerun")
    assert code == 0, rerun.output
    no_traceback(rerun.stderr)
    study = optuna.load_study(study_name="killed", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert "died" in study.trials[1].user_attrs["fail_reason"]
    assert "2 fail" not in rerun.output and "3 complete, 1 fail" in rerun.output
    run = client().get_run(killed_run)
    assert run.info.status == "FAILED" and run.data.tags["mnr.trial_state"] == "FAIL"
    parent = client().get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert (
        parent.data.metrics["study/trials_complete"] == 3
        and parent.data.metrics["study/trials_fail"] == 1
    )


@pytest.mark.slow
def test_logged_models_load_with_pickle_deserialization_disallowed(
    synth_root: Path, monkeypatch
) -> None:
    """Neither logged model needs pickle: both load with MLflow's pickle loading switched off."""
    import mlflow.pytorch

    from mnr.predict import load_predictor

    config = resolve_config(
        model="bn_cnn",
        options={"data.path": str(synth_root), "train.epochs": 1, "train.batch_size": 4},
        overrides=[*TINY, "tracking.log_model=true"],
    )
    threads = torch.get_num_threads()
    try:
        result = train(config)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    raw = mlflow.pytorch.load_model(torch_model_uri(result.run_id))
    assert tuple(raw(torch.zeros(2, 1, 32, 32)).shape) == (2, 88)  # one value channel
    predictor = load_predictor(f"runs:/{result.run_id}", device="cpu")
    assert predictor.input_size == (32, 32)
    flavor = mlflow.models.get_model_info(f"runs:/{result.run_id}/bn_cnn").flavors[
        "python_function"
    ]
    assert (
        flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    )  # models from code, no cloudpickle
    assert set(flavor["artifacts"]) == {"checkpoint_0"}


# ------------------------------------------------------------------------- start-up races
# one round is about 90 s on two cores (five processes importing torch and MLflow at once);
# MNR_TEST_RACE_ROUNDS=10 repeats it for a stress run
RACE_ROUNDS = int(os.environ.get("MNR_TEST_RACE_ROUNDS", "1"))


def _race_commands(data: Path) -> dict[str, list[str]]:
    """Five commands that all start by creating the same store and experiment: two `train`, two
    one-trial `tune` (each its own study) and a two-fold `cv`, one epoch each."""
    common = ["--model", "bn_cnn", "--data", str(data), "--epochs", "1", "--experiment", "race"]
    overrides = cli_overrides(*FAST, "train.batch_size=4")
    return {
        "train-a": ["train", *common, *overrides],
        "train-b": ["train", *common, *overrides],
        "tune-a": ["tune", *common, "--trials", "1", "--study-name", "a", *overrides],
        "tune-b": ["tune", *common, "--trials", "1", "--study-name", "b", *overrides],
        "cv": ["cv", *common, "--folds", "2", *overrides],
    }


@pytest.mark.slow
def test_five_commands_started_together_on_a_fresh_store_all_succeed(
    synth_root: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 item 8: processes that create the sqlite store (its tables, the migrations) and
    the experiment at the same moment must all succeed, with no library traceback from the one
    that lost the race."""
    for round_ in range(RACE_ROUNDS):
        folder = isolated / f"round{round_}"
        folder.mkdir()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        processes = {
            name: Mnr(args, cwd=folder, name=name)
            for name, args in _race_commands(synth_root).items()
        }
        for name, process in processes.items():
            code = process.wait(timeout=300)
            assert code == 0, f"round {round_}, {name} exited {code}:\n{process.output}"
            assert "Traceback" not in process.stderr, f"round {round_}, {name}:\n{process.stderr}"
