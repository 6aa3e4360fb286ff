"""What a user sees: progress, a quiet console, a store that starts safely, URLs as typed, and
runs the MLflow UI can show well (descriptions, sections of metrics, named models)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import TINY, cli_overrides, train

from mnr import console, tracking
from mnr.config import resolve_config
from mnr.errors import MnrError

REPO = Path(__file__).resolve().parent.parent
NOISE = (
    "INFO mlflow",
    "Creating initial MLflow database tables",
    "Validating input example against model signature",
    "Downloading artifacts",
    "No complete tensor found in the group",
    "UserWarning",
    "Warning:",
)


def _mnr(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m mnr ARGS` in `cwd`, output not a terminal (as in a log file or CI)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mnr", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_plain_run_shows_its_epochs_and_no_library_noise(
    synth_root: Path, isolated: Path
) -> None:
    process = _mnr(
        "train", "--model", "bn_cnn", "--data", str(synth_root), "--epochs", "2",
        *cli_overrides(*TINY, "tracking.log_model=true"), cwd=isolated,
    )  # fmt: skip
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    assert (
        "bn_cnn: epoch 1/2  loss " in err and "bn_cnn: epoch 2/2  loss " in err
    )  # one line an epoch
    for noise in NOISE:
        assert noise not in out + err, noise
    assert "FINISHED: best/val_accuracy=" in out and "model: models:/" in out
    assert "\r" not in err  # the decoding bars as lines, not frames


def _bar_lines(err: str, desc: str) -> list[str]:
    """The lines a bar named `desc` wrote to a captured stderr."""
    return [line for line in err.splitlines() if line.startswith(f"{desc}:")]


def test_bars_in_a_log_file_print_a_few_lines_not_frames(tmp_path: Path) -> None:
    """Redirected, as in a log file or CI, the synth and check bars each write their start,
    quarters and end as whole lines: no carriage-return frames."""
    synth = _mnr("data", "synth", "out", "--per-class", "2", "--test-per-class", "0",
                 "--workers", "2", cwd=tmp_path)  # fmt: skip
    out, err = synth.communicate(timeout=300)
    assert synth.returncode == 0, out + err
    assert "\r" not in err
    lines = _bar_lines(err, "synth")
    assert 2 <= len(lines) <= 6, err
    assert "0/176" in lines[0] and "176/176" in lines[-1], err

    check = _mnr("data", "check", "out/train", cwd=tmp_path)
    out, err = check.communicate(timeout=300)
    assert check.returncode == 0, out + err
    assert "\r" not in err
    lines = _bar_lines(err, "checking train")
    assert 2 <= len(lines) <= 6, err


def test_a_jupyter_kernel_and_a_terminal_are_live_a_file_is_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bars redraw in a terminal and in a Jupyter kernel (whose streams are not ttys) and print
    lines in a file; a kernel is told apart from a plain IPython shell as tqdm.auto does."""
    import io
    import types

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with open(tmp_path / "log", "w") as log:
        assert not console.is_live(log)
        assert console.is_live(Terminal())
        for config, live in (({"IPKernelApp": {}}, True), ({"TerminalIPythonApp": {}}, False)):
            shell = types.SimpleNamespace(config=config)
            ipython = types.SimpleNamespace(get_ipython=lambda shell=shell: shell)
            monkeypatch.setitem(sys.modules, "IPython", ipython)
            assert console.is_live(log) is live


