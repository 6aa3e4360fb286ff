"""`mlflow models serve` on a registered mnr predictor answers base64 PNG requests (slow: it
starts a real scoring server)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import TINY, train

from mnr.config import resolve_config
from mnr.crossval import cross_validate
from mnr.predict import load_predictor
from mnr.tracking import model_registry

NAME = "piano-serve"
STARTUP_TIMEOUT = 120.0  # seconds for the server to answer /ping


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own loopback server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for_ping(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"mlflow models serve exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"mlflow models serve did not answer {url} within {STARTUP_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _register(kind: str, root: Path) -> str:
    """A tiny model trained on `root` and registered: one bn_cnn, or a 2-fold ensemble."""
    config = resolve_config(
        model="bn_cnn",
        options={"data.path": str(root), "train.epochs": 2, "train.batch_size": 8},
        overrides=[*TINY, "tracking.log_model=true", "optim.lr=0.02"],
    )
    if kind == "ensemble":
        cross_validate(config, folds=2, register=f"{NAME}-cv", tta=3)
        return f"models:/{NAME}-cv/1"
    config = dataclasses.replace(
        config, tracking=dataclasses.replace(config.tracking, register=NAME)
    )
    assert train(config).status == "FINISHED"
    model_registry.promote(NAME, 1, "champion")
    return f"models:/{NAME}@champion"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["model", "ensemble"])
def test_served_model_answers_base64_pngs_reading_the_figure_as_training_did(
    styled, isolated: Path, kind: str
) -> None:
    """A model trained on librosa-specshow figures, served: it crops the plot and reads colours
    back (same answers as in-process) and refuses a figure drawn another way; an ensemble of
    folds answers the same way."""
    root = styled("specshow")
    uri = _register(kind, root)
    images = sorted((root / "test").glob("*.png"))[:2]
    expected = load_predictor(uri, device="cpu").predict(images, top_k=2)

    port = free_port()
    log = isolated / "serve.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with open(log, "wb") as out:
        # its own session, so that the server's worker processes end with it
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=isolated,
            env=dict(os.environ),
            start_new_session=True,
        )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", process, log)
        encoded = [base64.b64encode(p.read_bytes()).decode() for p in images]
        status, answer = post(
            f"http://127.0.0.1:{port}/invocations",
            {
                "dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]},
                "params": {"top_k": 2},
            },
        )
        assert status == 200, answer
        rows = answer["predictions"]
        assert [r["label"] for r in rows] == expected["label"].tolist()
        assert [r["note"] for r in rows] == expected["note"].tolist()
        assert [r["top2_label"] for r in rows] == expected["top2_label"].tolist()
        assert [r["probability"] for r in rows] == pytest.approx(
            expected["probability"].tolist(), rel=1e-5
        )
        assert "top3_label" not in rows[0]

        status, answer = post(
            f"http://127.0.0.1:{port}/invocations", {"inputs": {"image": encoded}}
        )
        assert (
            status == 200
            and [r["label"] for r in answer["predictions"]] == expected["label"].tolist()
        )

        status, answer = post(  # the server never opens files named by a client
            f"http://127.0.0.1:{port}/invocations",
            {"dataframe_split": {"columns": ["image"], "data": [[str(images[0])]]}},
        )
        assert status == 400 and "file paths are not accepted" in answer["message"]

        full = next((styled("full") / "test").glob("*.png"))  # the same notes, full-bleed
        status, answer = post(
            f"http://127.0.0.1:{port}/invocations",
            {
                "dataframe_split": {
                    "columns": ["image"],
                    "data": [[base64.b64encode(full.read_bytes()).decode()]],
                }
            },
        )
        assert status == 400 and "the figure around the plot differs" in answer["message"]
    finally:
        mlflow.set_tracking_uri(None)  # MLflow's global URI would outlive the test otherwise
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
