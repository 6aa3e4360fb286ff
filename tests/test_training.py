"""The engine and a whole training run, tracked in MLflow, on tiny synthetic data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, InterruptAfter, cli_overrides, tiny_config, torch_model_uri, train

from mnr.cli import main
from mnr.config import DEFAULT_INPUT_SIZE, AugmentConfig, ExperimentConfig, resolve_config
from mnr.engine import DivergedError
from mnr.errors import MnrError
from mnr.models import create_model
from mnr.optim import make_optimizer, make_scheduler
from mnr.resume import load_resume
from mnr.transforms import augment_batch, to_model_input

REPO = Path(__file__).resolve().parent.parent


def test_to_model_input_normalises_once() -> None:
    batch = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    x = to_model_input(batch, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, 0, 0], torch.tensor([-1.0, 1.0]))


def test_augmentation_never_moves_energy_across_frequency() -> None:
    x = torch.zeros(16, 3, 32, 40)
    x[:, :, 10, :] = 1.0  # one bright frequency row
    config = AugmentConfig(
        enabled=True, time_shift=0.2, time_masks=2, freq_masks=2, gain=0.2, noise=0.0
    )
    out = augment_batch(x, config, generator=torch.Generator().manual_seed(0))
    row_energy = out.abs().sum(dim=(1, 3))
    assert torch.all(row_energy[:, [r for r in range(32) if r != 10]] == 0)
    same = augment_batch(x, config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle"])
def test_every_optimizer_and_schedule_builds(name: str, schedule: str) -> None:
    config = resolve_config(
        overrides=[f"optim.name={name}", f"scheduler.name={schedule}", "optim.momentum=0.9"]
    )
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=5)
    assert (scheduler is None) == (schedule == "none")


def test_train_tracks_everything_in_one_run(synth_root: Path) -> None:
    config = tiny_config(synth_root, "tracking.log_model=true", "tracking.experiment=e2e")
    result = train(config)
    assert result.status == "FINISHED"
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert (
        run.data.params["optim.lr"] == str(config.optim.lr)
        and run.data.params["model.name"] == "bn_cnn"
    )
    assert run.data.tags["model"] == "bn_cnn" and len(run.data.tags["data.digest"]) == 16
    client = mlflow.MlflowClient()
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/top5",
        "train/lr",
        "train/epoch_seconds",
        "train/images_per_second",
    ):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2], key
    assert "test/accuracy" in run.data.metrics and "test/semitone_mae" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {
        "config.yaml",
        "confusion_matrix.png",
        "top_losses.png",
        "per_class_accuracy.csv",
        "checkpoints",
    } <= artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == [
        "checkpoints/best.pt"
    ]
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["data.digest"]
    # the figure layout it read the images with: params, its JSON and a preview
    assert (
        run.data.params["layout.channels"] == "value"
        and run.data.params["layout.colormap"] == "magma"
    )
    assert run.data.params["layout.box"] == "[0, 0, 520, 394]"  # the built-in style is full-bleed
    layout_files = {a.path for a in client.list_artifacts(result.run_id, "layout")}
    assert layout_files == {"layout/layout.json", "layout/layout_preview.png"}
    loaded = mlflow.pytorch.load_model(torch_model_uri(result.run_id))
    logits = loaded(torch.zeros(3, 1, 32, 32))  # one value channel in
    assert tuple(logits.shape) == (3, 88)


def test_same_seed_same_metrics(synth_root: Path) -> None:
    first = train(
        tiny_config(synth_root, "train.augment.enabled=true", "train.augment.time_shift=0.1"),
    )
    second = train(
        tiny_config(synth_root, "train.augment.enabled=true", "train.augment.time_shift=0.1"),
    )
    drop = ("train/epoch_seconds", "train/images_per_second")
    assert [{k: v for k, v in h.items() if k not in drop} for h in first.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in second.history
    ]


def test_interrupted_run_is_killed_and_resumes_to_identical_metrics(synth_root: Path) -> None:
    extras = (
        "optim.momentum=0.9",
        "scheduler.name=cosine",
        "train.augment.enabled=true",
        "train.augment.freq_masks=1",
    )
    straight = train(tiny_config(synth_root, *extras, epochs=4))
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(synth_root, *extras, epochs=4),
            callbacks=[InterruptAfter(2)],
        )
    client = mlflow.MlflowClient()
    killed = client.search_runs(
        [client.get_experiment_by_name("mnr").experiment_id], "attributes.status = 'KILLED'"
    )
    assert len(killed) == 1
    run_id = killed[0].info.run_id
    resume = load_resume(run_id)
    resumed = train(resume.config, resume=resume)
    assert resumed.run_id == run_id and resumed.status == "FINISHED"
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(resumed.history) == 4
    drop = ("train/epoch_seconds", "train/images_per_second")
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert {k: v for k, v in a.items() if k not in drop} == {
            k: v for k, v in b.items() if k not in drop
        }
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [1, 2, 3, 4]


def test_divergence_names_epoch_and_step_and_keeps_last_good_checkpoint(synth_root: Path) -> None:
    config = tiny_config(synth_root, "optim.lr=1e30", epochs=3)
    with pytest.raises(DivergedError, match=r"epoch 1, step \d+"):
        train(config)
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("mnr").experiment_id])
    assert runs[0].info.status == "FAILED"


def test_early_stopping_stops(synth_root: Path) -> None:
    config = tiny_config(
        synth_root,
        "train.early_stopping.enabled=true",
        "train.early_stopping.patience=1",
        "train.early_stopping.monitor=val/loss",
        "train.early_stopping.min_delta=1000",
        epochs=6,
    )
    assert len(train(config).history) == 2


def test_the_target_stops_a_run(synth_root: Path) -> None:
    # any loss is below 1000: the first epoch reaches it
    config = tiny_config(
        synth_root,
        "train.monitor=val/loss",
        "train.monitor_mode=min",
        "train.target=1000",
        epochs=6,
    )
    result = train(config)
    assert len(result.history) == 1 and result.stop_reason == "val/loss reached 1000.0"


def test_a_run_checks_the_model_once_and_stats_each_image_once(
    synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation runs once per run: the model name is checked once (it was three times), and
    each image is stat'ed once, by the folder scan, whose sizes and times key the layout and
    decode caches (it was three times). A warm decode cache, as on a second run."""
    import os

    from mnr import training
    from mnr.training import load_data

    config = tiny_config(synth_root, epochs=1)
    load_data(config, progress=False)  # the decode cache, filled once
    calls: dict[str, int] = {"check_model": 0, "png stat": 0}
    check_model, real_stat = training.check_model, os.stat
    folder = str(synth_root / "train")

    def counted_check(config: ExperimentConfig) -> None:
        calls["check_model"] += 1
        return check_model(config)

    def counted_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).startswith(folder) and str(path).endswith(".png"):
            calls["png stat"] += 1
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(training, "check_model", counted_check)
    monkeypatch.setattr(os, "stat", counted_stat)
    assert train(config).status == "FINISHED"
    images = len(list((synth_root / "train").glob("*.png")))
    assert calls["check_model"] == 1
    assert images <= calls["png stat"] < 2 * images  # once each (the layout preview reads one more)


