"""`--resume` honours the command line: what may change is applied and recorded, the rest refused."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import TINY, InterruptAfter, cli_overrides, tiny_config, train

from mnr.cli import main
from mnr.config import given_settings, resolve_config, to_dict
from mnr.errors import MnrError
from mnr.optim import make_optimizer, make_scheduler, restore_scheduler
from mnr.resume import load_resume, resume_config


def _train(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["train", *args])
    return result.exit_code, result.output


def _first_run(synth_root: Path) -> str:
    code, output = _train(
        "--data", str(synth_root), "--epochs", "2", "--batch-size", "8",
        *cli_overrides(*TINY, "scheduler.name=cosine"),
    )  # fmt: skip
    assert code == 0, output
    return re.search(r"run (\w+) FINISHED", output).group(1)


def test_resume_trains_a_finished_run_longer_in_the_same_run(synth_root: Path) -> None:
    run_id = _first_run(synth_root)
    code, output = _train(
        "--resume", run_id, "--epochs", "4", "--register", "longer", "--batch-size", "8",
        "--run-name", "four-epochs", *cli_overrides("tracking.log_model=true"),
    )  # fmt: skip
    assert code == 0, output
    assert f"run {run_id} FINISHED" in output and "models:/longer/1" in output
    assert "train.epochs 2 -> 4" in output  # the change is said
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "four-epochs"
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4]
    assert run.data.params["train.epochs"] == "2"  # MLflow params are immutable ...
    assert run.data.tags["mnr.resume.train.epochs"] == "2 -> 4"  # ... so a tag says what changed
    assert run.data.tags["mnr.resume.tracking.register"] == "None -> longer"
    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    assert config["train"]["epochs"] == 4 and config["tracking"]["register"] == "longer"
    # the cosine schedule is rebuilt for 4 epochs: epoch 3 starts half way down it
    lr = {m.step: m.value for m in client.get_metric_history(run_id, "train/lr")}
    assert lr[3] == pytest.approx(lr[1] / 2)


def test_resume_refuses_options_that_make_another_experiment_by_name(synth_root: Path) -> None:
    run_id = _first_run(synth_root)
    code, output = _train(
        "--resume", run_id, "--model", "deep_cnn", "--batch-size", "16", "--seed", "0",
        "--epochs", "4",
    )  # fmt: skip
    assert code == 2
    assert "--model (model.name): the run has 'baseline_cnn', given 'deep_cnn'" in output
    assert "--batch-size (train.batch_size): the run has 8, given 16" in output
    assert "--seed" not in output  # given, but the run's own value: no change
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["train/epochs_run"] == 2


def test_only_given_settings_are_compared() -> None:
    saved = resolve_config(overrides=["train.epochs=2", "train.seed=3"])
    given = given_settings(
        options={"model.name": None, "train.seed": None, "train.epochs": 5},
        overrides=["train.early_stopping.patience=9"],
    )
    assert given == {"train.epochs": 5, "train.early_stopping.patience": 9}
    config, changes = resume_config(saved, given, epochs_done=2, run="r", option_names={})
    assert config.train.epochs == 5 and config.train.seed == 3
    assert changes == {"train.epochs": (2, 5), "train.early_stopping.patience": (5, 9)}
    with pytest.raises(MnrError, match=r"--epochs 1: run r has already trained 2 epochs"):
        resume_config(
            saved,
            {"train.epochs": 1},
            epochs_done=2,
            run="r",
            option_names={"train.epochs": "--epochs"},
        )
    with pytest.raises(MnrError, match=r"-s model.kwargs \(model.kwargs\)"):
        resume_config(saved, given_settings(overrides=["model.kwargs.width=3"]), epochs_done=2,
                      run="r", option_names={})  # fmt: skip


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "step"])
def test_a_resume_with_more_epochs_follows_the_longer_schedule(schedule: str) -> None:
    def config(epochs: int):
        return resolve_config(
            overrides=[
                f"scheduler.name={schedule}",
                f"train.epochs={epochs}",
                "scheduler.step_size=1",
            ]
        )

    def run(optimizer, scheduler, epochs: int, steps: int = 3) -> list[float]:
        lrs = []
        for _ in range(epochs):
            for _ in range(steps):
                optimizer.step()
                if schedule == "onecycle":
                    scheduler.step()
            if schedule != "onecycle":
                scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        return lrs

    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, config(4))
    straight = run(optimizer, make_scheduler(optimizer, config(4), steps_per_epoch=3), 4)
    optimizer = make_optimizer(model, config(2))
    scheduler = make_scheduler(optimizer, config(2), steps_per_epoch=3)
    run(optimizer, scheduler, 2)
    checkpoint = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": to_dict(config(2)),
        "epoch": 2,
        "global_step": 6,
    }
    optimizer = make_optimizer(model, config(4))
    scheduler = make_scheduler(optimizer, config(4), steps_per_epoch=3)
    optimizer.load_state_dict(checkpoint["optimizer"])
    restore_scheduler(scheduler, checkpoint, config=config(4))
    assert run(optimizer, scheduler, 2) == pytest.approx(straight[2:])


def test_a_killed_run_resumes_with_more_epochs(synth_root: Path) -> None:
    config = tiny_config(synth_root)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptAfter(1)])
    client = mlflow.MlflowClient()
    (killed,) = client.search_runs(
        [client.get_experiment_by_name("mnr").experiment_id], "attributes.status = 'KILLED'"
    )
    run_id = killed.info.run_id
    resume = load_resume(run_id, given={"train.epochs": 4})
    result = train(resume.config, resume=resume)
    assert result.run_id == run_id and len(result.history) == 4
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4]
