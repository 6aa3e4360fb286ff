"""The logged predictor, the model registry, `mnr predict` and `mnr evaluate`, on tiny data.

One model is trained (and registered) per module: logging it takes seconds, so every test below
reuses it through the `store` fixture, which points the test's MLflow store back at the
module's. Tests that change the registry use their own registered-model names.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import train

from mnr import tracking
from mnr.checkpoint import load_checkpoint
from mnr.cli import main
from mnr.config import resolve_config
from mnr.data.images import decode_png
from mnr.engine import predict_logits
from mnr.errors import MnrError
from mnr.models import InputConfig, create_model
from mnr.predict import Predictor, load_predictor
from mnr.predict.logged import find_predictor, predictor_files
from mnr.predict.predictor import predictor_from_files
from mnr.tracking import model_registry

NAME = "piano-test"


@dataclass(frozen=True)
class Trained:
    """The module's trained model: where it is tracked and how to reach it."""

    tracking_uri: str
    run_id: str
    checkpoint: Path
    test_dir: Path
    test_truth: Path


@pytest.fixture(scope="module")
def trained(synth_root: Path, isolated_module: Path) -> Trained:
    """Train bn_cnn for 6 tiny epochs with model logging on, registered as NAME@champion (3 were
    too few to tell three keys apart once four instruments play them)."""
    config = resolve_config(
        model="bn_cnn",
        options={"data.path": str(synth_root), "train.epochs": 6, "train.batch_size": 8},
        overrides=[
            "train.eval_batch_size=64",
            "tracking.log_model=true",  # default 128x16 input
            f"tracking.register={NAME}",
            "optim.lr=0.02",
        ],
    )
    result = train(config)
    model_registry.promote(NAME, 1, "champion")
    uri = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(None)  # forget the global URI MLflow keeps; each test sets its own
    assert result.status == "FINISHED"
    return Trained(
        tracking_uri=uri,
        run_id=result.run_id,
        checkpoint=isolated_module / "checkpoints" / result.run_id / "best.pt",
        test_dir=synth_root / "test",
        test_truth=synth_root / "test_truth.txt",
    )


