"""The learning-rate range test: a sweep on a tiny set, the suggestion's rule, the command."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli_overrides, tiny_config

from mnr.cli import main
from mnr.errors import MnrError
from mnr.lr_range import LrFindResult, caveats, lr_find, suggest_lr


def test_a_sweep_on_a_tiny_set_is_logged(synth_root: Path) -> None:
    config = tiny_config(synth_root, "tracking.experiment=lr")
    result = lr_find(config, start_lr=1e-5, end_lr=10.0, steps=40, progress=False)
    assert 12 <= len(result.lrs) == len(result.losses) <= 40
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, math.log(1e6) / 39)  # geometric, reaching 10 at step 40
    assert all(math.isfinite(v) for v in result.losses)
    assert 1e-5 <= result.suggestion <= 10.0
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mnr.role"] == "lr-find"
    assert run.data.metrics["lr_find/suggestion"] == pytest.approx(result.suggestion)
    assert float(run.data.params["lr_find.suggestion"]) == pytest.approx(
        result.suggestion, rel=1e-5
    )
    assert {"lr_find.png", "lr_find.csv"} <= {a.path for a in client.list_artifacts(result.run_id)}
    rows = Path(client.download_artifacts(result.run_id, "lr_find.csv")).read_text().split()
    assert rows[0] == "step,lr,loss" and len(rows) == len(result.lrs) + 1


def test_the_suggestion_is_on_the_way_down_of_a_u() -> None:
    lrs = np.geomspace(1e-6, 1, 100)
    x = np.log10(lrs)  # -6 .. 0; the loss falls fastest at -3.5 and bottoms out at -2
    losses = 2.5 - np.tanh(2 * (x + 3.5)) + 0.3 * np.clip(x + 2, 0, None) ** 2
    suggestion = suggest_lr(lrs.tolist(), losses.tolist())
    assert 10**-3.7 < suggestion < 10**-3.3
    assert suggestion < lrs[int(np.argmin(losses))]  # before the valley's bottom
    assert suggest_lr([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0]) == 1e-2  # too short: the lowest loss
    with pytest.raises(MnrError, match="no steps"):
        suggest_lr([], [])


def test_a_flat_or_unturned_curve_is_flagged() -> None:
    lrs = np.geomspace(1e-6, 1, 100).tolist()
    flat = np.linspace(4.48, 4.44, 100).tolist()  # a net that has not started learning
    hardly, still = caveats(lrs, flat)
    assert "fell less than 10 %" in hardly and "still falling at lr 1," in still
    u = (2 + (np.log10(lrs) + 2) ** 2 / 10).tolist()  # turns at 1e-2
    assert caveats(lrs, u) == []


def test_the_curve_marks_the_suggestion(tmp_path: Path) -> None:
    result = LrFindResult(lrs=[1e-4, 1e-3, 1e-2], losses=[3.0, 2.0, 4.0], suggestion=1e-3)
    figure = result.plot(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert "suggestion 0.001" in figure.axes[0].get_legend().get_texts()[0].get_text()


def test_cli_prints_the_suggestion(synth_root: Path) -> None:
    args = ["lr-find", "--model", "bn_cnn", "--data", str(synth_root), "--steps", "15", "-q"]
    args += ["--batch-size", "8", *cli_overrides("data.input_size=[32,32]")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "suggested lr " in result.output and "mnr train --model bn_cnn --lr " in result.output
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.run_id in result.output
    refused = CliRunner().invoke(main, ["lr-find", "--epochs", "3"])
    assert refused.exit_code == 2 and "--epochs" in refused.output
