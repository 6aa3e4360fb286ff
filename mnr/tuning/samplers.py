"""How a study picks the next trial's values (the sampler) and which trials it stops early (the pruner).

Both are rebuilt on every run from the command's options; neither is stored in the study, so a
resumed study may switch them. The sampler is seeded per trial number, so that workers sharing a
study, or a study resumed tomorrow, never replay each other's draws.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from mnr.errors import MnrError

__all__ = ["PRUNERS", "SAMPLERS", "make_pruner", "make_sampler"]

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


class _TrialSeededSampler(BaseSampler):
    """A sampler whose randomness depends on (seed, trial number) only.

    A plain seeded sampler replays the same random draws in every process, and again when a study
    is resumed, so two workers (or a resumed run) would repeat each other's first trials. Trial
    numbers are unique within a study, so seeding per trial gives distinct, reproducible draws.
    The inner sampler (TPE or random) is rebuilt per trial; it reads all history from the study.
    """

    def __init__(self, build: Callable[[int], BaseSampler], seed: int, name: str) -> None:
        self._build, self._seed, self._name = build, seed, name
        self._samplers: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self._name}(seed={self._seed}, per trial)"

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        with self._lock:
            sampler = self._samplers.get(trial.number)
            if sampler is None:
                state = np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]
                sampler = self._samplers[trial.number] = self._build(int(state))
            return sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        sampler = self._for(trial)
        with self._lock:
            self._samplers.pop(trial.number, None)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial is seeded from its number (Optuna calls this per thread)."""


def make_sampler(name: str, seed: int | None) -> BaseSampler:
    """`tpe` (5 random startup trials, then TPE) or `random`; seeded per trial number.

    Five startup trials rather than Optuna's ten: a study here is ~30 trials over 2-3 values,
    and most random learning rates leave short trials at chance level. With a seed, trial N
    samples the same values whichever process runs it; with None, draws are fresh each run.
    """
    if name == "tpe":

        def build(s: int | None) -> BaseSampler:
            return optuna.samplers.TPESampler(seed=s, n_startup_trials=5)
    elif name == "random":

        def build(s: int | None) -> BaseSampler:
            return optuna.samplers.RandomSampler(seed=s)
    else:
        raise MnrError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
    if seed is None:
        return build(None)
    return _TrialSeededSampler(build, seed, name)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """`median`, `hyperband` (1..epochs) or `none`.

    Median prunes a trial whose best value so far is below the median of completed trials at
    the same epoch, once 5 trials have completed and from epoch 2 on (after one epoch, most
    configs are still at chance level). Hyperband stops most trials after 1 or 3 epochs.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=min(2, max(epochs - 1, 0))
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise MnrError(f"--pruner {name!r}: expected one of {', '.join(PRUNERS)}")
