"""Shared fixtures: every test runs in its own folder with its own MLflow store and caches.

One copy of each: the environment isolation (`isolate`, for a test and for a module's
fixtures), the ready MLflow store (`empty_store`), the tiny run's config (`tiny_config`) and the
child runs of a parent (`children`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mnr.config import ExperimentConfig, resolve_config
from mnr.engine import Callback
from mnr.resume import Resume
from mnr.run_record import RunRecord
from mnr.training import TRAIN_RECORD, TrainResult, default_callbacks, load_data, run_training
from mnr.tuning import TuneResult, study_spec, tune

# The overrides of a tiny run, one that takes seconds: small images, one validation batch, no
# logged model (tests that need one add tracking.log_model=true after these; later values win).
TINY = ("data.input_size=[32,32]", "train.eval_batch_size=64", "tracking.log_model=false")
TUNE = "tracking.experiment=tune"  # the tuning tests' experiment
# a search space small enough for a few tiny trials
SMALL_SPACE = {
    "optim.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [4, 8]},
}


class InterruptAfter(Callback):
    """Ctrl-C (a KeyboardInterrupt) at the end of epoch `epoch`, as a user would press it."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, ctx, metrics) -> None:
        if ctx.epoch == self.epoch:
            raise KeyboardInterrupt


def cli_overrides(*items: str) -> list[str]:
    """`-s KEY=VALUE` command-line arguments for config overrides."""
    return [arg for item in items for arg in ("-s", item)]


def tune_process(synth_root: Path, study: str, *options: str) -> subprocess.Popen:
    """`mnr tune` on the tiny set in a child process (experiment `tune`, `TINY`'s overrides),
    its output merged into stdout."""
    command = [sys.executable, "-m", "mnr", "tune", "--data", str(synth_root)]
    command += ["--study-name", study, *options, *cli_overrides(*TINY, TUNE)]
    return subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(autouse=True, scope="session")
def this_environments_commands() -> Iterator[None]:
    """Commands that tests start by name come from the environment running the tests.

    `mlflow run --env-manager local` runs the MLproject's `python -m mnr ...` and `mlflow models
    serve --env-manager local` runs `uvicorn`, both looked up on PATH, and the uv test looks for
    `uv`. A venv's python started by its path (`.venv/bin/python -m pytest`, an IDE, a cron job)
    leaves PATH as it was, so those would be another Python's, with another mnr or none; putting
    the interpreter's own bin folder first does what activating the venv does.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
        yield


def isolate(patch: pytest.MonkeyPatch, root: Path) -> Path:
    """Work in `root/work`, with a private MNR_HOME, checkpoint folder and MLflow store there
    (`work/mlflow.db`) and none of the user's data or cache folders; return the work folder."""
    work = root / "work"
    work.mkdir(exist_ok=True)
    patch.chdir(work)
    patch.setenv("MNR_HOME", str(root / "home"))
    patch.setenv("MNR_CHECKPOINT_DIR", str(work / "checkpoints"))
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    for name in ("MLFLOW_RUN_ID", "MNR_DATA_DIR", "MNR_CACHE_DIR"):
        patch.delenv(name, raising=False)
    return work


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test in its own folders and MLflow store (`isolate`); yields the work folder."""
    yield isolate(monkeypatch, tmp_path)
    _forget_tracking_uri()


@pytest.fixture(scope="module")
def isolated_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same isolation for a module's expensive fixtures (a model trained once per module);
    each test still gets its own folders from `isolated`. Yields the module's work folder."""
    with pytest.MonkeyPatch.context() as patch:
        yield isolate(patch, tmp_path_factory.mktemp("module"))
    _forget_tracking_uri()


def _forget_tracking_uri() -> None:
    """configure_tracking sets a process-wide URI; don't leak it to the next test. Only where
    MLflow is imported already: importing it here, under a test's patches (a faked
    `importlib.metadata.entry_points`), could fail in the teardown."""
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with its tables created, made once: creating them takes seconds."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def empty_store(store_template: Path, isolated: Path) -> Path:
    """This test's MLflow store, empty and ready (a copy of `store_template`); returns its file."""
    return Path(shutil.copyfile(store_template, isolated / "mlflow.db"))


