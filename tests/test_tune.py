"""Optuna tuning on tiny synthetic data: studies, MLflow nesting, resume, pruning, workers."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from conftest import SMALL_SPACE, TINY, TUNE, children, tiny_config, tune_config, tune_process

from mnr.cli import main
from mnr.errors import MnrError
from mnr.tuning import (
    PruningCallback,
    default_search_space,
    describe_storage,
    format_summary,
    make_pruner,
    make_sampler,
    make_storage,
    parse_search_space,
)

TUNE_TINY = [*TINY, TUNE]


def runs(filter_string: str) -> list:
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune")
    return list(client.search_runs([experiment.experiment_id], filter_string, max_results=1000))


def test_trials_are_child_runs_of_one_study_run(synth_root: Path) -> None:
    result = tune_config(
        tiny_config(synth_root, TUNE, model="baseline_cnn", search=SMALL_SPACE),
        trials=3,
        study_name="s1",
        pruner="none",
    )
    parents = runs("tags.`mnr.study` = 's1' and tags.`mnr.role` = 'study'")
    assert [r.info.run_id for r in parents] == [result.parent_run_id]
    child_runs = {int(r.data.tags["mnr.trial"]): r for r in children(result.parent_run_id)}
    assert sorted(child_runs) == [0, 1, 2]
    client = mlflow.MlflowClient()
    for trial in result.study.trials:
        run = child_runs[trial.number]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.params["optim.lr"] == str(trial.params["optim.lr"])
        assert run.data.params["train.batch_size"] == str(trial.params["train.batch_size"])
        assert (
            run.data.params["train.epochs"] == "2"
            and run.data.params["model.name"] == "baseline_cnn"
        )
        assert run.info.status == "FINISHED" and run.data.tags["mnr.trial_state"] == "COMPLETE"
        curve = client.get_metric_history(run.info.run_id, "val/acc")
        assert [m.step for m in curve] == [1, 2]
        assert run.data.metrics["best/val_acc"] == pytest.approx(max(m.value for m in curve))
        assert trial.value == pytest.approx(run.data.metrics["best/val_acc"])
        assert not client.list_artifacts(run.info.run_id, "checkpoints")  # no weights unless asked
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/best_value"] == pytest.approx(result.best_trial.value)
    assert parent.data.params["best.optim.lr"] == str(result.best_trial.params["optim.lr"])
    assert parent.data.tags["mnr.storage"] == str(Path("s1.journal").resolve())
    plots = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/intermediate_values.png"} <= plots
    assert "trials.txt" in {a.path for a in client.list_artifacts(result.parent_run_id)}


def test_running_again_adds_trials_and_reruns_none(synth_root: Path) -> None:
    config = tiny_config(synth_root, TUNE, model="baseline_cnn", epochs=3, search=SMALL_SPACE)
    first = tune_config(config, trials=3, epochs=2, study_name="resume")
    before = {t.number: (t.state, t.params, t.datetime_complete) for t in first.study.trials}
    second = tune_config(config, trials=3, epochs=2, study_name="resume")
    trials = second.study.trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert {
        t.number: (t.state, t.params, t.datetime_complete) for t in trials if t.number < 3
    } == before
    assert second.parent_run_id == first.parent_run_id
    assert len(runs("tags.`mnr.role` = 'study'")) == 1
    assert sorted(int(r.data.tags["mnr.trial"]) for r in children(first.parent_run_id)) == list(
        range(6)
    )
    assert mlflow.MlflowClient().get_run(first.parent_run_id).info.status == "FINISHED"
    # seeded per trial number: the resumed trials do not replay the first ones' draws
    assert len({t.params["optim.lr"] for t in trials}) == 6

    # no new trial, but the best config retrained for the config's full 3 epochs and registered
    third = tune_config(config, trials=0, study_name="resume", register="tune-best")
    assert len(third.study.trials) == 6 and third.best_trial.number == second.best_trial.number
    retrained = mlflow.MlflowClient().get_run(third.registered_run_id)
    assert retrained.data.tags["mlflow.parentRunId"] == first.parent_run_id
    assert retrained.data.tags["mnr.role"] == "retrain-best"
    assert retrained.data.params["train.epochs"] == "3"
    assert retrained.data.params["optim.lr"] == str(third.best_trial.params["optim.lr"])
    versions = mlflow.MlflowClient().search_model_versions("name = 'tune-best'")
    assert [v.run_id for v in versions] == [third.registered_run_id]


def test_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(
    synth_root: Path, tmp_path: Path
) -> None:
    experiment = tmp_path / "absurd.yaml"
    experiment.write_text(
        "model: {name: baseline_cnn}\n"
        "search:\n"
        "  optim.lr: {type: float, low: 1e20, high: 1e21, log: true}\n"  # YAML reads 1e20 as a string
    )
    config = tiny_config(synth_root, TUNE, config=experiment)
    result = tune_config(config, trials=2, study_name="absurd")
    assert len(result.study.trials) == 2 and result.best_trial is None
    child_runs = {int(r.data.tags["mnr.trial"]): r for r in children(result.parent_run_id)}
    for trial in result.study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert "diverged" in trial.user_attrs["prune_reason"]
        run = child_runs[trial.number]
        assert run.info.status == "KILLED"
        assert (
            run.data.tags["mnr.trial_state"] == "PRUNED"
            and "diverged" in run.data.tags["mnr.prune_reason"]
        )
    assert "diverged" in format_summary(result.study)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(synth_root: Path) -> None:
    # nesterov without momentum passes the config check but fails in the engine, after the run exists
    space = {"optim.nesterov": {"type": "categorical", "choices": [True]}}
    config = tiny_config(
        synth_root, TUNE, "optim.name=sgd", "optim.momentum=0", model="baseline_cnn", search=space
    )
    result = tune_config(config, trials=2, study_name="fails")
    assert [t.state for t in result.study.trials] == [optuna.trial.TrialState.FAIL] * 2
    for trial in result.study.trials:
        assert "momentum" in trial.user_attrs["fail_reason"]
    child_runs = children(result.parent_run_id)
    assert len(child_runs) == 2
    for run in child_runs:
        assert run.info.status == "FAILED" and run.data.tags["mnr.trial_state"] == "FAIL"
        assert "momentum" in run.data.tags["mnr.fail_reason"]


def _tune_process(synth_root: Path, study: str, *options: str) -> subprocess.Popen:
    """`mnr tune` of 2-epoch trials on the tiny set, with TUNE_TINY's overrides, in a child process."""
    return tune_process(synth_root, study, "--epochs", "2", *options)


