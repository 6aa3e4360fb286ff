"""Shared fixtures: every test runs in its own folder with its own MLflow store and caches."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The overrides of a tiny run, one that takes seconds: small images, one validation batch, no
# logged model (tests that need one add tracking.log_model=true after these; later values win).
TINY = ("data.input_size=[32,32]", "train.eval_batch_size=64", "tracking.log_model=false")


def cli_overrides(*items: str) -> list[str]:
    """`-s KEY=VALUE` command-line arguments for config overrides."""
    return [arg for item in items for arg in ("-s", item)]


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


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private working directory, MNR_HOME, checkpoint folder and MLflow store per test."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MNR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MNR_CHECKPOINT_DIR", str(work / "checkpoints"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MNR_DATA_DIR", raising=False)
    monkeypatch.delenv("MNR_CACHE_DIR", raising=False)
    yield work
    import mlflow

    mlflow.set_tracking_uri(None)  # configure_tracking sets a process-wide URI; don't leak it


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