def tiny_config(
    synth_root: Path,
    *extra: str,
    model: str = "bn_cnn",
    epochs: int = 2,
    config: Path | None = None,
    search: dict | None = None,
) -> ExperimentConfig:
    """A tiny run on `synth_root`: `model`'s experiment (or the `config` file), `epochs` epochs
    in batches of 8, `TINY`, then the `extra` overrides; `search` replaces the search space."""
    resolved = resolve_config(
        model=None if config else model,
        config=config,
        options={"data.path": str(synth_root), "train.epochs": epochs, "train.batch_size": 8},
        overrides=[*TINY, *extra],
    )
    return dataclasses.replace(resolved, search=search) if search is not None else resolved


def train(
    config: ExperimentConfig,
    *,
    callbacks: Sequence[Callback] = (),
    resume: Resume | None = None,
    record: RunRecord | None = TRAIN_RECORD,
) -> TrainResult:
    """`run_training` as `mnr train` calls it (data loaded, the default callbacks and then
    `callbacks`), with no progress lines."""
    data = load_data(config, progress=False)
    chosen = [*default_callbacks(config, data, progress=False), *callbacks]
    return run_training(config, data, callbacks=chosen, resume=resume, record=record)


def tune_config(
    config: ExperimentConfig,
    *,
    trials: int | None,
    timeout: float | None = None,
    jobs: int | None = 1,
    register: str | None = None,
    progress: bool = False,
    study_name: str | None = None,
    **study: Any,
) -> TuneResult:
    """`mnr.tuning.tune` on the study that `study_spec` makes of `study_name` and `study`
    (epochs, folds, sampler, pruner, seed, storage, save_weights), as `mnr.api.tune` calls it."""
    spec = study_spec(config, name=study_name, **study)
    return tune(
        config,
        spec,
        trials=trials,
        timeout=timeout,
        jobs=jobs,
        register=register,
        progress=progress,
    )


def children(parent_run_id: str) -> list:
    """The child runs of a run (the folds of `mnr cv`, the trials of `mnr tune`)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000
    )


def write_png(
    path: Path, *, mode: str = "RGBA", size: tuple[int, int] = (52, 40), seed: int = 0
) -> Path:
    """A small random PNG of the given Pillow mode and (W, H) size."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        image = Image.fromarray(
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB"
        ).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def write_folder(root: Path, labels: list[int], *, size: tuple[int, int] = (52, 40)) -> Path:
    """A labelled folder of random PNGs named img000.png ... with a matching truth.txt."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, label in enumerate(labels):
        name = f"img{index:03d}.png"
        write_png(root / name, size=size, seed=index)
        lines.append(f"{name} {label}")
    (root / "truth.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the Kaggle layout: 3 keys spread over the piano."""
    from mnr.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(
        root, per_class=8, test_per_class=3, seed=1, labels=[5, 44, 80], workers=2, progress=False
    )
    return root


STYLED_LABELS = list(range(0, 88, 8))  # 11 keys over the whole keyboard


@pytest.fixture(scope="session")
def styled(tmp_path_factory: pytest.TempPathFactory):
    """style -> a dataset root of 22 training and 11 test images drawn in that style."""
    made: dict[str, Path] = {}

    from mnr.data.synth import SynthConfig, generate_dataset

    def make(style: str, **options) -> Path:
        key = style + repr(sorted(options.items()))
        if key not in made:
            root = tmp_path_factory.mktemp(f"style-{style}") / "data"
            config = SynthConfig.for_style(style, **options)
            generate_dataset(
                root,
                per_class=2,
                test_per_class=1,
                labels=STYLED_LABELS,
                config=config,
                workers=2,
                progress=False,
            )
            made[key] = root
        return made[key]

    return make


def torch_model_uri(run_id: str) -> str:
    """The URI of the raw torch module a run logged (tagged mnr.kind=torch, named MODEL-torch)."""
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    (found,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"tags.`mnr.kind` = 'torch' AND source_run_id = '{run_id}'",
        output_format="list",
    )
    return f"models:/{found.model_id}"
