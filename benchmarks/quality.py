"""Held-out quality of every built-in variant, trained with its experiment config.

    python3 benchmarks/quality.py [--models baseline_cnn bn_cnn experiments/x.yaml ...] [--no-readme]

Trains each model with `experiments/<model>.yaml` (or the experiment file given) on the built-in
dataset (validation split for
model selection), then scores the best weights on the built-in test split, which no training or
selection step ever sees: accuracy and mean absolute error in semitones. Writes
benchmarks/results/quality.json and the README's "held-out quality" table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from mnr.config import resolve_config
from mnr.training import load_data, run_training

RESULTS = Path(__file__).resolve().parent / "results"
# The four variants with their experiment configs, then the seed's net with the learning rate and
# batch size `mnr tune` found (benchmarks/tune_speed.py).
MODELS = ["baseline_cnn", "bn_cnn", "deep_cnn", "resnet18", "experiments/baseline_cnn_tuned.yaml"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--no-readme", action="store_true", help="Do not rewrite the README table.")
    args = parser.parse_args()
    path = RESULTS / "quality.json"
    # Rows of models not re-measured now are kept, so one variant can be re-run on its own.
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for name in args.models:
        overrides = ["tracking.log_model=false", "tracking.experiment=quality"]
        if name.endswith((".yaml", ".yml")):
            config = resolve_config(config=name, overrides=overrides)
        else:
            config = resolve_config(model=name, overrides=overrides)
        data = load_data(config, progress=False)  # the cache is warm after the first model
        started = time.perf_counter()
        result = run_training(config, data=data, track=False, progress=False)
        wall = time.perf_counter() - started
        metrics = result.final_metrics
        label = (
            config.model.name
            if name == config.model.name
            else f"{config.model.name} ({Path(name).name})"
        )
        rows = [row for row in rows if row["model"] != label]
        rows.append(
            {
                "model": label,
                "epochs": len(result.history),
                "wall_seconds": round(wall, 1),
                "best_val_acc": round(result.best_val_acc, 4),
                "test_accuracy": round(metrics["test_accuracy"], 4),
                "test_semitone_mae": round(metrics["test_semitone_mae"], 4),
                "test_within_one_key": round(metrics["test_within_one_key"], 4),
                "load_average": round(os.getloadavg()[0], 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        _write(rows, readme=not args.no_readme)  # each finished model is recorded at once


def _write(rows: list[dict], *, readme: bool) -> None:
    """Write the JSON and (unless told not to) the README table; called after every model."""
    load = max(row.get("load_average", os.getloadavg()[0]) for row in rows)
    machine = (
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"load average at most {load:.1f} at the end of each model"
    )
    if (
        load > (os.cpu_count() or 1) + 0.5
    ):  # more runnable work than cores: someone else was running
        machine += " (other jobs shared the machine: wall times are inflated)"

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(
        json.dumps({"machine": machine, "date": str(date.today()), "rows": rows}, indent=2) + "\n"
    )
    table = [
        f"Held-out test split of the built-in dataset (880 images never used for training or selection); "
        f"{machine}, {date.today()}. Made by `python3 benchmarks/quality.py`.",
        "",
        "| model | epochs | wall time | best val acc | test accuracy | mean error (semitones) | within one key |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        table.append(
            f"| {row['model']} | {row['epochs']} | {row['wall_seconds'] / 60:.1f} min | {row['best_val_acc']:.2%} "
            f"| {row['test_accuracy']:.2%} | {row['test_semitone_mae']:.3f} | {row['test_within_one_key']:.2%} |"
        )
    print("\n".join(table))
    if readme:
        from readme import write_section

        write_section("quality", "\n".join(table), heading="Held-out quality")


if __name__ == "__main__":
    main()
