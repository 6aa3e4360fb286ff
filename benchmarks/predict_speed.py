"""How fast `mnr predict` turns a folder of PNGs into a submission, PNG decoding included.

Measured on the built-in dataset's test folder (880 Kaggle-sized 520 x 394 PNGs) with a
baseline_cnn at the default input size (`mnr.config.DEFAULT_INPUT_SIZE`, or ``--size H W``);
throughput does not depend on the weights, so the model is an untrained one saved as a
checkpoint. The figures, side by side:

- ``naive``: what a notebook does: decode each file in turn, then run the model one image at a
  time;
- ``decode_only_one_process`` and ``model_only``: the two costs apart (the floor is decoding);
- ``in_process``: `mnr.predict.predict_folder` (decode in parallel processes, large inference
  batches in `torch.inference_mode`);
- ``cli_checkpoint``: ``mnr predict CHECKPOINT.pt`` in a subprocess, end to end;
- ``cli_registered``: ``mnr predict models:/NAME@champion`` from a local MLflow store, end to end.

The CLI runs go through a small wrapper that imports what the command needs, notes the time,
then calls the `mnr` command line in the same process, so the import time is measured apart and
both ``images_per_second`` (imports excluded: model loading, decoding, inference and writing the
CSV) and ``images_per_second_with_startup`` (the whole subprocess) are reported.

Every figure records wall time and CPU time (this process and all its children, decode workers
included). On a machine shared with other work the wall time says little; CPU time per image
does not depend on how busy the machine is, so ``images_per_second_on_idle_cores`` =
images / (CPU seconds / cores) estimates the throughput on the same cores with nothing else
running (an upper bound: it assumes the cores are kept busy throughout).

Run::

    python benchmarks/predict_speed.py            # writes benchmarks/results/predict_speed.json
    python benchmarks/predict_speed.py --repeats 5 --workers 2 --size 128 128
    python benchmarks/predict_speed.py --readme   # also puts the table in README.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "predict_speed.json"
MODEL = "baseline_cnn"
NAIVE_IMAGES = 200  # the naive loop is slow; its rate is measured on this many images


def _cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (decode workers too)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of each of `repeats` calls."""
    out = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        fn()
        out.append((time.perf_counter() - wall, _cpu_seconds() - cpu))
    return out


def _summary(runs: list[tuple[float, float]], count: int, cores: int) -> dict:
    """Rates from the median (wall, CPU) run."""
    wall = max(statistics.median(w for w, _ in runs), 1e-9)
    cpu = max(statistics.median(c for _, c in runs), 1e-9)
    return {
        "wall_seconds": [round(w, 3) for w, _ in runs],
        "cpu_seconds": [round(c, 3) for _, c in runs],
        "images_per_second": round(count / wall, 1),
        "cpu_ms_per_image": round(1000 * cpu / count, 2),
        "images_per_second_on_idle_cores": round(count / (cpu / cores), 1),
        "idle_cores": cores,
    }


# Runs `mnr ARGS...` after importing what the command loads, and reports both parts' times.
_WRAPPER = """
import json, resource, sys, time
def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
wall0, cpu0 = time.perf_counter(), cpu()
import {imports}
import mnr.cli
wall1, cpu1 = time.perf_counter(), cpu()
try:
    mnr.cli.main(sys.argv[1:], prog_name="mnr")
    code = 0
except SystemExit as exc:
    code = exc.code
wall2, cpu2 = time.perf_counter(), cpu()
print("MNR_TIMING " + json.dumps([wall1 - wall0, cpu1 - cpu0, wall2 - wall1, cpu2 - cpu1]), file=sys.stderr)
sys.exit(code)
"""


def _cli(
    args: list[str], *, imports: str, env: dict[str, str], count: int, cores: int, repeats: int
) -> dict:
    """`mnr ARGS` in a subprocess, `repeats` times: the whole run, its imports, and the command."""
    whole, imported, command = [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER.format(imports=imports), *args],
            env=env,
            capture_output=True,
            text=True,
        )
        whole.append((time.perf_counter() - wall, _cpu_seconds() - cpu))
        if done.returncode != 0:
            raise SystemExit(f"mnr {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        line = next(x for x in done.stderr.splitlines() if x.startswith("MNR_TIMING "))
        import_wall, import_cpu, command_wall, command_cpu = json.loads(
            line.removeprefix("MNR_TIMING ")
        )
        imported.append((import_wall, import_cpu))
        command.append((command_wall, command_cpu))
    summary = _summary(command, count, cores)
    summary["import_wall_seconds"] = round(statistics.median(w for w, _ in imported), 3)
    summary["import_cpu_seconds"] = round(statistics.median(c for _, c in imported), 3)
    summary["subprocess_wall_seconds"] = [round(w, 3) for w, _ in whole]
    summary["images_per_second_with_startup"] = round(
        count / statistics.median(w for w, _ in whole), 1
    )
    return summary


def _checkpoint(path: Path, input_size: tuple[int, int]) -> Path:
    """An untrained baseline_cnn saved as an mnr checkpoint (weights do not change the speed)."""
    import torch

    from mnr.checkpoint import model_state, save_checkpoint
    from mnr.models import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, input_size=input_size)
    config = {"model": {"name": MODEL, "kwargs": {}}, "data": {"input_size": list(input_size)}}
    return save_checkpoint(model_state(model, config=config), path)


