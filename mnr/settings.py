"""Every environment switch mnr reads, in one place, each with its default and why it exists.

Modelled on `mlflow/environment_variables.py`: one typed object per variable, so that `grep
MNR_` finds every behaviour switch and the README can list them from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EnvVar",
    "MNR_HOME",
    "MNR_DATA_DIR",
    "MNR_CACHE_DIR",
    "MNR_CHECKPOINT_DIR",
    "MLFLOW_TRACKING_URI",
    "MNR_HEARTBEAT_SECONDS",
    "DEFAULT_TRACKING_URI",
    "all_vars",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class EnvVar:
    """An environment variable with a default and a one-line doc."""

    name: str
    default: str
    doc: str

    def get(self) -> str:
        """The variable's value, or its default when unset or empty."""
        return os.environ.get(self.name) or self.default

    def path(self) -> Path:
        """The value as an expanded path."""
        return Path(self.get()).expanduser()


MNR_HOME = EnvVar(
    "MNR_HOME",
    str(Path("~/.cache/mnr")),
    "Root of mnr's per-user files: the built-in dataset and the decode-once image cache.",
)
MNR_DATA_DIR = EnvVar(
    "MNR_DATA_DIR",
    "",
    "Where the built-in dataset is generated on first use (default: $MNR_HOME/data/builtin).",
)
MNR_CACHE_DIR = EnvVar(
    "MNR_CACHE_DIR",
    "",
    "Where decoded image arrays are cached (default: $MNR_HOME/cache).",
)
MNR_CHECKPOINT_DIR = EnvVar(
    "MNR_CHECKPOINT_DIR",
    "checkpoints",
    "Where training writes checkpoints, one folder per MLflow run id (resume reads them here).",
)
MLFLOW_TRACKING_URI = EnvVar(
    "MLFLOW_TRACKING_URI",
    DEFAULT_TRACKING_URI,
    "MLflow tracking store; a server URL for shared tracking (MLflow's own variable).",
)
MNR_HEARTBEAT_SECONDS = EnvVar(
    "MNR_HEARTBEAT_SECONDS",
    "60",
    "How often a tuning worker on an RDB study (--storage postgresql://...) records that its trial "
    "is alive; a trial silent for twice this long is failed and retried by another worker.",
)


def data_dir() -> Path:
    """Folder of the built-in dataset (holds train/, test/ and test_truth.txt)."""
    return MNR_DATA_DIR.path() if MNR_DATA_DIR.get() else MNR_HOME.path() / "data" / "builtin"


def cache_dir() -> Path:
    """Folder of the decode-once cache files."""
    return MNR_CACHE_DIR.path() if MNR_CACHE_DIR.get() else MNR_HOME.path() / "cache"


def all_vars() -> list[EnvVar]:
    """Every variable above, for documentation."""
    return [
        MNR_HOME,
        MNR_DATA_DIR,
        MNR_CACHE_DIR,
        MNR_CHECKPOINT_DIR,
        MLFLOW_TRACKING_URI,
        MNR_HEARTBEAT_SECONDS,
    ]
