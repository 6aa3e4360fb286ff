"""How long `mnr tune` takes for a full study on this machine, and how good its pick is.

Runs `python -m mnr tune --model MODEL --data builtin:STYLE --trials N --register NAME [--folds K]`
as a subprocess in a fresh temporary working directory (fresh study, fresh MLflow sqlite store),
then reads the study back and reports wall time, CPU time, trial states, epochs trained, the best
value and params, and the registered model's held-out test accuracy (the test split of that
style, which no trial and no retrain sees). The built-in dataset and its decode cache are
prepared first and timed apart: they are paid once per machine, not per study. The load average
is recorded too, since a shared machine's numbers mean little without it.

    python3 benchmarks/tune_speed.py                                  # baseline_cnn, full style
    python3 benchmarks/tune_speed.py --models baseline_cnn bn_cnn --styles full imshow --folds 0 3
    python3 benchmarks/tune_speed.py --trials 10 -- --pruner hyperband --epochs 4

Each (model, style, folds) is one row of benchmarks/results/tune_speed.json; rows not measured
again are kept, so one can be re-run on its own. Writes tune_speed.md and the README's "tune"
section (unless --no-readme). Goals: 30 trials and the retrain in at most 3 minutes (6 with
--folds 3) for baseline_cnn, the registered model >= 99.5 % on every style, and the --folds 3
pick at least as good on the held-out test split as the single-split pick.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def prepare(model: str, style: str) -> float:
    """Generate the built-in dataset and fill the decode cache (once per machine); seconds taken."""
    sys.path.insert(0, str(REPO))
    from mnr.config import resolve_config
    from mnr.training import load_data

    started = time.perf_counter()
    load_data(
        resolve_config(model=model, options={"data.path": f"builtin:{style}"}), progress=False
    )
    return time.perf_counter() - started


def run_study(
    model: str,
    trials: int,
    extra: list[str],
    workdir: Path,
    *,
    style: str,
    folds: int,
    jobs: int,
    register: str | None,
) -> dict:
    """Run the study as a user would; return timings and what the study holds afterwards.

    With `register`, the command ends as `mnr tune --register NAME` does: the best config
    retrained for the experiment's full epochs and registered; its held-out test score is read
    back from that run (the clock includes the retrain)."""
    import optuna

    study_name = f"bench-{model}-{style}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
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
        "--data",
        f"builtin:{style}",
        *(["--folds", str(folds)] if folds else []),
        *(["--jobs", str(jobs)] if jobs else []),
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
        "model": model,
        "style": style,
        "folds": folds,
        "jobs": jobs,
        "command": " ".join(["mnr", *command[3:]]),
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
        "best_cv_std": _std(best.user_attrs.get("fold_values")) if best else None,
        "registered": register,
        "registered_test_accuracy": held_out.get("test/accuracy"),
        "registered_test_semitone_mae": held_out.get("test/semitone_mae"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline_cnn"])
    parser.add_argument("--styles", nargs="+", default=["full"])
    parser.add_argument(
        "--folds", nargs="+", type=int, default=[0], help="0: one split; K: --folds K."
    )
    parser.add_argument(
        "--jobs", nargs="+", type=int, default=[0], help="0: mnr tune's default; N: --jobs N."
    )
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
    path = RESULTS / "tune_speed.json"
    rows = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    if not args.publish_only:
        for model in args.models:
            for style in args.styles:
                for folds, jobs in [(f, j) for f in args.folds for j in args.jobs]:
                    row = measure(model, style, folds, jobs, args)
                    rows = [r for r in rows if _key(r) != _key(row)] + [row]
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    publish(rows, readme=not args.no_readme)


def measure(model: str, style: str, folds: int, jobs: int, args: argparse.Namespace) -> dict:
    """One study, as a user runs it, in a fresh folder; its row."""
    prepare_seconds = prepare(model, style)
    workdir = Path(tempfile.mkdtemp(prefix="mnr-tune-speed-"))
    try:
        result = run_study(
            model,
            args.trials,
            args.extra,
            workdir,
            style=style,
            folds=folds,
            jobs=jobs,
            register=args.register or None,
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        prepare_seconds=round(prepare_seconds, 1),
        cores=os.cpu_count(),
        machine=f"{platform.machine()} {platform.processor() or platform.system()}",
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        workdir=str(workdir) if args.keep else None,
        full_experiment_best_val_acc=full_experiment_best(model, style),
    )
    print(json.dumps(result), flush=True)
    return result


def _key(row: dict) -> tuple:
    return row.get("model"), row.get("style", "full"), row.get("folds", 0), row.get("jobs", 0)


def _std(values: list[float] | None) -> float | None:
    return statistics.stdev(values) if values and len(values) > 1 else None


def _registered_scores(tracking_uri: str, name: str) -> dict[str, float]:
    """The held-out metrics of the run behind version 1 of registered model `name`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return {}
    return dict(client.get_run(versions[0].run_id).data.metrics)


