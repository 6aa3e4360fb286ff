"""Held-out quality of every built-in variant: per drawing style, per instrument, the lowest
octave on its own, and on an instrument family it never heard.

    python3 benchmarks/quality.py [--models bn_cnn experiments/x.yaml ...] [--styles full ...]
                                  [--loio-models deep_cnn ...] [--no-loio] [--no-readme]

Trains each model with its shipped `experiments/<model>.yaml` (or the experiment file given) on
the built-in dataset drawn in each style (`--data builtin:STYLE`: the same notes, played by four
instrument families, as a full-bleed image, a librosa specshow figure and a matplotlib imshow
figure; the validation split chooses the best epoch), then scores the best weights on that
style's test split, which no training or selection step ever sees: accuracy, mean absolute error
in semitones, accuracy on the lowest octave and a bit (A0-B1) on its own, and accuracy per
instrument (from the generator's manifest).

Leave-one-instrument-out: for each family, a model is trained on the built-in full-style
training images of the other three and tested on every test image of the family it never heard.
Recipes that only fit the instruments they were chosen on fail here.

Writes benchmarks/results/quality.json and the README's "Held-out quality" tables. Goals: >= 99.5 %
and <= 0.01 semitones on every style, >= 98 % on A0-B1; >= 97 % on each left-out family (deep_cnn).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import torch

from mnr import settings
from mnr.config import resolve_config
from mnr.data.builtin import builtin_dataset
from mnr.data.folder import parse_truth
from mnr.data.manifest import MANIFEST_FILE, read_manifest, write_manifest
from mnr.data.synth.config import INSTRUMENT_NAMES, STYLES
from mnr.labels import label_to_name
from mnr.training import load_data, run_training

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["baseline_cnn", "bn_cnn", "deep_cnn", "resnet18", "experiments/baseline_cnn_tuned.yaml"]
LOIO_MODELS = ["bn_cnn", "deep_cnn", "resnet18"]
TARGET_ACCURACY, TARGET_MAE, TARGET_LOW, TARGET_LOIO = 0.995, 0.01, 0.98, 0.97


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--loio-models", nargs="*", default=LOIO_MODELS)
    parser.add_argument(
        "--no-loio", action="store_true", help="Skip the leave-one-instrument-out runs."
    )
    parser.add_argument("--no-readme", action="store_true", help="Do not rewrite the README table.")
    args = parser.parse_args()
    path = RESULTS / "quality.json"
    # Rows not re-measured now are kept, so one variant or style can be re-run on its own;
    # rows of the tables before the generator played several instruments are dropped.
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = [row for row in old.get("rows", []) if "instruments" in row]
    loio = old.get("loio", [])
    for style in args.styles:
        for name in args.models:
            rows = [row for row in rows if (row["model"], row["style"]) != (_label(name), style)]
            rows.append(measure(name, style))
            print(json.dumps(rows[-1]), flush=True)
            _write(rows, loio, readme=not args.no_readme)  # each finished run is recorded at once
    if not args.no_loio:
        for name in args.loio_models:
            for left_out in INSTRUMENT_NAMES:
                key = (_label(name), left_out)
                loio = [row for row in loio if (row["model"], row["left_out"]) != key]
                loio.append(measure_left_out(name, left_out))
                print(json.dumps(loio[-1]), flush=True)
                _write(rows, loio, readme=not args.no_readme)


def _label(name: str) -> str:
    return name if not name.endswith((".yaml", ".yml")) else f"{Path(name).stem}"


def _train(name: str, data_path: str) -> tuple[dict, dict[str, float], float, int]:
    """Train `name` (a model or an experiment file) on `data_path`: (row basics, final metrics,
    wall seconds, epochs)."""
    overrides = [
        "tracking.log_model=false",
        "tracking.experiment=quality",
        f"data.path={data_path}",
    ]
    if name.endswith((".yaml", ".yml")):
        config = resolve_config(config=name, overrides=overrides)
    else:
        config = resolve_config(model=name, overrides=overrides)
    data = load_data(config, progress=False)  # generated and decoded once, then from the cache
    started = time.perf_counter()
    result = run_training(config, data=data, track=False, progress=False)
    wall = time.perf_counter() - started
    basics = {
        "model": _label(name),
        "channels": data.layout.channels,
        "epochs": len(result.history),
        "wall_seconds": round(wall, 1),
        "best_val_acc": round(result.best_val_acc, 4),
    }
    return basics, result.final_metrics, wall, len(result.history)


def _per_instrument(metrics: dict[str, float], key: str) -> dict[str, float]:
    """`{instrument: value}` of the run's `test/instrument/<name>/<key>` metrics."""
    found = {}
    for metric, value in metrics.items():
        parts = metric.split("/")
        if metric.startswith("test/instrument/") and parts[3] == key:
            found[parts[2]] = round(value, 4)
    return found