@pytest.fixture
def store(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trained]:
    """The module's model, with this test's MLflow store pointed at the module's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    tracking.configure_tracking()
    yield trained
    mlflow.set_tracking_uri(None)  # MLflow's global URI would outlive the test otherwise


def reference_labels(checkpoint: Path, folder: Path) -> dict[str, int]:
    """Filename -> argmax of predict_logits on decode_png images, built by hand from the checkpoint."""
    state = load_checkpoint(checkpoint)
    config = InputConfig.from_dict(state["input_config"])  # size and figure layout (value channel)
    model = create_model(state["model_name"], input_size=config.input_size, layout=config.layout)
    model.load_state_dict(state["model"])
    names = sorted(p.name for p in folder.glob("*.png"))
    images = np.stack(
        [decode_png(folder / n, size=config.input_size, layout=config.layout) for n in names]
    )
    labels = predict_logits(model, images, batch_size=7).argmax(1).tolist()
    return dict(zip(names, labels, strict=True))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_cli_predict_writes_the_in_process_predictions(store: Trained, tmp_path: Path) -> None:
    output = tmp_path / "output.csv"
    result = CliRunner().invoke(
        main,
        [
            "predict",
            f"models:/{NAME}@champion",
            str(store.test_dir),
            "--output",
            str(output),
            "--batch-size",
            "4",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(output)
    expected = reference_labels(store.checkpoint, store.test_dir)
    assert rows[0] == ["filename", "label"]
    assert [r[0] for r in rows[1:]] == sorted(expected)
    assert {r[0]: int(r[1]) for r in rows[1:]} == expected
    assert len(set(expected.values())) > 1  # a trained model, not a constant one
    assert not Path(f"{output}.errors.txt").exists()


def test_submission_columns_are_configurable(store: Trained, tmp_path: Path) -> None:
    output = tmp_path / "sub.csv"
    args = [
        "predict",
        str(store.checkpoint),
        str(store.test_dir),
        "-o",
        str(output),
        "--id-column",
        "id",
        "--label-column",
        "key",
        "--strip-extension",
        "--top-k",
        "2",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = read_csv(output)
    assert rows[0] == [
        "id",
        "key",
        "top1_label",
        "top1_note",
        "top1_probability",
        "top2_label",
        "top2_note",
        "top2_probability",
    ]
    expected = {
        Path(k).stem: v for k, v in reference_labels(store.checkpoint, store.test_dir).items()
    }
    assert {r[0]: int(r[1]) for r in rows[1:]} == expected
    assert all(r[1] == r[2] and float(r[4]) >= float(r[7]) for r in rows[1:])


def test_a_corrupt_image_is_reported_and_the_rest_written(store: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "test"
    shutil.copytree(store.test_dir, folder)
    good = sorted(p.name for p in folder.glob("*.png"))
    (folder / "broken.png").write_bytes((folder / good[0]).read_bytes()[:200])  # truncated
    (folder / "empty.png").write_bytes(b"")
    output = tmp_path / "output.csv"
    result = CliRunner().invoke(
        main, ["predict", str(store.checkpoint), str(folder), "-o", str(output), "--workers", "2"]
    )
    assert result.exit_code == 1, result.output
    rows = read_csv(output)
    assert [r[0] for r in rows[1:]] == good
    report = Path(f"{output}.errors.txt").read_text()
    assert "broken.png" in report and "empty.png" in report and "0 bytes" in report
    assert "broken.png" in result.output and "2 of" in result.output
    assert "Traceback" not in result.output
    # the next clean run removes the stale report
    (folder / "broken.png").unlink()
    (folder / "empty.png").unlink()
    assert (
        CliRunner()
        .invoke(main, ["predict", str(store.checkpoint), str(folder), "-o", str(output)])
        .exit_code
        == 0
    )
    assert not Path(f"{output}.errors.txt").exists()


@pytest.mark.parametrize(
    ("model_uri", "env", "message"),
    [
        ("models:/nope@champion", None, "nope"),
        (f"models:/{NAME}@champion", "http://127.0.0.1:9", "unreachable"),
        ("does/not/exist.pt", None, "not found"),
    ],
)
def test_bad_model_or_store_is_a_clear_error(
    store: Trained,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_uri: str,
    env: str | None,
    message: str,
) -> None:
    if env:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    result = CliRunner().invoke(
        main, ["predict", model_uri, str(store.test_dir), "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists()


def test_empty_folder_is_a_clear_error(store: Trained, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        main, ["predict", f"models:/{NAME}@champion", str(tmp_path / "empty")]
    )
    assert result.exit_code == 2
    assert "no PNG files" in result.output and "Traceback" not in result.output


def test_pyfunc_takes_paths_bytes_base64_and_arrays_alike(store: Trained) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    paths = sorted(str(p) for p in store.test_dir.glob("*.png"))[:4]
    raw = [Path(p).read_bytes() for p in paths]
    native = [decode_png(p, size=None) for p in paths]  # 3 x H x W at the file's own size
    inputs = {
        "paths": paths,
        "bytes": raw,
        "base64": [base64.b64encode(b).decode() for b in raw],
        "hwc arrays": [a.transpose(1, 2, 0) for a in native],
        "chw arrays": native,
    }
    answers = {
        kind: model.predict(pd.DataFrame({"image": values})) for kind, values in inputs.items()
    }
    expected = reference_labels(store.checkpoint, store.test_dir)
    for kind, answer in answers.items():
        assert answer["label"].tolist() == [expected[Path(p).name] for p in paths], kind
        np.testing.assert_allclose(
            answer["probability"], answers["paths"]["probability"], rtol=1e-6, err_msg=kind
        )
    first = answers["paths"]
    assert list(first.columns[:4]) == ["label", "midi", "note", "probability"]
    assert (first["midi"] == first["label"] + 21).all() and (
        first["top1_label"] == first["label"]
    ).all()
    assert "top3_label" in first.columns and "top4_label" not in first.columns
    assert "top5_note" in model.predict({"image": paths[:1]}, params={"top_k": 5}).columns
    # the unwrapped predictor also takes a plain list and a stacked array
    predictor = model.unwrap_python_model().predictor
    assert predictor.predict(paths)["label"].tolist() == first["label"].tolist()
    stacked = np.stack([a.transpose(1, 2, 0) for a in native])
    assert predictor.predict(stacked)["label"].tolist() == first["label"].tolist()


def test_pyfunc_rejects_what_is_not_an_image(store: Trained) -> None:
    model = mlflow.pyfunc.load_model(f"runs:/{store.run_id}/bn_cnn")
    with pytest.raises(mlflow.exceptions.MlflowException, match="not a PNG"):
        model.predict(pd.DataFrame({"image": [b"GIF89a not a png"]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="no such file"):
        model.predict(pd.DataFrame({"image": ["missing.png"]}))


def test_predictor_from_a_checkpoint_equals_the_registered_one(store: Trained) -> None:
    registered = load_predictor(f"models:/{NAME}/1", device="cpu")
    local = Predictor.from_checkpoints([store.checkpoint])
    paths = sorted(store.test_dir.glob("*.png"))
    for a, b in zip(
        registered.models[0].state_dict().values(),
        local.models[0].state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert registered.predict(paths)["label"].tolist() == local.predict(paths)["label"].tolist()


def test_a_logged_models_input_config_is_stored_once_and_builds_decode_and_model(
    store: Trained,
) -> None:
    """The MLmodel holds the input config, the checkpoints do not: prediction decodes with that
    copy and builds the model from it, so the two can never read an image differently."""
    files = predictor_files(f"models:/{NAME}/1")
    assert all("input_config" not in load_checkpoint(path) for path in files.checkpoints)
    predictor = predictor_from_files(files)
    assert predictor.input_config.to_dict() == files.input_config
    assert all(model.input_config == predictor.input_config for model in predictor.models)
    # the model is built from the MLmodel's copy: another input size builds a model that the
    # logged weights do not fit
    wider = {**files.input_config, "input_size": [128, 24]}
    with pytest.raises(MnrError, match="weights do not fit model 'bn_cnn'"):
        predictor_from_files(dataclasses.replace(files, input_config=wider))


def test_a_checkpoint_whose_own_input_config_differs_from_the_given_one_is_refused(
    store: Trained,
) -> None:
    """A training checkpoint carries its own input config; handed another, it refuses."""
    state = load_checkpoint(store.checkpoint)
    changed = {**state["input_config"], "input_size": [64, 64]}
    with pytest.raises(MnrError, match="disagree on the input config"):
        Predictor.from_checkpoints([state], input_config=changed)


def test_raw_torch_model_is_kept_and_is_not_a_predictor(store: Trained) -> None:
    module = mlflow.pytorch.load_model(f"runs:/{store.run_id}/bn_cnn-torch")
    assert tuple(module(torch.zeros(2, 1, 128, 16)).shape) == (2, 88)  # one value channel (magma)
    with pytest.raises(MnrError, match="not an mnr predictor"):
        load_predictor(f"runs:/{store.run_id}/bn_cnn-torch")


def test_register_and_promote_move_the_alias(store: Trained) -> None:
    runner = CliRunner()
    first = runner.invoke(
        main, ["register", store.run_id, "--name", "piano-promote", "--alias", "champion"]
    )
    assert first.exit_code == 0, first.output
    assert "version 1" in first.output
    second = runner.invoke(main, ["register", store.run_id, "--name", "piano-promote"])
    assert second.exit_code == 0 and "version 2" in second.output
    client = tracking.client()
    assert str(client.get_model_version_by_alias("piano-promote", "champion").version) == "1"
    moved = runner.invoke(main, ["promote", "piano-promote", "2", "--alias", "champion"])
    assert moved.exit_code == 0, moved.output
    assert str(client.get_model_version_by_alias("piano-promote", "champion").version) == "2"
    version = client.get_model_version("piano-promote", "2")
    assert version.run_id == store.run_id
    assert find_predictor(store.run_id).model_id in (version.model_id or version.source)
    missing = runner.invoke(main, ["promote", "piano-promote", "9", "--alias", "champion"])
    assert missing.exit_code == 2 and "no version 9" in missing.output


def test_register_a_run_without_a_predictor_is_a_clear_error(store: Trained) -> None:
    with tracking.tracked_run(experiment="empty-runs") as run_id:
        pass
    result = CliRunner().invoke(main, ["register", run_id, "--name", "nothing"])
    assert result.exit_code == 2 and "logged no predictor" in result.output
    result = CliRunner().invoke(main, ["register", "0" * 32, "--name", "nothing"])
    assert result.exit_code == 2 and "no MLflow run" in result.output


def test_models_registered_lists_versions_aliases_and_accuracy(store: Trained) -> None:
    result = CliRunner().invoke(main, ["models", "--registered", NAME])
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()[:2]
    assert header.split() == ["NAME", "VERSION", "ALIASES", "VAL_ACC", "RUN_ID"]
    val_accuracy = tracking.client().get_run(store.run_id).data.metrics["best/val_accuracy"]
    assert row.split() == [NAME, "1", "champion", f"{val_accuracy:.4f}", store.run_id]
    rows = model_registry.list_registered(NAME)
    assert rows[0]["aliases"] == ["champion"] and rows[0]["val_accuracy"] == pytest.approx(
        val_accuracy
    )
    assert (
        "no registered models"
        in CliRunner().invoke(main, ["models", "--registered", "zzz*"]).output
    )


def test_evaluate_prints_and_logs_pitch_metrics(store: Trained, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = [
        "evaluate",
        f"models:/{NAME}@champion",
        str(store.test_dir),
        "--truth",
        str(store.test_truth),
        "--log",
        "--experiment",
        "evaluations",
        "--output-dir",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for title in (
        "accuracy",
        "top-3 accuracy",
        "macro-F1",
        "mean abs. error (semitones)",
        "accuracy within one key",
        "octave-error rate",
        "accuracy per octave",
    ):
        assert title in result.output
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "top_losses.png").stat().st_size > 1000 and "top losses:" in result.output
    client = tracking.client()
    runs = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    truth = dict(line.split() for line in store.test_truth.read_text().split("\n") if line.strip())
    expected = reference_labels(store.checkpoint, store.test_dir)
    accuracy = np.mean([expected[name] == int(label) for name, label in truth.items()])
    assert metrics["eval/accuracy"] == pytest.approx(accuracy)
    for key in ("top3_accuracy", "macro_f1", "semitone_mae", "within_one_key", "octave_error_rate"):
        assert f"eval/{key}" in metrics
    assert not any("accuracy_octave_" in key for key in metrics)  # per octave: a table artifact
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {
        "confusion_matrix.png",
        "top_losses.png",
        "per_class_accuracy.csv",
        "per_octave_accuracy.csv",
    } <= artifacts
    assert runs[0].data.tags["mnr.model_uri"] == f"models:/{NAME}@champion"


def test_evaluate_needs_labels(store: Trained) -> None:
    result = CliRunner().invoke(main, ["evaluate", str(store.checkpoint), str(store.test_dir)])
    assert result.exit_code == 2 and "--truth" in result.output


def test_importing_mnr_predict_loads_neither_torch_pandas_nor_mlflow() -> None:
    """The CLI imports mnr.predict lazily, but the package itself must stay light too."""
    code = (
        "import sys, mnr.predict; print(sorted({'torch', 'pandas', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_concurrent_requests_each_get_their_own_tta() -> None:
    """A served model answers requests in threads from one predictor: a request's `tta` applies
    to that request only, never to the predictor that the others share."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from mnr.predict.serving import PianoKeyModel

    torch.manual_seed(0)
    model = create_model("baseline_cnn", input_size=(32, 32))
    pyfunc = PianoKeyModel()
    pyfunc.predictor = Predictor(model, tta=1)
    rng = np.random.default_rng(0)
    images = pd.DataFrame({"image": list(rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))})
    settings = (1, 3, 5, 7)
    expected = {tta: Predictor(model, tta=tta).predict(images)["probability"] for tta in settings}
    assert not np.allclose(expected[1], expected[7])  # the settings give different answers
    start = Barrier(8, timeout=60)

    def request(tta: int) -> tuple[int, pd.Series]:
        start.wait()  # each round of 8 requests starts together
        return tta, pyfunc.predict(None, images, params={"tta": tta})["probability"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(request, [settings[i % len(settings)] for i in range(48)]))
    for tta, probability in answers:
        np.testing.assert_allclose(probability, expected[tta], rtol=1e-5, err_msg=f"tta={tta}")
    assert pyfunc.predictor.tta == 1  # the shared predictor is untouched
