"""A cold `mnr predict` against a bare decode script, and `mlflow models serve` answering.

    python3 benchmarks/cold_predict.py [--repeats 3] [--no-readme]

What a user waits for is a whole command from process start, not a warm loop, so both sides are
fresh processes, alternated (bare, mnr, bare, mnr, ...) so that machine noise hits both:

- bare: a one-process script that imports torch and decodes the 880 test PNGs of the built-in
  set with Pillow (RGBA -> RGB, resized to the model's input size) into one tensor: the floor a
  prediction cannot go under without skipping work (`bare_decode.py`);
- mnr: `mnr predict models:/bench/1 TEST_DIR -o output.csv`, a registered bn_cnn predictor in a
  fresh local store: resolving the model, decoding in worker processes, the model, the CSV.

Then `mlflow models serve -m models:/bench/1`: seconds from starting it to its first answered
request (one base64 PNG), and its steady throughput on requests of 64 base64 PNGs.

Writes benchmarks/results/cold_predict.json and the README's "cold predict" table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cold_predict.json"
BARE = Path(__file__).resolve().parent / "bare_decode.py"
MODEL = "bn_cnn"


def _register(work: Path, env: dict[str, str]) -> None:
    """An (untrained: speed does not depend on the weights) bn_cnn predictor for the built-in
    set's layout, logged and registered as bench version 1 in `work`'s store."""
    script = f"""
from mnr import tracking
from mnr.config import resolve_config, to_dict
from mnr.data import scan_folder
from mnr.data.builtin import builtin_dataset
from mnr.data.cache import cached_layout
from mnr.training import build_model
from mnr.predict.logged import log_predictor
from mnr.tracking import model_registry
config = resolve_config(model={MODEL!r})
layout = cached_layout(scan_folder(builtin_dataset(progress=False) / "train")).layout
model = build_model(config, layout=layout).eval()
with tracking.tracked_run(experiment="bench", run_name="cold-predict") as run_id:
    info = log_predictor(model, config=to_dict(config), run_id=run_id, name={MODEL!r})
model_registry.register_logged(info.model_id, name="bench")
"""
    subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, check=True, capture_output=True
    )


def _timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{done.stderr[-2000:]}")
    return seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, images: list[str], timeout: float = 120) -> int:
    body = json.dumps(
        {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return response.status


def serve(work: Path, env: dict[str, str], test_dir: Path, *, batches: int = 10) -> dict:
    """First-request latency from process start, then images/s on batches of 64 base64 PNGs."""
    port = _free_port()
    files = sorted(test_dir.glob("*.png"))
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in files[:64]]
    url = f"http://127.0.0.1:{port}/invocations"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bench/1",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        first = None
        while time.perf_counter() - started < 180:
            try:
                if _post(url, encoded[:1], timeout=30) == 200:
                    first = time.perf_counter() - started
                    break
            except OSError:
                time.sleep(0.2)
        if first is None:
            return {"error": "the server did not answer within 180 s"}
        steady = []
        for _ in range(batches):
            t = time.perf_counter()
            _post(url, encoded)
            steady.append(time.perf_counter() - t)
        return {
            "first_request_seconds": round(first, 2),
            "batch": len(encoded),
            "batch_seconds_median": round(statistics.median(steady), 3),
            "images_per_second": round(len(encoded) / statistics.median(steady), 1),
        }
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    from mnr.config import DEFAULT_INPUT_SIZE
    from mnr.data.builtin import builtin_dataset

    test_dir = builtin_dataset(progress=False) / "test"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "MNR_CACHE_DIR": str(work / "cache"),
        }
        _register(work, env)
        height, width = DEFAULT_INPUT_SIZE
        bare = [sys.executable, str(BARE), str(test_dir), str(height), str(width)]
        mnr = [
            sys.executable,
            "-m",
            "mnr",
            "predict",
            "models:/bench/1",
            str(test_dir),
            "-o",
            str(work / "out.csv"),
        ]
        _timed(
            mnr, cwd=work, env=env
        )  # the first call downloads the model into the cache: a one-off
        times: dict[str, list[float]] = {"bare": [], "mnr": []}
        for _ in range(args.repeats):
            times["bare"].append(_timed(bare, cwd=work, env=env))
            times["mnr"].append(_timed(mnr, cwd=work, env=env))
        served = serve(work, env, test_dir)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "images": len(list(test_dir.glob("*.png"))),
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 2) for k, v in medians.items()},
        "ratio_mnr_to_bare": round(medians["mnr"] / medians["bare"], 3),
        "serve": served,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.no_readme:
        from readme import write_section

        write_section("cold-predict", _markdown(result), heading="Cold predict and serve")


def _markdown(r: dict) -> str:
    s = r["serve"]
    serve_line = (
        f"`mlflow models serve -m models:/bench/1`: first request answered {s['first_request_seconds']} s after "
        f"the server was started; then {s['images_per_second']} images/s on requests of {s['batch']} base64 PNGs."
        if "error" not in s
        else f"`mlflow models serve`: {s['error']}"
    )
    return "\n".join(
        [
            f"Measured by `python3 benchmarks/cold_predict.py`: {r['images']} test PNGs of the built-in set, fresh "
            f"processes alternated, median of {len(r['seconds']['mnr'])}; {r['cores']} cores, load average "
            f"{r['load_average']} at the end.",
            "",
            "| command | seconds from process start to its result |",
            "| --- | ---: |",
            f"| bare script: import torch, decode every PNG with Pillow (`benchmarks/bare_decode.py`) | "
            f"{r['median_seconds']['bare']:.2f} |",
            f"| `mnr predict models:/bench/1 test/ -o output.csv` (a registered bn_cnn) | {r['median_seconds']['mnr']:.2f} |",
            f"| ratio (goal: <= 1.0) | {r['ratio_mnr_to_bare']:.2f}x |",
            "",
            serve_line,
        ]
    )


if __name__ == "__main__":
    main()