def publish(rows: list[dict], *, readme: bool) -> None:
    """Write tune_speed.md and (unless told not to) the README's "tune" section from `rows`."""
    lines = [
        "| model | style | judged by | --jobs | wall | CPU | complete/pruned/failed | epochs trained "
        "| best trial's value | best params | registered: held-out test acc | load avg |",
        "|---|---|---|---|---:|---:|---|---:|---|---|---:|---|",
    ]
    for row in sorted(rows, key=_key):
        best = row["best_value"]
        params = ", ".join(
            f"{k.rsplit('.', 1)[-1]}={v:.3g}"
            if isinstance(v, float)
            else f"{k.rsplit('.', 1)[-1]}={v}"
            for k, v in (row["best_params"] or {}).items()
        )
        folds = row.get("folds", 0)
        value = "-" if best is None else f"{best:.4f}"
        if row.get("best_cv_std") is not None:
            value += f" ± {row['best_cv_std']:.4f}"
        lines.append(
            f"| {row['model']} | {row.get('style', 'full')} | {f'{folds} folds' if folds else 'one split'} "
            f"| {row.get('jobs') or 'default'} "
            f"| {row['wall_seconds'] / 60:.1f} min | {row['cpu_seconds'] / 60:.1f} min "
            f"| {row['complete']}/{row['pruned']}/{row['failed']} | {row['epochs_trained']} | {value} "
            f"| {params} | {_percent(row.get('registered_test_accuracy'))} "
            f"| {row['load_average_before'][0]:.1f}->{row['load_average_after'][0]:.1f} |"
        )
    table = "\n".join(lines)
    (RESULTS / "tune_speed.md").write_text(table + "\n")
    print(table)
    if readme:
        from readme import write_section

        cores = rows[-1]["cores"] if rows else os.cpu_count()
        write_section(
            "tune",
            f"Measured by `python3 benchmarks/tune_speed.py` ({cores} cores): `mnr tune --model MODEL "
            "--data builtin:STYLE --trials 30 --register tune-best [--folds 3] [--jobs N]` in a "
            "fresh folder (fresh journal study and MLflow store; the decode cache "
            "already built). The wall time includes `--register`'s retrain of the best config for "
            "the experiment's full epochs; the held-out test accuracy is that registered model's on "
            "the style's test split, which no trial and no retrain sees. A --folds row's value is the "
            "best config's mean over its folds ± their standard deviation. Goals for baseline_cnn: "
            "at most 3 minutes (6 with --folds 3), >= 99.5 % held-out on every style.\n\n" + table,
            heading="Tuning speed",
        )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def full_experiment_best(model: str, style: str) -> float | None:
    """Best val accuracy of `model`'s full experiment in results/quality.json, if measured."""
    path = RESULTS / "quality.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["rows"]
    return next(
        (
            row["best_val_acc"]
            for row in rows
            if row["model"] == model and row.get("style", "full") == style
        ),
        None,
    )


if __name__ == "__main__":
    main()