def _register(checkpoint: Path, work: Path) -> dict[str, str]:
    """Log the checkpoint's predictor to a fresh local MLflow store as bench@champion."""
    from mnr import tracking
    from mnr.predict import Predictor
    from mnr.predict.logged import log_predictor
    from mnr.tracking import model_registry

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    os.environ.update(env)
    tracking.configure_tracking()
    model = Predictor.from_checkpoints([checkpoint]).models[0]
    config = {
        "model": {"name": MODEL, "kwargs": {}},
        "data": {"input_size": list(model.input_config.input_size)},
    }
    with tracking.tracked_run(experiment="benchmarks", run_name="predict_speed") as run_id:
        info = log_predictor(model, config=config, run_id=run_id, name=MODEL)
    model_registry.register_logged(info.model_id, name="bench")
    model_registry.promote("bench", 1, "champion")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=2, help="decode processes (the target machine has 2 cores)"
    )
    parser.add_argument(
        "--cores", type=int, default=2, help="cores the idle-machine estimate assumes"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="inference batch (default: mnr's)"
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=None,
        metavar=("H", "W"),
        help="model input size (default: mnr.config.DEFAULT_INPUT_SIZE)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args()

    from mnr.config import DEFAULT_INPUT_SIZE

    input_size = tuple(args.size or DEFAULT_INPUT_SIZE)

    import numpy as np
    import torch

    from mnr.data import builtin_dataset
    from mnr.data.images import decode_png
    from mnr.predict import Predictor, list_images, predict_folder

    folder = builtin_dataset() / "test"
    images = list_images(folder)
    count = len(images)
    cores = args.cores
    print(
        f"{count} images in {folder}, {MODEL} at {input_size}, {args.workers} decode workers, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
    )
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "images": count,
        "image_size": "520x394 PNG",
        "model": MODEL,
        "input_size": list(input_size),
        "workers": args.workers,
        "cores_assumed_for_idle_estimate": cores,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = _checkpoint(work / "bench.pt", input_size)
        predictor = Predictor.from_checkpoints([checkpoint], batch_size=args.batch_size)
        results["batch_size"] = predictor.batch_size
        paths = [images.path(i) for i in range(count)]

        def naive() -> None:  # serial decode, one image per forward pass
            for path in paths[:NAIVE_IMAGES]:
                predictor.probabilities(decode_png(path, size=input_size)[None])

        results["naive"] = _summary(_measure(naive, 1), NAIVE_IMAGES, 1)
        results["naive"]["images"] = NAIVE_IMAGES
        decoded = np.stack([decode_png(p, size=input_size) for p in paths])
        results["decode_only_one_process"] = _summary(
            _measure(lambda: [decode_png(p, size=input_size) for p in paths[:NAIVE_IMAGES]], 1),
            NAIVE_IMAGES,
            1,
        )
        results["model_only"] = _summary(
            _measure(lambda: predictor.probabilities(decoded), args.repeats), count, cores
        )
        runs = _measure(
            lambda: predict_folder(predictor, images, workers=args.workers, progress=False),
            args.repeats,
        )
        results["in_process"] = _summary(runs, count, cores)

        env = dict(os.environ)
        output = work / "output.csv"
        tail = [str(folder), "-o", str(output), "--workers", str(args.workers)]
        if args.batch_size:
            tail += ["--batch-size", str(args.batch_size)]
        imports = "torch, pandas, mnr.predict, mnr.data.cache, mnr.models"
        common = {"count": count, "cores": cores, "repeats": args.repeats}
        results["cli_checkpoint"] = _cli(
            ["predict", str(checkpoint), *tail], imports=imports, env=env, **common
        )
        rows = output.read_text().splitlines()
        assert len(rows) == count + 1, f"expected {count} rows, got {len(rows) - 1}"
        registered_env = {**env, **_register(checkpoint, work)}
        results["cli_registered"] = _cli(
            ["predict", "models:/bench@champion", *tail],
            imports=imports + ", mlflow.pyfunc",
            env=registered_env,
            **common,
        )
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)

    table = _markdown(results)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    if args.readme:
        from readme import write_section

        write_section("predict_speed", table, heading="Prediction speed")


_ROWS = {
    "naive": "naive loop (decode, then 1 image per forward)",
    "decode_only_one_process": "decode_png alone, 1 process",
    "model_only": "model alone (decoded images in memory)",
    "in_process": "`predict_folder` (parallel decode + batches)",
    "cli_checkpoint": "`mnr predict CHECKPOINT.pt` (imports excluded)",
    "cli_registered": "`mnr predict models:/NAME@champion` (imports excluded)",
}


def _markdown(results: dict) -> str:
    """The figures as a Markdown table, with the machine they were measured on."""
    machine = results["machine"]
    lines = [
        f"{results['images']} PNGs ({results['image_size']}), {results['model']} at "
        f"{results['input_size'][0]} x {results['input_size'][1]}, {results['workers']} decode processes, "
        f"batch {results['batch_size']}; {machine['cpus']} CPUs, load average "
        f"{machine['load_average_1m_at_start']} .. {machine['load_average_1m_at_end']} while measuring.",
        "",
        "| | images/s | CPU ms / image | images/s on idle cores (from CPU time) |",
        "|---|---:|---:|---:|",
    ]
    for key, title in _ROWS.items():
        r = results[key]
        lines.append(
            f"| {title} | {r['images_per_second']:.1f} | {r['cpu_ms_per_image']:.2f} | "
            f"{r['images_per_second_on_idle_cores']:.1f} on {r['idle_cores']} |"
        )
    for key in ("cli_checkpoint", "cli_registered"):
        r = results[key]
        lines.append("")
        lines.append(
            f"{_ROWS[key].split(' (')[0]}: imports take {r['import_wall_seconds']:.1f} s wall "
            f"({r['import_cpu_seconds']:.1f} s CPU); {r['images_per_second_with_startup']:.1f} images/s "
            "counting them."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
