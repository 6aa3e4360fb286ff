"""`mnr tune --jobs N` (worker processes) and `--folds K` (cross-validated trials)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from conftest import SMALL_SPACE, TUNE, children, tiny_config, tune_config, tune_process

from mnr.errors import MnrError
from mnr.training import load_data
from mnr.tuning import StudySpec, make_storage, parse_search_space
from mnr.tuning.objective import Objective
from mnr.tuning.workers import SharedData


def _tune_process(synth_root: Path, study: str, *options: str) -> subprocess.Popen:
    return tune_process(synth_root, study, "--model", "baseline_cnn", *options)


def _study(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(None, name))


def test_shared_data_is_one_copy_that_workers_map(synth_root: Path) -> None:
    data = load_data(tiny_config(synth_root, model="baseline_cnn"))
    for folds in (False, True):
        shared, block = SharedData.create(data, folds=folds)
        try:
            attached, other = shared.attach()
            if folds:
                assert np.array_equal(attached.folder.images, data.folder.images)
                assert attached.train_images.size == 0  # trials split the folder themselves
            else:
                assert np.array_equal(attached.train_images, data.train_images)
                assert np.array_equal(attached.val_labels, data.val_labels)
                assert attached.folder.images.size == 0
                # a view into the block, not a copy: a write shows through the other mapping
                attached.train_images[0, 0, 0, 0] ^= 1
                again, third = shared.attach()
                assert again.train_images[0, 0, 0, 0] == attached.train_images[0, 0, 0, 0]
                del again
                third.close()
            assert attached.test_images is None  # trials never see the held-out split
            del attached
            other.close()
        finally:
            block.close()
            block.unlink()


@pytest.mark.slow
def test_jobs_2_runs_trials_in_two_processes_under_one_parent(synth_root: Path) -> None:
    worker = _tune_process(synth_root, "jobs", "--trials", "5", "--jobs", "2", "--epochs", "2")
    output = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, output
    study = _study("jobs")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4]  # exactly --trials
    pids = {t.user_attrs["mnr.worker"].rsplit(":", 1)[1] for t in study.trials}
    assert len(pids) == 2 and str(worker.pid) not in pids  # two workers, not the parent
    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = children(parent)
    assert sorted(int(r.data.tags["mnr.trial"]) for r in runs) == [0, 1, 2, 3, 4]  # once each
    for trial in study.trials:
        assert trial.user_attrs["mlflow_run_id"] in {r.info.run_id for r in runs}
    assert mlflow.MlflowClient().get_run(parent).info.status == "FINISHED"
    assert output.count("trial ") >= 5  # the parent shows each trial as the workers finish it


@pytest.mark.slow
def test_a_killed_workers_trial_fails_and_the_study_resumes(synth_root: Path) -> None:
    worker = _tune_process(
        synth_root, "killed", "--trials", "4", "--jobs", "2", "--epochs", "30", "--pruner", "none"
    )
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.5)
        try:
            trials = _study("killed").trials
        except KeyError:
            continue
        running = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
        ]
        if running:
            victim = running[0]
    assert victim is not None, "no trial started"
    os.kill(int(victim.user_attrs["mnr.worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    output = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, output  # the other worker finished the study
    assert "ended abnormally" in output
    study = _study("killed")
    killed = study.trials[victim.number]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert "died" in killed.user_attrs["fail_reason"]
    run = mlflow.MlflowClient().get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    # the same command again adds trials to the same study and parent run
    again = _tune_process(synth_root, "killed", "--trials", "1", "--jobs", "1", "--epochs", "1")
    assert again.communicate(timeout=600)[0] and again.returncode == 0
    assert len(_study("killed").trials) == 5


def test_folds_2_gives_per_fold_scores_on_each_trials_run(synth_root: Path) -> None:
    result = tune_config(
        tiny_config(synth_root, TUNE, model="baseline_cnn", search=SMALL_SPACE),
        trials=2,
        folds=2,
        study_name="cv2",
        pruner="none",
    )
    client = mlflow.MlflowClient()
    for trial in result.study.trials:
        folds = trial.user_attrs["fold_values"]
        assert len(folds) == 2 and trial.value == pytest.approx(np.mean(folds))
        run_id = trial.user_attrs["mlflow_run_id"]
        history = client.get_metric_history(run_id, "cv/val_acc")
        assert [(m.step, m.value) for m in history] == [(1, folds[0]), (2, folds[1])]
        metrics = client.get_run(run_id).data.metrics
        assert metrics["cv/val_acc_mean"] == pytest.approx(np.mean(folds))
        assert metrics["cv/val_acc_std"] == pytest.approx(np.std(folds, ddof=1))
        # the folds' epochs run on in one curve: 2 folds x 2 epochs
        assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4]
    assert len(children(result.parent_run_id)) == 2  # one run per trial, not per fold
    parent = client.get_run(result.parent_run_id).data.metrics
    best = result.best_trial.user_attrs["fold_values"]
    assert parent["cv/val_acc_mean"] == pytest.approx(np.mean(best))
    assert parent["cv/val_acc_std"] == pytest.approx(np.std(best, ddof=1))
    with pytest.raises(MnrError, match="judges its trials by --folds 2"):
        tune_config(
            tiny_config(synth_root, TUNE, model="baseline_cnn", search=SMALL_SPACE),
            trials=1,
            study_name="cv2",
        )


class _PruneFrom(optuna.pruners.BasePruner):
    """Prune at the first step at or after `step` (a stand-in for a pruner that finds the
    trial worse than the others there)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return (trial.last_step or 0) >= self.step


@pytest.mark.parametrize(("prune_from", "folds_done"), [(1, 0), (3, 1)])
def test_folds_prune_a_config_in_the_fold_where_it_is_bad(
    synth_root: Path, prune_from: int, folds_done: int
) -> None:
    """A pruning step is one epoch of one fold: with 2 epochs, fold 1 reports steps 1-2 and
    fold 2 steps 3-4, so a config pruned at step 1 never reaches its second fold, and one
    pruned at step 3 has its first fold's score and stops in the second."""
    config = tiny_config(synth_root, TUNE, model="baseline_cnn", search=SMALL_SPACE)
    data = load_data(config)
    study = optuna.create_study(direction="maximize", pruner=_PruneFrom(prune_from))
    with mlflow.start_run(run_name="parent") as parent:
        pass
    objective = Objective(
        config=config,
        space=parse_search_space(config.search),
        data=data,
        parent=parent.info.run_id,
        study=StudySpec(name="prune", epochs=2, folds=2),
    )
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert max(trial.intermediate_values) == prune_from
    assert f"fold {folds_done + 1} epoch" in trial.user_attrs["prune_reason"]
    run = mlflow.MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["mnr.trial_state"] == "PRUNED"
    fold_scores = mlflow.MlflowClient().get_metric_history(run.info.run_id, "cv/val_acc")
    assert len(fold_scores) == folds_done


def test_bad_jobs_and_folds_are_refused(synth_root: Path) -> None:
    config = tiny_config(synth_root, TUNE, model="baseline_cnn")
    with pytest.raises(MnrError, match="--jobs must be a positive"):
        tune_config(config, trials=1, jobs=0)
    with pytest.raises(MnrError, match="--folds must be at least 2"):
        tune_config(config, trials=1, folds=-1)
    with pytest.raises(MnrError, match="only 8 training images; use fewer folds"):
        tune_config(config, trials=1, folds=9)
    with pytest.raises(MnrError, match="--save-weights"):
        tune_config(config, trials=1, folds=2, save_weights=True)
