"""The built-in dataset: generated once on first use, then reused by every command.

A fresh machine has no Kaggle data, so any command that needs training data and is given none
uses the synthetic set from `mnr.data.synth`, written in exactly the Kaggle layout under
`settings.data_dir()` (override with MNR_DATA_DIR). A file lock makes concurrent first uses (say,
three `mnr tune` workers started together) generate it once.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from mnr import settings
from mnr.data.folder import TRUTH_FILE
from mnr.errors import MnrError

__all__ = ["DataPaths", "builtin_dataset", "resolve_data"]

BUILTIN_SEED = 0  # the built-in set is the same on every machine


@dataclass(frozen=True)
class DataPaths:
    """Where a dataset's parts live: the labelled train folder and, if any, a labelled test set."""

    train: Path
    test: Path | None = None
    test_truth: Path | None = None
    builtin: bool = False


def builtin_dataset(*, progress: bool = True) -> Path:
    """The built-in dataset's root (train/, test/, test_truth.txt), generating it if needed."""
    root = settings.data_dir()
    if (root / "train" / TRUTH_FILE).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating it right now
        if not (root / "train" / TRUTH_FILE).exists():
            from mnr.data.synth import generate_dataset

            print(
                f"mnr: generating the built-in dataset in {root} (once; set MNR_DATA_DIR to move it)"
            )
            generate_dataset(root, seed=BUILTIN_SEED, progress=progress)
    return root


def resolve_data(path: str | Path | None, *, progress: bool = True) -> DataPaths:
    """Turn `--data` into folders: None means the built-in set.

    A folder with a `train/` subfolder is a dataset root in the layout `mnr data synth` writes
    (train/, test/, test_truth.txt); any other folder is itself the labelled training folder.
    """
    builtin = path is None
    root = builtin_dataset(progress=progress) if builtin else Path(path).expanduser()
    if not root.is_dir():
        raise MnrError(f"{root}: data folder not found; pass --data DIR (a folder with truth.txt)")
    if (root / "train").is_dir():
        test, truth = root / "test", root / "test_truth.txt"
        has_test = test.is_dir() and truth.is_file()
        real_root = os.path.realpath(root)
        if has_test and not os.path.realpath(truth).startswith(real_root + os.sep):
            raise MnrError(
                f"{truth} is a link that points outside the dataset; copy the real file into {root}"
            )
        return DataPaths(
            train=root / "train",
            test=test if has_test else None,
            test_truth=truth if has_test else None,
            builtin=builtin,
        )
    return DataPaths(train=root, builtin=builtin)
