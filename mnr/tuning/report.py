"""What a study looks like: the summary table, the per-trial progress line, and the parent run.

`log_study` puts the study's outcome on its MLflow parent run: trial counts, the best value and
params (as params the first time, as tags always, since MLflow params are immutable and a
resumed study may find a better trial), the summary table as `trials.txt` and the plots.
"""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mnr import tracking
from mnr.console import is_live, note, say
from mnr.tuning.folds import fold_spread
from mnr.tuning.runs import FOLDS_ATTR, RUN_ATTR

__all__ = ["TrialProgress", "best_trial", "format_summary", "log_study"]


def format_summary(study: optuna.Study) -> str:
    """A table of every trial, best first: number, state, value, duration and params.

    Completed trials are sorted by value (in the study's direction), then pruned trials by
    their last reported value, then the rest; a pruned trial's last value is in brackets.
    """
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return "no trials yet"
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    sign = -1.0 if maximize else 1.0
    rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def last(trial: FrozenTrial) -> float | None:
        if trial.value is not None:
            return trial.value
        if trial.intermediate_values:
            return trial.intermediate_values[max(trial.intermediate_values)]
        return None

    def key(trial: FrozenTrial) -> tuple[int, float, int]:
        value = last(trial)
        return (
            rank.get(trial.state, 2),
            sign * value if value is not None else math.inf,
            trial.number,
        )

    names = sorted({name for trial in trials for name in trial.params})
    header = ["trial", "state", "value", "seconds", *names, "note"]
    rows = []
    for trial in sorted(trials, key=key):
        value = last(trial)
        if value is None:
            shown = "-"
        elif trial.state == TrialState.COMPLETE:
            shown = f"{value:.4f}"
        else:
            shown = f"({value:.4f})"
        seconds = f"{trial.duration.total_seconds():.1f}" if trial.duration else "-"
        note = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
        rows.append(
            [
                str(trial.number),
                trial.state.name,
                shown,
                seconds,
                *(_fmt(trial.params[n]) if n in trial.params else "-" for n in names),
                note[:60],
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best completed trial, or None (Optuna's `best_trial` raises when there is none)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


class TrialProgress:
    """A study callback that shows trials as they finish, with the best so far: a tqdm bar over
    this process's trials on a terminal, one line per trial (state, value, time, params, why it
    was pruned or failed) elsewhere."""

    def __init__(self, *, total: int | None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None
        if is_live(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="trials", unit="trial", file=self.stream)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        best = best_trial(study)
        if self._bar is not None:
            postfix = {"last": f"{trial.state.name.lower()}"}
            if best is not None:
                postfix["best"] = f"#{best.number} {best.value:.4f}"
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)
            return
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
        best_text = f"; best #{best.number} {best.value:.4f}" if best is not None else ""
        say(
            f"trial {trial.number:>3} {trial.state.name:<8} {value:>7} {seconds:6.1f}s  {params}"
            + (f"  ({reason[:80]})" if reason else "")
            + best_text,
            stream=self.stream,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def log_study(
    study: optuna.Study,
    parent: str,
    *,
    best: FrozenTrial | None,
    monitor: str,
) -> None:
    """Best value and params, trial counts, the summary table and the plots on the parent run."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        state: sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    tracking.log_metrics(
        parent,
        {f"study/trials_{state.name.lower()}": float(n) for state, n in counts.items()},
        step=len(trials),
    )
    tracking.set_tags(parent, {"mnr.monitor": monitor})
    if best is not None:
        best_metrics = {
            "study/best_value": float(best.value),
            "study/best_trial": float(best.number),
        }
        folds = best.user_attrs.get(FOLDS_ATTR)
        if folds:  # a cross-validated study: the best config's mean and spread over its folds
            best_metrics.update(fold_spread(folds, monitor))
        tracking.log_metrics(parent, best_metrics, step=len(trials))
        best_params = {f"best.{key}": value for key, value in best.params.items()}
        changed = tracking.log_new_params(parent, best_params)
        # params cannot change once logged; tags always hold the current best
        tracking.set_tags(
            parent,
            {
                **best_params,
                "mnr.best_trial": best.number,
                "mnr.best_run_id": best.user_attrs.get(RUN_ATTR, ""),
            },
        )
        if changed:
            note(
                f"the best params changed since they were first logged ({', '.join(changed)}); MLflow params "
                "are immutable, so the parent run's best.* tags hold the current best"
            )
    tracking.log_text(parent, format_summary(study), "trials.txt")
    with tempfile.TemporaryDirectory() as tmp:
        for path in _plots(study, Path(tmp)):
            tracking.log_artifact(parent, path, artifact_path="plots")


def _plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and intermediate values as PNG files.

    A plot that cannot be drawn (importances need two completed trials with different values)
    is skipped with a note; the study is not worse for it.
    """
    import matplotlib

    matplotlib.use("Agg")  # inside the call: importing mnr.tuning must not pick a backend
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # fANOVA with 16 trees (default 64): a second instead of several, and just as readable
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)
    plots: list[tuple[str, Callable[[optuna.Study], Any]]] = [
        ("optimization_history", ovm.plot_optimization_history),
        ("intermediate_values", ovm.plot_intermediate_values),
    ]
    if len(complete) >= 2 and len({t.value for t in complete}) >= 2:
        plots.insert(
            1,
            (
                "param_importances",
                lambda study: ovm.plot_param_importances(study, evaluator=evaluator),
            ),
        )
    else:
        note(
            "skipped the parameter-importance plot: it needs 2 completed trials with different values"
        )
    written = []
    for name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # the history plot of a study without a completed trial has an empty legend
                warnings.filterwarnings("ignore", "No artists with labels", UserWarning)
                axes = plot(study)
            figure = np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else axes.figure
            path = folder / f"{name}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        except Exception as exc:  # noqa: BLE001 - a plot is a nicety; the study is what matters
            note(f"skipped the {name} plot: {type(exc).__name__}: {exc}")
    return written


def _fmt(value: Any) -> str:
    """A param value for a table cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