@pytest.mark.slow
def test_four_processes_started_together_on_a_fresh_store_all_finish(
    synth_root: Path, isolated: Path
) -> None:
    store = isolated / "fresh" / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    processes = [
        _mnr(
            "train",
            "--data",
            str(synth_root),
            "--epochs",
            "1",
            "--run-name",
            f"together-{i}",
            "--quiet",
            *cli_overrides(*TINY),
            cwd=isolated,
            env=env,
        )  # fmt: skip
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("mnr").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"together-{i}" for i in range(4)]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_bare_postgresql_url_gets_the_installed_driver_or_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed: set[str] = {"psycopg2"}
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "mnr.tracking.store.importlib.util.find_spec",
        lambda name: (
            object() if name in installed else (None if name.startswith("psycopg") else real(name))
        ),
    )
    url = "postgresql://mnr:secret@db:5432/mlflow"
    assert tracking.database_url(url) == "postgresql+psycopg2://mnr:secret@db:5432/mlflow"
    installed.clear()
    installed.add("psycopg")
    assert tracking.database_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert (
        tracking.database_url("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    )  # as given
    installed.clear()
    with pytest.raises(
        MnrError, match=r"--storage=postgresql://...: no PostgreSQL driver .*psycopg2-binary"
    ):
        tracking.database_url(url, option="--storage")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    with pytest.raises(MnrError, match="MLFLOW_TRACKING_URI=postgresql://"):
        tracking.tracking_uri()


def test_runs_carry_a_description_a_source_and_metrics_in_sections(
    synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "mnr.tracking.runs.SYSTEM_METRICS_SECONDS", 0.5
    )  # samples within a short run
    config = resolve_config(
        model="bn_cnn",
        options={"data.path": str(synth_root), "train.epochs": 2, "train.batch_size": 8},
        overrides=[*TINY, "tracking.log_model=true", "tracking.experiment=ui"],
    )
    result = train(config)
    run = mlflow.MlflowClient().get_run(result.run_id)
    description = run.data.tags["mlflow.note.content"]
    assert (
        description.startswith("bn_cnn on ")
        and "2 epochs" in description
        and "test/accuracy" in description
    )
    assert run.data.tags["mlflow.source.name"] == "mnr train"
    assert {key.split("/")[0] for key in run.data.metrics} <= {
        "train",
        "val",
        "best",
        "test",
        "system",
    }
    assert not any(
        "accuracy_octave" in key for key in run.data.metrics
    )  # per-octave detail is a table
    assert {
        "per_octave_accuracy.csv",
        "per_class_accuracy.csv",
        "per_instrument_accuracy.csv",
    } <= {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    # the lowest octave on its own, and (the generator's manifest says who played) per instrument
    assert {"test/accuracy_low", "best/val_accuracy_low"} <= set(run.data.metrics)
    instruments = {
        key.split("/")[2] for key in run.data.metrics if key.startswith("test/instrument/")
    }
    assert instruments == {"piano", "epiano", "harpsichord", "organ"}
    assert "model.kwargs.dropout" in run.data.params and "model.kwargs" not in run.data.params
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    named = {model.name: model for model in models}
    assert set(named) == {"bn_cnn", "bn_cnn-torch"}  # named after the architecture
    linked = {metric.key for metric in named["bn_cnn"].metrics or []}
    assert {"test/accuracy", "best/val_accuracy"} <= linked  # the Models tab shows them beside it
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        run.data.metrics
    )


def test_a_one_trial_study_notes_the_skipped_plot_in_one_line(synth_root: Path) -> None:
    """mnr's notes are one `mnr: ...` line, not a Python warning with mnr's source path."""
    import warnings

    from click.testing import CliRunner

    from mnr.cli import main

    args = ["tune", "--data", str(synth_root), "--trials", "1", "--epochs", "1", "-q"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(
            main, [*args, "--study-name", "one", *cli_overrides(*TINY, "train.batch_size=8")]
        )
    assert result.exit_code == 0, result.output
    assert (
        "mnr: skipped the parameter-importance plot: it needs 2 completed trials with different "
        "values\n" in result.output
    )
    assert [str(w.message) for w in caught if f"{os.sep}mnr{os.sep}" in w.filename] == []
    assert "\nbest: trial 0 val/acc=" in result.output  # the study's monitor, from its result


def test_mnr_speaks_through_the_console_not_python_warnings() -> None:
    """A note for the user goes through `mnr.console.note`; `warnings.warn` in mnr's own code
    would print a source path and a line of code instead."""
    sources = sorted((REPO / "mnr").rglob("*.py"))
    assert [str(p.relative_to(REPO)) for p in sources if "warnings.warn(" in p.read_text()] == []
