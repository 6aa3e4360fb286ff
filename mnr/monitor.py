"""What "better" means for a metric: its name and whether lower or higher wins.

The one place the comparison is written. Checkpointing, early stopping, stopping at a target,
pruning and tuning all take a `Monitor` (Lightning's `monitor` + `mode`), so that no two of them
can disagree on which value is the best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Monitor", "best_name"]

BEST = "best/"  # the prefix of a metric's value at the best weights (or a trial's best epoch)


def best_name(metric: str) -> str:
    """The one name of `metric`'s best value: ``best/`` + the metric with its ``/`` as ``_``.

    Per-epoch curves are ``val/...``; the best weights' evaluation and a tune trial's best
    monitored value are ``best/val_...``, one point beside the curve they summarise.

    >>> best_name("val/acc"), best_name("val/accuracy"), best_name("val/loss")
    ('best/val_acc', 'best/val_accuracy', 'best/val_loss')
    """
    return BEST + metric.replace("/", "_")


@dataclass(frozen=True)
class Monitor:
    """A metric and its mode: `min` (lower is better, e.g. a loss) or `max` (an accuracy).

    >>> acc = Monitor("val/acc", "max")
    >>> acc.better(0.9, 0.8), acc.reached(0.95, 0.9), acc.best_of([0.7, 0.9, 0.8])
    (True, True, 0.9)
    """

    metric: str
    mode: Literal["min", "max"] = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def better(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        """True when `value` beats `best` by more than `min_delta` (anything beats None)."""
        if best is None:
            return True
        return value < best - min_delta if self.mode == "min" else value > best + min_delta

    def reached(self, value: float | None, target: float) -> bool:
        """True when `value` is at `target` or beyond it, on the better side."""
        return value is not None and (value >= target if self.mode == "max" else value <= target)

    def best_of(self, values: Iterable[float]) -> float | None:
        """The best finite value, or None when there is none."""
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return None
        return max(finite) if self.mode == "max" else min(finite)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """Optuna's name for the mode."""
        return "maximize" if self.mode == "max" else "minimize"
