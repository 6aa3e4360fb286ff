"""Held-out quality of every built-in variant on every built-in style, each with its shipped config.

    python3 benchmarks/quality.py [--models baseline_cnn experiments/x.yaml ...] [--styles full ...] [--no-readme]

Trains each model with `experiments/<model>.yaml` (or the experiment file given) on the built-in
dataset drawn in each style (`--data builtin:STYLE`: the same piano notes as a full-bleed image,
a librosa specshow figure and a matplotlib imshow figure; the validation split for model
selection), then scores the best weights on that style's test split, which no training or
selection step ever sees: accuracy and mean absolute error in semitones. Writes
benchmarks/results/quality.json and the README's "held-out quality" table. Goal: every variant
>= 99.5 % and <= 0.01 semitones on every style.
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
from mnr.data.synth.config import STYLES
from mnr.training import load_data, run_training

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["baseline_cnn", "bn_cnn", "deep_cnn", "resnet18"]
TARGET_ACCURACY, TARGET_MAE = 0.995, 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--no-readme", action="store_true", help="Do not rewrite the README table.")
    args = parser.parse_args()
    path = RESULTS / "quality.json"
    # Rows not re-measured now are kept, so one variant or style can be re-run on its own.
    rows = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    rows = [row for row in rows if "style" in row]  # rows of the one-style table before styles
    for style in args.styles:
        for name in args.models:
            rows = [row for row in rows if (row["model"], row["style"]) != (_label(name), style)]
            rows.append(measure(name, style))
            print(json.dumps(rows[-1]), flush=True)
            _write(rows, readme=not args.no_readme)  # each finished run is recorded at once


def _label(name: str) -> str:
    return name if not name.endswith((".yaml", ".yml")) else f"{Path(name).stem}"


def measure(name: str, style: str) -> dict:
    """Train `name` (a model or an experiment file) on the built-in `style` set; score its test."""
    overrides = [
        "tracking.log_model=false",
        "tracking.experiment=quality",
        f"data.path=builtin:{style}",
    ]
    if name.endswith((".yaml", ".yml")):
        config = resolve_config(config=name, overrides=overrides)
    else:
        config = resolve_config(model=name, overrides=overrides)
    data = load_data(config, progress=False)  # generated and decoded once, then from the cache
    started = time.perf_counter()
    result = run_training(config, data=data, track=False, progress=False)
    wall = time.perf_counter() - started
    metrics = result.final_metrics
    return {
        "model": _label(name),
        "style": style,
        "channels": data.layout.channels,
        "epochs": len(result.history),
        "wall_seconds": round(wall, 1),
        "best_val_acc": round(result.best_val_acc, 4),
        "test_accuracy": round(metrics["test/accuracy"], 4),
        "test_semitone_mae": round(metrics["test/semitone_mae"], 4),
        "test_within_one_key": round(metrics["test/within_one_key"], 4),
        "load_average": round(os.getloadavg()[0], 1),
    }


def _write(rows: list[dict], *, readme: bool) -> None:
    """Write the JSON and (unless told not to) the README table; called after every run."""
    load = max(row.get("load_average", os.getloadavg()[0]) for row in rows)
    machine = (
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"load average at most {load:.1f} at the end of each run"
    )
    if (
        load > (os.cpu_count() or 1) + 0.5
    ):  # more runnable work than cores: someone else was running
        machine += " (other jobs shared the machine: wall times are inflated)"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(
        json.dumps({"machine": machine, "date": str(date.today()), "rows": rows}, indent=2) + "\n"
    )
    table = _table(rows, machine)
    print(table)
    if readme:
        from readme import write_section

        write_section("quality", table, heading="Held-out quality")


def _table(rows: list[dict], machine: str) -> str:
    styles = [style for style in STYLES if any(row["style"] == style for row in rows)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    cell = {(row["model"], row["style"]): row for row in rows}
    lines = [
        "Held-out test split of the built-in dataset drawn in each style (880 images never used for "
        f"training or selection); each cell: test accuracy / mean error in semitones (epochs, wall time). "
        f"{machine}, {date.today()}. Made by `python3 benchmarks/quality.py`; goal: >= 99.5 % and "
        "<= 0.01 semitones everywhere (met: **bold**).",
        "",
        "| model | " + " | ".join(styles) + " |",
        "| --- |" + " ---: |" * len(styles),
    ]
    for model in models:
        cells = []
        for style in styles:
            row = cell.get((model, style))
            if row is None:
                cells.append("-")
                continue
            text = f"{row['test_accuracy']:.2%} / {row['test_semitone_mae']:.3f}"
            met = row["test_accuracy"] >= TARGET_ACCURACY and row["test_semitone_mae"] <= TARGET_MAE
            text = f"**{text}**" if met else text
            cells.append(f"{text} ({row['epochs']} ep, {row['wall_seconds'] / 60:.1f} min)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
