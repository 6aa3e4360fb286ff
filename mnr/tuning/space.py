"""The search space: which config keys a study searches, over which values, and the trial's config.

A space comes from the experiment's `search:` section (dotted config keys mapped to specs) or is
`default_search_space()`. Every spec is checked before any trial runs, against the same config
rules `mnr train` applies (`mnr.config.field_type` and `coerce`), so a typo or a value the config
would reject fails at once with a message that names the `search.<key>`, not after the data is
decoded or in the middle of trial 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from mnr.coerce import coerce, from_dict
from mnr.config import ExperimentConfig, field_type, set_dotted, to_dict
from mnr.errors import MnrError

__all__ = ["SearchParam", "default_search_space", "parse_search_space", "trial_config"]

_SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class SearchParam:
    """One searched config key: `float`/`int` between low and high, or one of `choices`."""

    key: str
    type: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask the trial for a value; the Optuna parameter name is the dotted config key."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def describe(self) -> str:
        """A short human form, e.g. `optim.lr: float 0.0001..0.1 (log)`."""
        if self.type == "categorical":
            return f"{self.key}: one of {list(self.choices)}"
        extra = " (log)" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.key}: {self.type} {self.low:g}..{self.high:g}{extra}"


def default_search_space() -> list[SearchParam]:
    """Learning rate (log-uniform 1e-4..0.1) and batch size (16, 32, 64 or 128)."""
    return [
        SearchParam("optim.lr", "float", low=1e-4, high=1e-1, log=True),
        SearchParam("train.batch_size", "categorical", choices=(16, 32, 64, 128)),
    ]


def parse_search_space(search: dict[str, Any] | None) -> list[SearchParam]:
    """Validate a config's `search:` section; None means `default_search_space()`.

    Each key is a dotted config key and each value a spec: `{type: float, low:, high:, log:,
    step:}`, `{type: int, low:, high:, step:, log:}` or `{type: categorical, choices: [...]}`.
    Unknown spec keys, wrong types and keys that are not config keys raise `MnrError` naming the
    key, before any trial runs.
    """
    if search is None:
        return default_search_space()
    if not isinstance(search, dict) or not search:
        raise MnrError(
            "search: expected a mapping of config keys to specs, e.g. optim.lr: {type: float, low: 0.0001, high: 0.1, log: true}"
        )
    return [_parse_param(key, spec) for key, spec in search.items()]


def trial_config(
    config: ExperimentConfig,
    params: dict[str, Any],
    *,
    epochs: int | None = None,
    run_name: str | None = None,
    log_model: bool | None = None,
) -> ExperimentConfig:
    """A copy of `config` with `params` (dotted keys) set, re-validated like any config."""
    data = to_dict(config)
    for key, value in params.items():
        set_dotted(data, key, value)
    if epochs is not None:
        data["train"]["epochs"] = epochs
    if run_name is not None:
        data["tracking"]["run_name"] = run_name
    if log_model is not None:
        data["tracking"]["log_model"] = log_model
    return from_dict(ExperimentConfig, data)


def _parse_param(key: Any, spec: Any) -> SearchParam:
    """One `search:` entry: the spec's shape first, then the key, then the values."""
    if not isinstance(key, str) or not key:
        raise MnrError(f"search: keys must be dotted config keys such as optim.lr, got {key!r}")
    where = f"search.{key}"
    if not isinstance(spec, dict):
        raise MnrError(
            f"{where}: expected a mapping such as {{type: float, low: 0.0001, high: 0.1, log: true}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise MnrError(f"{where}.type: expected float, int or categorical, got {kind!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS[kind])
    if unknown:
        raise MnrError(
            f"{where}: unknown key {unknown[0]!r} for type {kind}; valid: {', '.join(sorted(_SPEC_KEYS[kind]))}"
        )
    tp = _searchable_type(key)
    if kind == "categorical":
        return _parse_choices(key, spec, tp)
    return _parse_range(key, spec, tp, integer=kind == "int")


def _searchable_type(key: str) -> Any:
    """The annotation of the config setting `key` names, if a trial may change it."""
    try:
        tp = field_type(key)
    except MnrError as exc:
        raise MnrError(f"search.{key}: {exc}") from None
    if key.startswith("data.") or key == "train.epochs" or key.startswith("search."):
        raise MnrError(
            f"search.{key}: {key} cannot be searched (data.* would need a new decode per trial; the "
            "trial length is --epochs)"
        )
    return tp


def _parse_choices(key: str, spec: dict[str, Any], tp: Any) -> SearchParam:
    where = f"search.{key}"
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MnrError(f"{where}.choices: expected a non-empty list, got {choices!r}")
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise MnrError(f"{where}.choices: {choice!r} is not a number, string, bool or null")
        _check_value(key, tp, choice)
    return SearchParam(key, "categorical", choices=tuple(choices))


def _parse_range(key: str, spec: dict[str, Any], tp: Any, *, integer: bool) -> SearchParam:
    where = f"search.{key}"
    for name in ("low", "high"):
        if name not in spec:
            raise MnrError(f"{where}: missing {name!r}")
    low = _number(spec["low"], f"{where}.low", integer=integer)
    high = _number(spec["high"], f"{where}.high", integer=integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MnrError(f"{where}.log: expected true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer=integer)
        if step <= 0:
            raise MnrError(f"{where}.step: must be positive, got {step}")
        if log and step != 1:
            raise MnrError(f"{where}: step and log cannot be combined")
    if low > high:
        raise MnrError(f"{where}: low ({low}) is above high ({high})")
    if log and low <= 0:
        raise MnrError(f"{where}: log needs low > 0, got {low}")
    for value in (low, high):
        _check_value(key, tp, value)
    kind = "int" if integer else "float"
    return SearchParam(key, kind, low=low, high=high, step=step if not log else None, log=log)


def _number(value: Any, where: str, *, integer: bool = False) -> float | int:
    """A finite bound or step: `coerce` to int or float, after the leniencies a spec allows.

    A quoted number ("0.001", "8") is read as one, and an integer spec takes 3.0 as 3: YAML and
    hand-written specs produce both, and neither is ambiguous.
    """
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    number = coerce(value, int if integer else float, where)
    if not math.isfinite(number):
        raise MnrError(f"{where}: expected a finite number, got {value!r}")
    return number


def _check_value(key: str, tp: Any, value: Any) -> None:
    """Reject a value the config would reject for `key`, naming the search key."""
    try:
        coerce(value, tp, key)
    except MnrError as exc:
        raise MnrError(f"search.{key}: {exc}") from None
