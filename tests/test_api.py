"""The Python API (`mnr.train`, `mnr.load`, ...): what a notebook relies on.

Two calls in one process give two finished runs and leave no MLflow run active; an interrupt
propagates and leaves the run resumable, as `mnr train` does; the keyword arguments sit between
the YAML and the `overrides` mapping; results show as a short table with the run's link.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import InterruptAfter

import mnr
from mnr.api import train_config

# `conftest.TINY` as the API's overrides mapping
TINY = {"data.input_size": [32, 32], "train.eval_batch_size": 64, "tracking.log_model": False}


def _tiny(synth_root: Path, **kwargs):
    settings = dict(model="bn_cnn", data=synth_root, epochs=1, batch_size=8, overrides=TINY)
    return mnr.train(**{**settings, **kwargs}, progress=False)


def test_import_mnr_stays_light() -> None:
    code = "import sys, mnr; print(sorted(m for m in ('torch', 'mlflow', 'optuna', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_keywords_sit_between_the_yaml_and_the_overrides() -> None:
    config, resumed = train_config(model="bn_cnn", epochs=3, lr=0.5)
    assert resumed is None and config.train.epochs == 3 and config.optim.lr == 0.5
    config, _ = train_config(model="bn_cnn", epochs=3, overrides={"train.epochs": 7})
    assert config.train.epochs == 7
    assert train_config()[0].model.name == "baseline_cnn"


def test_train_twice_in_one_process_gives_two_finished_runs(
    synth_root: Path, empty_store: Path
) -> None:
    first = _tiny(synth_root)
    second = _tiny(synth_root, run_name="again")
    assert mlflow.active_run() is None
    assert first.run_id != second.run_id
    client = mlflow.MlflowClient()
    for result in (first, second):
        assert result.status == "FINISHED"
        assert client.get_run(result.run_id).info.status == "FINISHED"
    assert client.get_run(second.run_id).info.run_name == "again"
    shown = second._repr_html_()
    assert "#/experiments/" in shown and second.run_id in shown and "<table>" in shown
    assert len(repr(second)) < 300 and second.run_id in repr(second)


def test_an_interrupted_train_is_resumable_from_python(synth_root: Path, empty_store: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _tiny(synth_root, epochs=2, callbacks=[InterruptAfter(1)])
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("mnr").experiment_id
    (killed,) = client.search_runs([experiment], "attributes.status = 'KILLED'")
    resumed = mnr.train(resume=killed.info.run_id, progress=False)
    assert resumed.run_id == killed.info.run_id and resumed.status == "FINISHED"
    assert len(resumed.history) == 2


def test_check_reports_in_one_short_line(synth_root: Path) -> None:
    report = mnr.check(synth_root / "train", workers=1, progress=False)
    assert report.ok and len(repr(report)) < 300 and "images=24" in repr(report), repr(report)
    assert report._repr_html_().startswith("<pre>")


def test_an_api_call_is_quiet_and_leaves_the_callers_logging_as_it_was() -> None:
    import logging
    import warnings

    from mnr.console import libraries_quiet

    logger = logging.getLogger("mlflow")
    before = logger.level
    logger.setLevel(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with libraries_quiet():
            assert logger.getEffectiveLevel() == logging.WARNING
            warnings.warn(
                "IProgress not found. Please update jupyter and ipywidgets.", stacklevel=1
            )
        warnings.warn("IProgress not found, outside", stacklevel=1)
    assert [str(w.message) for w in caught] == ["IProgress not found, outside"]
    assert logger.level == logging.INFO
    logger.setLevel(before)