@pytest.mark.slow
def test_two_processes_share_one_study_and_one_parent_run(synth_root: Path) -> None:
    workers = [_tune_process(synth_root, "shared", "--trials", "2") for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=make_storage(None, "shared"))
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    parents = runs("tags.`mnr.role` = 'study'")
    assert len(parents) == 1
    assert study.user_attrs["mlflow_parent_run_id"] == parents[0].info.run_id
    assert sorted(int(r.data.tags["mnr.trial"]) for r in children(parents[0].info.run_id)) == [
        0,
        1,
        2,
        3,
    ]


EPOCHS = 12  # per trial in the SIGTERM test (the others' trials have 2)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_keeps_finished_trials_and_marks_runs_killed(synth_root: Path, jobs: str) -> None:
    """In one process, or in two workers (the parent passes the SIGTERM on to them)."""
    study_name = f"stop{jobs}"
    worker = _tune_process(
        synth_root, study_name, "--trials", "50", "--pruner", "none", "--jobs", jobs,
        "--epochs", str(EPOCHS),  # trials long enough to be caught mid-way
    )  # fmt: skip
    storage = make_storage(None, study_name)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            continue
        trials = study.trials
        # the newest trial is in the first half of its epochs: the signal lands mid-trial. One
        # seen in its last epoch or its run's end could finish before a worker (which stops at
        # the next epoch's end) looks, and the study would have nothing interrupted.
        running = (
            trials
            and trials[-1].state == optuna.trial.TrialState.RUNNING
            and "mlflow_run_id" in trials[-1].user_attrs
            and len(trials[-1].intermediate_values) < EPOCHS // 2
        )
        if running and any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            break  # one trial finished, the next one is training
    worker.send_signal(signal.SIGTERM)
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 130, output
    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    interrupted = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert finished and 1 <= len(interrupted) <= int(jobs)  # the trials running at the time
    assert {t.user_attrs["fail_reason"] for t in interrupted} == {"interrupted"}
    parent = mlflow.MlflowClient().get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED"
    statuses = {int(r.data.tags["mnr.trial"]): r.info.status for r in children(parent.info.run_id)}
    assert all(statuses[t.number] == "KILLED" for t in interrupted)
    assert all(statuses[t.number] == "FINISHED" for t in finished)


