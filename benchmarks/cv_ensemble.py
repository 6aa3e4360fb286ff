"""Cross-validation and the folds' ensemble against one model, with and without TTA.

    python3 benchmarks/cv_ensemble.py [--models deep_cnn bn_cnn] [--styles full specshow imshow]
                                      [--folds 5] [--tta 4] [--no-readme]

For each model and built-in style, with its shipped config (`experiments/MODEL.yaml`), in a fresh
MLflow store and from a warm decode cache:

- `cross_validate(folds=5, register=...)`, as `mnr cv --folds 5 --register NAME` runs it: its
  wall time (every fold trained, the out-of-fold report, the ensemble's test score, the ensemble
  logged and registered), the folds' mean validation accuracy and its standard deviation, and the
  out-of-fold accuracy;
- one model trained as `mnr train` trains it (the 80/20 split);
- on the style's held-out test split (880 images no fold ever saw): accuracy and mean error in
  semitones of the single model and of the ensemble, each without TTA and with `--tta` time
  shifts;
- the registered ensemble predicting the test folder from its PNG files, decode included, as
  `mnr predict models:/NAME/1 FOLDER` does (`predict_model_on_folder`, the second of two calls):
  images per second. Goal: >= 200 images/s for 5 folds of deep_cnn on 2 cores.

Goal for the wall time: 5-fold deep_cnn in <= 3 minutes on this 2-core machine. Writes
benchmarks/results/cv_ensemble.json and the README's "cv" table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "cv_ensemble.json"
CV_GOAL_SECONDS, RATE_GOAL = 180.0, 200.0


def _scores(predictor, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from mnr import metrics as pitch_metrics

    predicted = predictor.probabilities(images).argmax(1)
    return {
        "accuracy": round(float(np.mean(predicted == labels)), 4),
        "semitone_mae": round(pitch_metrics.mean_abs_semitone_error(labels, predicted), 4),
    }


def measure(model: str, style: str, *, folds: int, tta: int) -> dict:
    from mnr.config import resolve_config
    from mnr.crossval import cross_validate
    from mnr.predict import Predictor, predict_model_on_folder
    from mnr.training import load_data, run_training

    config = resolve_config(
        model=model,
        overrides=[f"data.path=builtin:{style}", f"tracking.experiment=cv-{model}-{style}"],
    )
    data = load_data(config, progress=False)  # warm: generated, decoded and cached before the clock
    name = f"cv-{model}-{style}"
    started = time.perf_counter()
    cv = cross_validate(config, folds=folds, register=name, progress=False)
    cv_seconds = time.perf_counter() - started
    if any(fold.reused for fold in cv.folds):
        raise SystemExit("a fold was reused: run in a fresh store (this script makes one)")

    single = run_training(config, data=data, track=False, progress=False)
    fold_predictor = Predictor.from_checkpoints(
        [Path(os.environ["MNR_CHECKPOINT_DIR"]) / fold.run_id / "best.pt" for fold in cv.folds]
    )
    one = Predictor(single.model)
    row: dict = {
        "model": model,
        "style": style,
        "folds": folds,
        "epochs": config.train.epochs,
        "cv_seconds": round(cv_seconds, 1),
        "cv_accuracy_mean": round(cv.summary["cv/accuracy_mean"], 4),
        "cv_accuracy_std": round(cv.summary["cv/accuracy_std"], 4),
        "oof_accuracy": round(cv.summary["cv/oof_accuracy"], 4),
        "tta": tta,
    }
    for label, predictor in (("single", one), ("ensemble", fold_predictor)):
        for shifts in (1, tta):
            scores = _scores(predictor.with_options(tta=shifts), data.test_images, data.test_labels)
            suffix = "" if shifts == 1 else "_tta"
            row[f"{label}{suffix}_accuracy"] = scores["accuracy"]
            row[f"{label}{suffix}_semitone_mae"] = scores["semitone_mae"]

    rates = []
    for _ in range(2):  # the first call also warms the page cache and the model download
        started = time.perf_counter()
        predicted = predict_model_on_folder(f"models:/{name}/1", data.paths.test, progress=False)
        rates.append(len(predicted.filenames) / (time.perf_counter() - started))
    row["ensemble_images_per_second"] = round(rates[-1], 1)
    row["load_average"] = round(os.getloadavg()[0], 2)
    return row


def _table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| model | style | cv wall | fold val acc (mean ± sd) | out-of-fold acc "
        "| single | single + TTA | ensemble | ensemble + TTA | ensemble img/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = [
            f"{r[f'{kind}_accuracy']:.2%} / {r[f'{kind}_semitone_mae']:.3f}"
            for kind in ("single", "single_tta", "ensemble", "ensemble_tta")
        ]
        lines.append(
            f"| {r['model']} | {r['style']} | {r['cv_seconds'] / 60:.1f} min "
            f"| {r['cv_accuracy_mean']:.2%} ± {r['cv_accuracy_std']:.2%} | {r['oof_accuracy']:.2%} | "
            + " | ".join(cells)
            + f" | {r['ensemble_images_per_second']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deep_cnn"])
    parser.add_argument("--styles", nargs="+", default=["full", "specshow", "imshow"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    import torch

    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    with tempfile.TemporaryDirectory(prefix="mnr-cv-bench-") as work:
        # a fresh store and checkpoint folder: nothing is reused from an earlier run
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
        os.environ["MNR_CHECKPOINT_DIR"] = f"{work}/checkpoints"
        load_start = os.getloadavg()[0]
        for style in args.styles:
            for model in args.models:
                row = measure(model, style, folds=args.folds, tta=args.tta)
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if (r["model"], r["style"]) != (model, style)] + [row]
                RESULTS.write_text(
                    json.dumps({"date": str(date.today()), "rows": rows}, indent=2) + "\n"
                )
    load_end = os.getloadavg()[0]
    header = (
        f"Measured by `python3 benchmarks/cv_ensemble.py` on {date.today()} ({os.cpu_count()} cores, "
        f"torch {torch.__version__}, CPU, load average {load_start:.2f} at the start and "
        f"{load_end:.2f} at the end). Each model with its shipped config; the cross-validation "
        f"is `mnr cv --folds {args.folds} --register NAME` (every fold trained, the reports, the "
        "ensemble logged and registered) from a warm decode cache. Test cells: accuracy / mean "
        "error in semitones on the style's held-out test split (880 images), TTA = "
        f"{args.tta} shifts along time. Ensemble img/s: `mnr predict` of the test folder's PNGs "
        f"with the registered ensemble, decode included. Goals: 5-fold deep_cnn <= "
        f"{CV_GOAL_SECONDS / 60:.0f} min, >= {RATE_GOAL:.0f} img/s."
    )
    table = _table(rows, header)
    print(table)
    if not args.no_readme:
        from readme import write_section

        write_section("cv", table, heading="Cross-validation and ensembles: measured")


if __name__ == "__main__":
    main()
