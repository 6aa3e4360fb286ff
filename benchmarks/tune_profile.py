"""Where a tuning study's time goes: one `mnr tune` study under cProfile, split into parts.

    python3 benchmarks/tune_profile.py                 # 10 trials of baseline_cnn, one process
    python3 benchmarks/tune_profile.py --trials 6 --model bn_cnn

Runs `mnr.tuning.tune` in this process (`--jobs 1`, so that one profile sees every trial) in a
fresh temporary folder on the built-in set, the decode cache already built, and splits the wall
time into: training steps, validation, MLflow (creating, tagging and ending runs; params;
per-epoch metrics; the layout record), checkpoints, building model and optimiser, Optuna (the
sampler, the pruner and the journal), the study's record on the parent run (summary and plots),
data set-up, and the rest. Each part is the cumulative time of the functions listed for it in
`PARTS`, which never call one another, so the parts add up. Writes
benchmarks/results/tune_profile.md and the README's "tune-profile" section (unless --no-readme).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

# part -> (file suffix, function name) of the functions whose cumulative time is that part
PARTS: dict[str, list[tuple[str, str]]] = {
    "training steps": [("mnr/engine.py", "train_one_epoch")],
    "validation": [("mnr/engine.py", "evaluate")],
    "MLflow: runs (create, reopen, end), tags, params, per-epoch metrics": [
        ("mnr/tracking/runs.py", "tracked_run"),
        ("mnr/tracking/runs.py", "set_tags"),
        ("mnr/tracking/runs.py", "set_run_status"),
        ("mnr/tracking/runs.py", "find_runs"),
        ("mnr/tracking/recording.py", "log_params"),
        ("mnr/tracking/recording.py", "log_metrics"),
        ("mnr/tracking/recording.py", "log_dataset"),
        ("mnr/tracking/logger.py", "on_epoch_end"),
        ("mnr/tracking/logger.py", "__init__"),
    ],
    "MLflow: layout record and preview": [("mnr/run_record.py", "log_layout")],
    "checkpoints": [("mnr/callbacks.py", "on_epoch_end"), ("mnr/checkpoint.py", "save_checkpoint")],
    "model and optimiser": [("mnr/training.py", "build_model"), ("mnr/optim.py", "make_optimizer")],
    "Optuna: sampler, pruner, journal": [
        ("optuna/study/_optimize.py", "_run_trial"),  # minus the objective, below
    ],
    "study record on the parent run (summary, plots)": [("mnr/tuning/report.py", "log_study")],
    "data set-up (decode cache, split)": [("mnr/training.py", "load_data")],
}
OBJECTIVE = ("mnr/tuning/objective.py", "__call__")


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(
        value[3]
        for (file, _, function), value in stats.stats.items()  # type: ignore[attr-defined]
        if file.endswith(suffix) and function == name
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="baseline_cnn")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import optuna

    from mnr.config import resolve_config
    from mnr.training import load_data
    from mnr.tuning import study_spec, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = resolve_config(model=args.model)
    load_data(config, progress=False)  # the decode cache, paid once per machine
    work = Path(tempfile.mkdtemp(prefix="mnr-tune-profile-"))
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    profile = cProfile.Profile()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    profile.enable()
    study = study_spec(config, name="profile")
    result = tune(config, study, trials=args.trials, jobs=1, progress=False)
    profile.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    parts = {part: sum(cumulative(stats, *f) for f in fns) for part, fns in PARTS.items()}
    optuna_part = "Optuna: sampler, pruner, journal"
    parts[optuna_part] -= cumulative(stats, *OBJECTIVE)
    parts["the rest (process, imports, objective glue)"] = wall - sum(parts.values())
    epochs = sum(len(t.intermediate_values) for t in result.study.trials)
    lines = [
        f"`python3 benchmarks/tune_profile.py --model {args.model} --trials {args.trials}`: "
        f"{args.trials} trials, {epochs} epochs, {wall:.0f} s wall in one process under cProfile "
        f"({os.cpu_count()} cores, load {load:.1f} -> {os.getloadavg()[0]:.1f}).",
        "",
        "| part | seconds | share | per trial |",
        "|---|---:|---:|---:|",
    ]
    for part, seconds in parts.items():
        lines.append(
            f"| {part} | {seconds:.1f} | {seconds / wall:.0%} | {seconds / args.trials:.2f} s |"
        )
    table = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tune_profile.md").write_text(table + "\n")
    print(table)
    if not args.no_readme:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from readme import write_section

        write_section("tune-profile", table, heading="Where a tuning study's time goes")


if __name__ == "__main__":
    main()
