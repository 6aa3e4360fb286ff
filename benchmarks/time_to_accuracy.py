"""Time to a model one can trust: from a warm cache to 99.5 % held-out (validation) accuracy.

    python3 benchmarks/time_to_accuracy.py [--models bn_cnn deep_cnn] [--styles full specshow imshow] [--no-readme]

For each built-in style and each model, its shipped config (`experiments/MODEL.yaml`) trains with
`train.target=0.995`, which stops the run at the first epoch whose validation accuracy reaches
99.5 %; the clock runs from `run_training` being called (the images come from the decode cache,
warmed first) until it returns, final evaluation on the test split included, tracking off. The
test accuracy is that of the weights that reached the target, on 880 images never used for
training or selection. Goal: <= 15 s on this 2-core machine on every style.

Writes benchmarks/results/time_to_accuracy.json and the README's "time to 99.5 %" table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import torch

from mnr.config import resolve_config
from mnr.data.synth.config import STYLES
from mnr.training import load_data, run_training

RESULTS = Path(__file__).resolve().parent / "results" / "time_to_accuracy.json"
TARGET, GOAL_SECONDS = 0.995, 15.0


def measure(model: str, style: str) -> dict:
    config = resolve_config(
        model=model,
        overrides=[
            f"data.path=builtin:{style}",
            f"train.target={TARGET}",
            "tracking.log_model=false",
        ],
    )
    data = load_data(config, progress=False)  # warm: generated, decoded and cached before the clock
    started = time.perf_counter()
    result = run_training(config, data=data, track=False, progress=False, save_checkpoints=True)
    seconds = time.perf_counter() - started
    best = result.best_val_acc
    return {
        "model": model,
        "style": style,
        "reached": best >= TARGET,
        "epochs": len(result.history),
        "max_epochs": config.train.epochs,
        "seconds": round(seconds, 1),
        "best_val_acc": round(best, 4),
        "test_accuracy": round(result.final_metrics["test/accuracy"], 4),
        "test_semitone_mae": round(result.final_metrics["test/semitone_mae"], 4),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bn_cnn", "deep_cnn"])
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    for style in args.styles:  # warm every cache first, so no measured run decodes
        load_data(
            resolve_config(model=args.models[0], overrides=[f"data.path=builtin:{style}"]),
            progress=False,
        )
    rows = [measure(model, style) for style in args.styles for model in args.models]
    result = {
        "date": str(date.today()),
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.no_readme:
        from readme import write_section

        write_section("time-to-accuracy", _markdown(result), heading="Time to 99.5 %")


def _markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        f"Measured by `python3 benchmarks/time_to_accuracy.py` ({result['cores']} cores, torch {result['torch']}, "
        f"{result['date']}): each shipped config with `train.target=0.995`, from a warm cache, tracking off. "
        f"Goal: <= {GOAL_SECONDS:.0f} s to 99.5 % validation accuracy on every style.",
        "",
        "| style | model | seconds | epochs (of) | best val acc | test accuracy | semitone error | load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        seconds = f"{r['seconds']:.1f}" if r["reached"] else f"not reached ({r['seconds']:.1f})"
        lines.append(
            f"| {r['style']} | {r['model']} | {seconds} | {r['epochs']} ({r['max_epochs']}) | {r['best_val_acc']:.2%} "
            f"| {r['test_accuracy']:.2%} | {r['test_semitone_mae']:.3f} | {r['load_average']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