def test_unknown_model_fails_before_data_is_read(tmp_path: Path) -> None:
    config = resolve_config(
        overrides=["model.name=baseline_cn", f"data.path={tmp_path / 'does-not-exist'}"]
    )
    with pytest.raises(MnrError, match="baseline_cnn"):
        train(config)


@pytest.mark.parametrize("model", ["baseline_cnn", "bn_cnn", "deep_cnn", "resnet18"])
def test_cli_trains_every_variant(synth_root: Path, model: str) -> None:
    args = [
        "train",
        "--model",
        model,
        "--data",
        str(synth_root),
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]
    result = CliRunner().invoke(main, [*args, *cli_overrides(*TINY)])
    assert result.exit_code == 0, result.output
    assert "FINISHED" in result.output and "test/accuracy=" in result.output


def test_model_from_a_users_file(synth_root: Path, tmp_path: Path) -> None:
    module = tmp_path / "my_models.py"
    module.write_text(
        "import torch\nfrom mnr.models import register_model\n\n"
        "@register_model\ndef tiny_linear(num_classes=88, input_size=(32, 32), pretrained=False, **kw):\n"
        "    '''A linear probe.'''\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * input_size[0] * input_size[1], num_classes))\n"
    )
    args = [
        "train",
        "--model",
        "tiny_linear",
        "--model-module",
        str(module),
        "--data",
        str(synth_root),
        "--epochs",
        "1",
    ]
    result = CliRunner().invoke(main, [*args, *cli_overrides(*TINY)])
    assert result.exit_code == 0, result.output


def test_unreachable_tracking_server_fails_before_training(
    synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    result = CliRunner().invoke(
        main, ["train", "--data", str(synth_root), "--epochs", "1", *cli_overrides(*TINY)]
    )
    assert result.exit_code == 2
    assert "unreachable" in result.output and "decoding" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("env_manager", ["local", "uv"])
def test_mlflow_run_project_end_to_end(synth_root: Path, isolated: Path, env_manager: str) -> None:
    """The README's `mlflow run . -P model=baseline_cnn`, in the current environment (local) and
    in one uv builds from conda.yaml's pip list (no conda needed), on tiny data."""
    if env_manager == "uv" and shutil.which("uv") is None:
        pytest.skip("uv is not installed (pip install -e '.[dev]' installs it)")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(REPO),
        "--env-manager",
        env_manager,
        "--experiment-name",
        "project",
        "-P",
        "model=baseline_cnn",
        "-P",
        "epochs=2",
        "-P",
        f"data={synth_root}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=isolated)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("project").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert (
        run.data.params["model.name"] == "baseline_cnn" and run.data.params["train.epochs"] == "2"
    )
    # the experiment config's, since -P lr was left out
    assert run.data.params["optim.lr"] == "0.005"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "confusion_matrix.png", "config.yaml"} <= artifacts
    (torch_model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string="tags.`mnr.kind` = 'torch'",
        output_format="list",
    )
    module = mlflow.pytorch.load_model(f"models:/{torch_model.model_id}")
    assert tuple(module(torch.zeros(2, 1, *DEFAULT_INPUT_SIZE)).shape) == (
        2,
        88,
    )  # one value channel
    assert np.isfinite(run.data.metrics["test/accuracy"])


def test_model_variants_carry_their_input_config() -> None:
    model = create_model("bn_cnn", input_size=(32, 48))
    assert model.input_config.input_size == (32, 48) and model.input_config.num_classes == 88