def measure(name: str, style: str) -> dict:
    """Train `name` on the built-in `style` set; score its test split, whole and in parts."""
    basics, metrics, _, _ = _train(name, f"builtin:{style}")
    return {
        **basics,
        "style": style,
        "test_accuracy": round(metrics["test/accuracy"], 4),
        "test_semitone_mae": round(metrics["test/semitone_mae"], 4),
        "test_within_one_key": round(metrics["test/within_one_key"], 4),
        "test_accuracy_low": round(metrics["test/accuracy_low"], 4),
        "instruments": _per_instrument(metrics, "accuracy"),
        "instruments_low": _per_instrument(metrics, "accuracy_low"),
        "load_average": round(os.getloadavg()[0], 1),
    }


def measure_left_out(name: str, left_out: str) -> dict:
    """Train `name` on the built-in full set without `left_out`; test on that family alone."""
    root = loio_dataset(left_out)
    basics, metrics, _, _ = _train(name, str(root))
    return {
        **basics,
        "left_out": left_out,
        "test_accuracy": round(metrics["test/accuracy"], 4),
        "test_semitone_mae": round(metrics["test/semitone_mae"], 4),
        "test_accuracy_low": round(metrics["test/accuracy_low"], 4),
        "load_average": round(os.getloadavg()[0], 1),
    }


def loio_dataset(left_out: str) -> Path:
    """The built-in full set split by instrument, in the Kaggle layout: train/ holds the other
    families' training images, test/ every test image of `left_out`. Files are hard links
    (copies where links fail), made once under $MNR_HOME/bench/."""
    source = builtin_dataset(style="full", progress=False)
    root = settings.MNR_HOME.path() / "bench" / f"loio-{left_out}"
    if (root / "train" / "truth.txt").exists():
        return root
    manifest = read_manifest(source / MANIFEST_FILE)
    partial = root.with_name(root.name + ".partial")
    for folder in (partial / "train", partial / "test"):
        folder.mkdir(parents=True, exist_ok=True)
    truths = {  # the generator's own truth files: parse_truth finds no problems in them
        "train": {name: label for name, label, _ in parse_truth(source / "train" / "truth.txt")[0]},
        "test": {name: label for name, label, _ in parse_truth(source / "test_truth.txt")[0]},
    }
    kept: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    rows = []
    for (split, name), instrument in sorted(manifest.items()):
        if (instrument == left_out) != (split == "test"):
            continue
        target = partial / split / name
        if not target.exists():
            try:
                os.link(source / split / name, target)
            except OSError:
                shutil.copyfile(source / split / name, target)
        label = truths[split][name]
        kept[split].append((name, label))
        rows.append((split, name, label, label_to_name(label), instrument))
    for split, truth in (
        ("train", partial / "train" / "truth.txt"),
        ("test", partial / "test_truth.txt"),
    ):
        truth.write_text("".join(f"{name} {label}\n" for name, label in kept[split]))
    write_manifest(partial / MANIFEST_FILE, rows)
    partial.rename(root)
    return root


