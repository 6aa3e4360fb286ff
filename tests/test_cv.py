"""`mnr cv`: folds as child runs, out-of-fold predictions, resuming, and the ensemble as one model."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import TINY, children, cli_overrides

from mnr import tracking
from mnr.config import resolve_config
from mnr.crossval import cross_validate
from mnr.predict import Predictor, load_predictor, predict_folder
from mnr.predict.predictor import tta_shifts

REPO = Path(__file__).resolve().parent.parent
CV = [*TINY, "train.batch_size=4", "tracking.experiment=cv"]


def test_three_folds_are_three_child_runs_and_every_image_is_predicted_once(
    synth_root: Path,
) -> None:
    config = resolve_config(
        model="bn_cnn", options={"data.path": str(synth_root), "train.epochs": 2}, overrides=CV
    )
    result = cross_validate(config, folds=3, register="cv-tiny", tta=3, progress=False)
    folds = children(result.parent_run_id)
    assert len(folds) == 3 and {c.info.status for c in folds} == {"FINISHED"}
    assert sorted(int(c.data.tags["mnr.fold"]) for c in folds) == [0, 1, 2]
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    assert parent.data.tags["mnr.role"] == "cv"
    for name in ("accuracy", "semitone_mae", "within_one_key", "octave_error_rate"):
        assert f"cv/{name}_mean" in parent.data.metrics and f"cv/{name}_std" in parent.data.metrics
    assert "test/accuracy" in parent.data.metrics  # the ensemble's, on the test split

    with pytest.MonkeyPatch.context():
        text = tracking.client().download_artifacts(
            result.parent_run_id, "oof_predictions.csv", str(synth_root.parent)
        )
    rows = list(csv.DictReader(io.StringIO(Path(text).read_text())))
    truth = dict(
        line.split() for line in (synth_root / "train" / "truth.txt").read_text().splitlines()
    )
    assert sorted(row["filename"] for row in rows) == sorted(truth)  # each training image once
    assert all(row["label"] == truth[row["filename"]] for row in rows)
    assert {"predicted_note", "probability", "top3_label", "top3_probability"} <= set(rows[0])
    artifacts = {a.path for a in tracking.client().list_artifacts(result.parent_run_id)}
    assert {"oof_confusion_matrix.png", "oof_per_class_accuracy.csv", "folds.csv"} <= artifacts

    version = mlflow.MlflowClient().get_model_version("cv-tiny", result.registered_version.version)
    assert version.tags["mnr.fold_runs"] == ",".join(f.run_id for f in result.folds)
    ensemble = load_predictor("models:/cv-tiny/1", device="cpu")
    assert len(ensemble.models) == 3 and ensemble.tta == 3
    predicted = predict_folder(ensemble, synth_root / "test", progress=False)
    assert len(predicted.filenames) == 9 and not predicted.problems


def test_running_again_trains_nothing_twice(synth_root: Path) -> None:
    config = resolve_config(
        model="bn_cnn", options={"data.path": str(synth_root), "train.epochs": 1}, overrides=CV
    )
    first = cross_validate(config, folds=3, progress=False)
    again = cross_validate(config, folds=3, progress=False)
    assert again.parent_run_id == first.parent_run_id
    assert [f.run_id for f in again.folds] == [f.run_id for f in first.folds] and all(
        f.reused for f in again.folds
    )
    assert np.allclose(again.oof_probabilities, first.oof_probabilities)


@pytest.mark.slow
def test_a_run_killed_in_fold_two_resumes_and_keeps_fold_one(
    synth_root: Path, isolated: Path
) -> None:
    command = [
        sys.executable, "-m", "mnr", "cv", "--model", "bn_cnn", "--data", str(synth_root), "--folds", "3",
        "--epochs", "6", *cli_overrides(*CV, "train.threads=1", "train.batch_size=2"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command, cwd=isolated, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    for line in process.stdout:  # fold 2 has started and finished an epoch: kill it mid-fold
        seen.append(line)
        if "mnr cv: fold 2/3" in "".join(seen) and "epoch 2/6" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name("cv").experiment_id], "tags.`mnr.role` = 'cv-fold'"
    )
    before = {r.data.tags["mnr.fold"]: r for r in runs}
    assert (
        before["0"].info.status == "FINISHED" and before["1"].info.status == "RUNNING"
    )  # killed mid-fold

    done = subprocess.run(
        command, cwd=isolated, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "fold 2/3 (resumed)" in done.stdout and "fold 1/3" not in done.stdout  # fold 1 kept
    runs = client.search_runs(
        [client.get_experiment_by_name("cv").experiment_id], "tags.`mnr.role` = 'cv-fold'"
    )
    after = {r.data.tags["mnr.fold"]: r for r in runs}
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert after["0"].info.run_id == before["0"].info.run_id
    assert after["0"].info.end_time == before["0"].info.end_time  # not retrained
    assert after["1"].info.run_id == before["1"].info.run_id  # resumed in its own run
    assert [m.step for m in client.get_metric_history(after["1"].info.run_id, "val/acc")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


class _Recorder(torch.nn.Module):
    """A model that answers uniformly and keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return torch.zeros(len(x), 88) + self.weight


def test_tta_shifts_along_time_only() -> None:
    from mnr.models.registry import InputConfig

    model = _Recorder()
    model.input_config = InputConfig(input_size=(32, 16), in_chans=1, mean=(0.5,), std=(0.5,))
    image = np.zeros((1, 1, 32, 16), dtype=np.uint8)
    image[0, 0, 5, :] = 200  # a held partial on row 5
    image[0, 0, :, 3] = 100  # an onset in column 3
    Predictor(model, tta=5).probabilities(image)
    assert len(model.seen) == 5 and sorted(tta_shifts(5, 16)) == [-2, -1, 0, 1, 2]
    original = torch.from_numpy(image).float()
    columns = set()
    for seen in model.seen:
        rows = (seen[0, 0] > seen[0, 0].min() + 1.5).float().sum(dim=1)
        assert torch.equal(rows > 8, (original[0, 0].sum(dim=1) > 3000))  # row 5, and only row 5
        columns.add(int(seen[0, 0, 0].argmax()))  # where the onset went: moved in time
    assert len(columns) == 5
