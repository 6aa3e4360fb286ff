"""How long `mnr tune` takes for a full study on this machine, and how good its best trial is.

Runs `python -m mnr tune --model MODEL --trials N` as a subprocess in a fresh temporary working
directory (fresh study, fresh MLflow sqlite store) on the built-in dataset, then reads the study
back and reports wall time, CPU time, trial states, epochs trained and the best value and params.
The built-in dataset and its decode cache are prepared first and timed apart: they are paid once
per machine, not per study. The load average is recorded too, since a shared machine's numbers
mean little without it.

    python benchmarks/tune_speed.py                       # 30 trials of baseline_cnn
    python benchmarks/tune_speed.py --trials 10 -- --pruner hyperband --epochs 4

The best trial is compared with the best validation accuracy that the model's full experiment
reaches, read from benchmarks/results/quality.json (written by `benchmarks/quality.py`, same
data and split). Writes benchmarks/results/tune_speed.json and .md, and the README's "tune"
section (unless --no-readme).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def prepare(model: str) -> float:
    """Generate the built-in dataset and fill the decode cache (once per machine); seconds taken."""
    sys.path.insert(0, str(REPO))
    from mnr.config import resolve_config
    from mnr.training import load_data

    started = time.perf_counter()
    load_data(resolve_config(model=model), progress=False)
    return time.perf_counter() - started


def run_study(
    model: str, trials: int, extra: list[str], workdir: Path, *, register: str | None
) -> dict:
    """Run the study as a user would; return timings and what the study holds afterwards.

    With `register`, the command ends as `mnr tune --register NAME` does: the best config
    retrained for the experiment's full epochs and registered; its held-out test score is read
    back from that run (the clock includes the retrain)."""
    import optuna

    study_name = f"bench-{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    command = [
        sys.executable,
        "-m",
        "mnr",
        "tune",
        "--model",
        model,
        "--trials",
        str(trials),
        "--study-name",
        study_name,
        *(["--register", register] if register else []),
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "MNR_CHECKPOINT_DIR": str(workdir / "checkpoints"),
    }
    env.pop("MLFLOW_RUN_ID", None)
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    (workdir / "tune.log").write_text(completed.stdout + completed.stderr)
    if completed.returncode not in (0, 1):  # 1: no trial completed, still a result
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"mnr tune failed with exit code {completed.returncode}")

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / f"{study_name}.journal"))
    )
    study = optuna.load_study(study_name=study_name, storage=storage)
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    durations = [t.duration.total_seconds() for t in study.trials if t.duration is not None]
    held_out = _registered_scores(env["MLFLOW_TRACKING_URI"], register) if register else {}
    return {
        "command": " ".join(command[1:]),
        "study": study_name,
        "exit_code": completed.returncode,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(
            (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime),
            1,
        ),
        "trials": len(study.trials),
        "complete": states.get("COMPLETE", 0),
        "pruned": states.get("PRUNED", 0),
        "failed": states.get("FAIL", 0),
        "epochs_trained": sum(len(t.intermediate_values) for t in study.trials),
        "trial_seconds_total": round(sum(durations), 1),
        "trial_seconds_mean": round(sum(durations) / len(durations), 1) if durations else None,
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "registered": register,
        "registered_test_accuracy": held_out.get("test/accuracy"),
        "registered_test_semitone_mae": held_out.get("test/semitone_mae"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="baseline_cnn")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary working directory.")
    parser.add_argument(
        "--no-readme", action="store_true", help="Do not rewrite the README section."
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="Re-write the .md and README from the last tune_speed.json.",
    )
    parser.add_argument(
        "--register",
        default="tune-best",
        help="Registered name for the retrained best config ('' for no retrain).",
    )
    parser.add_argument("extra", nargs="*", help="More `mnr tune` options, after --.")
    args = parser.parse_args()
    if args.publish_only:
        publish(json.loads((RESULTS / "tune_speed.json").read_text()), readme=not args.no_readme)
        return

    prepare_seconds = prepare(args.model)
    workdir = Path(tempfile.mkdtemp(prefix="mnr-tune-speed-"))
    try:
        result = run_study(
            args.model, args.trials, args.extra, workdir, register=args.register or None
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        model=args.model,
        prepare_seconds=round(prepare_seconds, 1),
        cores=os.cpu_count(),
        machine=f"{platform.machine()} {platform.processor() or platform.system()}",
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        workdir=str(workdir) if args.keep else None,
    )
    result["full_experiment_best_val_acc"] = full_experiment_best(args.model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tune_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    publish(result, readme=not args.no_readme)


def _registered_scores(tracking_uri: str, name: str) -> dict[str, float]:
    """The held-out metrics of the run behind version 1 of registered model `name`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return {}
    return dict(client.get_run(versions[0].run_id).data.metrics)


def publish(result: dict, *, readme: bool) -> None:
    """Write tune_speed.md and (unless told not to) the README's "tune" section from `result`."""
    best, reference = result["best_value"], result.get("full_experiment_best_val_acc")
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in (result["best_params"] or {}).items()
    )
    versus = (
        f"{(best - reference) * 100:+.2f}" if reference is not None and best is not None else "-"
    )
    table = "\n".join(
        [
            "| model | trials | wall | CPU | complete/pruned/failed | epochs trained | best trial val_acc "
            "| full experiment best val_acc | best trial minus full experiment (points) | best params "
            "| registered best: held-out test acc | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {result['model']} | {result['trials']} | {result['wall_seconds'] / 60:.1f} min "
            f"| {result['cpu_seconds'] / 60:.1f} min | {result['complete']}/{result['pruned']}/{result['failed']} "
            f"| {result['epochs_trained']} | {best if best is None else f'{best:.4f}'} | {reference if reference is not None else '-'} "
            f"| {versus} | {params} | {_percent(result.get('registered_test_accuracy'))} "
            f"| {result['cores']} cores, load {result['load_average_before'][0]:.1f}"
            f"->{result['load_average_after'][0]:.1f} |",
        ]
    )
    (RESULTS / "tune_speed.md").write_text(table + "\n")
    print(table)
    if readme:
        from readme import write_section

        write_section(
            "tune",
            f"Measured by `python3 benchmarks/tune_speed.py`: `{result['command']}` on the built-in set in a fresh "
            "folder (fresh journal study and MLflow store; the decode cache already built). The full experiment "
            "is the model's `experiments/*.yaml` trained for all its epochs (`benchmarks/quality.py`, same split); "
            "The wall time includes `--register`'s retrain of the best config. Goal: 30 trials and the "
            "retrain in at most 3 minutes, the registered config >= 99.5 % on the held-out test split.\n\n"
            + table,
            heading="Tuning speed",
        )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def full_experiment_best(model: str) -> float | None:
    """Best val accuracy of `model`'s full experiment in results/quality.json, if measured."""
    path = RESULTS / "quality.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["rows"]
    return next(
        (
            row["best_val_acc"]
            for row in rows
            if row["model"] == model and row.get("style", "full") == "full"
        ),
        None,
    )


if __name__ == "__main__":
    main()