def _machine(rows: list[dict], loio: list[dict]) -> str:
    load = max((row.get("load_average", 0.0) for row in [*rows, *loio]), default=os.getloadavg()[0])
    machine = (
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"load average at most {load:.1f} at the end of each run"
    )
    if load > (os.cpu_count() or 1) + 0.5:  # more runnable work than cores: someone else ran
        machine += " (other jobs shared the machine: wall times are inflated)"
    return machine


def _write(rows: list[dict], loio: list[dict], *, readme: bool) -> None:
    """Write the JSON and (unless told not to) the README tables; called after every run."""
    machine = _machine(rows, loio)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(
        json.dumps(
            {"machine": machine, "date": str(date.today()), "rows": rows, "loio": loio}, indent=2
        )
        + "\n"
    )
    table = tables(rows, loio, machine)
    print(table)
    if readme:
        from readme import write_section

        write_section("quality", table, heading="Held-out quality")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def tables(rows: list[dict], loio: list[dict], machine: str) -> str:
    """The README's three tables: per style, per instrument and A0-B1, left-out instrument."""
    styles = [style for style in STYLES if any(row["style"] == style for row in rows)]
    models = list(dict.fromkeys(row["model"] for row in rows))
    cell = {(row["model"], row["style"]): row for row in rows}
    lines = [
        "Held-out test split of the built-in dataset (880 images never used for training or "
        "selection; four instrument families, 220 images each; 150 of them A0-B1) drawn in each "
        f"style. {machine}, {date.today()}. Made by `python3 benchmarks/quality.py`.",
        "",
        "**Per style**: test accuracy / mean error in semitones / accuracy on A0-B1 (epochs, wall "
        "time). Goal: >= 99.5 %, <= 0.01 semitones and >= 98 % on A0-B1 (met: **bold**).",
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
            text = (
                f"{row['test_accuracy']:.2%} / {row['test_semitone_mae']:.3f} / "
                f"{row['test_accuracy_low']:.1%}"
            )
            met = (
                row["test_accuracy"] >= TARGET_ACCURACY
                and row["test_semitone_mae"] <= TARGET_MAE
                and row["test_accuracy_low"] >= TARGET_LOW
            )
            text = f"**{text}**" if met else text
            cells.append(f"{text} ({row['epochs']} ep, {row['wall_seconds'] / 60:.1f} min)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Per instrument**: test accuracy on each family's 220 images (its A0-B1 images in "
        "brackets), every style.",
        "",
        "| model | style | " + " | ".join(INSTRUMENT_NAMES) + " |",
        "| --- | --- |" + " ---: |" * len(INSTRUMENT_NAMES),
    ]
    for model in models:
        for style in styles:
            row = cell.get((model, style))
            if row is None:
                continue
            cells = [
                f"{_pct(row['instruments'].get(name))} ({_pct(row['instruments_low'].get(name))})"
                for name in INSTRUMENT_NAMES
            ]
            lines.append(f"| {model} | {style} | " + " | ".join(cells) + " |")
    if loio:
        lines += [
            "",
            "**Leave one instrument out** (full style): trained on the other three families, "
            "tested on every test image of the one it never heard: accuracy (A0-B1 in brackets). "
            "Goal: >= 97 % for deep_cnn on each family.",
            "",
            "| model | " + " | ".join(f"{name} left out" for name in INSTRUMENT_NAMES) + " |",
            "| --- |" + " ---: |" * len(INSTRUMENT_NAMES),
        ]
        by = {(row["model"], row["left_out"]): row for row in loio}
        for model in dict.fromkeys(row["model"] for row in loio):
            cells = []
            for name in INSTRUMENT_NAMES:
                row = by.get((model, name))
                if row is None:
                    cells.append("-")
                    continue
                text = f"{row['test_accuracy']:.2%} ({row['test_accuracy_low']:.1%})"
                cells.append(f"**{text}**" if row["test_accuracy"] >= TARGET_LOIO else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