@pytest.mark.parametrize(
    ("search", "named"),
    [
        (
            {"optim.lr": {"type": "float", "low": 1e-4, "hi": 0.1}},
            "search.optim.lr: unknown key 'hi'",
        ),
        ({"optim.lrr": {"type": "float", "low": 0.1, "high": 1}}, "search.optim.lrr"),
        ({"train.batch_size": {"type": "float", "low": 1, "high": 2.5}}, "search.train.batch_size"),
        ({"optim.lr": {"type": "uniform", "low": 0.1, "high": 1}}, "search.optim.lr.type"),
        (
            {"optim": {"type": "float", "low": 0.1, "high": 1}},
            "search.optim: 'optim' is a config section",
        ),
        ({"optim.lr": {"type": "categorical", "choices": []}}, "search.optim.lr.choices"),
        ({"optim.lr": 0.1}, "search.optim.lr: expected a mapping"),
        (
            {"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}},
            "search.optim.lr: log needs low > 0",
        ),
        ({"optim.name": {"type": "categorical", "choices": ["sgd", "lion"]}}, "search.optim.name"),
        ({"data.input_size": {"type": "categorical", "choices": [32]}}, "search.data.input_size"),
    ],
)
def test_invalid_search_space_names_the_key(search: dict, named: str) -> None:
    with pytest.raises(MnrError) as error:
        parse_search_space(search)
    assert named in str(error.value)


def test_search_space_from_yaml_parses_and_cli_reports_errors(tmp_path: Path) -> None:
    good = parse_search_space(
        {
            "optim.lr": {"type": "float", "low": "1e-4", "high": 0.1, "log": True},
            "train.batch_size": {"type": "int", "low": 8, "high": 64, "step": 8},
            "model.kwargs.hidden": {"type": "categorical", "choices": [84, 120]},
        }
    )
    assert [(p.key, p.type, p.low) for p in good] == [
        ("optim.lr", "float", 1e-4),
        ("train.batch_size", "int", 8),
        ("model.kwargs.hidden", "categorical", None),
    ]
    assert (
        [p.key for p in parse_search_space(None)]
        == [p.key for p in default_search_space()]
        == ["optim.lr", "train.batch_size"]
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  optim.lr: {type: float, low: 0.001, high: 0.1, logg: true}\n")
    result = CliRunner().invoke(main, ["tune", "--config", str(bad), "--trials", "1"])
    assert result.exit_code == 2
    assert "search.optim.lr: unknown key 'logg'" in result.output


def test_help_says_trials_are_added() -> None:
    result = CliRunner().invoke(main, ["tune", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Trials to ADD to the study" in text and "resumes the study" in text


def test_pruning_callback_reports_each_epoch_and_prunes_at_once() -> None:
    reported = []
    trial = SimpleNamespace(
        report=lambda value, step: reported.append((step, value)),
        should_prune=lambda: len(reported) >= 2,
        set_user_attr=lambda key, value: None,
    )
    callback = PruningCallback(trial, "val/acc")
    config = SimpleNamespace(train=SimpleNamespace(epochs=3))
    ctx = SimpleNamespace(epoch=1, callbacks=[], config=config)
    callback.on_epoch_end(ctx, {"val/acc": 0.5, "val/loss": 1.0})
    ctx.epoch = 2
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        callback.on_epoch_end(ctx, {"val/acc": 0.25, "val/loss": 1.0})
    ctx.epoch = 3
    callback.on_epoch_end(ctx, {"val/acc": 0.2, "val/loss": 1.0})  # the last epoch completes
    assert reported == [(1, 0.5), (2, 0.25), (3, 0.2)]
    with pytest.raises(MnrError, match="val/acc"):
        PruningCallback(trial, "val_f1").on_epoch_end(ctx, {"val/acc": 0.5})


def test_seeded_sampler_draws_per_trial_number() -> None:
    def draws(seed: int, n: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler("tpe", seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return [t.params["x"] for t in study.trials]

    first, again = draws(3, 4), draws(3, 4)
    assert first == again and len(set(first)) == 4
    assert draws(4, 1) != first[:1]


def test_storage_pruner_and_sampler_choices(tmp_path: Path) -> None:
    assert isinstance(make_storage(None, "a b"), optuna.storages.JournalStorage)
    assert describe_storage(None, "a b") == str(Path("a_b.journal").resolve())
    rdb = make_storage(f"sqlite:///{tmp_path / 'tune.db'}", "x")
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert (
        describe_storage("postgresql://me:secret@db:5432/optuna", "x")
        == "postgresql://me:***@db:5432/optuna"
    )
    assert isinstance(make_pruner("hyperband", 8), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none", 8), optuna.pruners.NopPruner)
    with pytest.raises(MnrError, match="--pruner"):
        make_pruner("percentile", 8)
    with pytest.raises(MnrError, match="--sampler"):
        make_sampler("cmaes", 0)
