"""The built-in dataset: generated once on first use, then reused by every command.

A fresh machine has no Kaggle data, so any command that needs training data and is given none
uses the synthetic set from `mnr.data.synth`, written in exactly the Kaggle layout under
`settings.data_dir()` (override with MNR_DATA_DIR). A file lock makes concurrent first uses (say,
three `mnr tune` workers started together) generate it once.

The same notes drawn in the other styles (`--data builtin:specshow`, `builtin:imshow`; see
`SynthConfig.for_style`) are generated beside it on first use, so that a config can be checked
on every way of drawing, not only on one.
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
BUILTIN_PREFIX = "builtin:"  # --data builtin:STYLE names the built-in set drawn in another style


@dataclass(frozen=True)
class DataPaths:
    """Where a dataset's parts live: the labelled train folder and, if any, a labelled test set."""

    train: Path
    test: Path | None = None
    test_truth: Path | None = None
    builtin: bool = False


def builtin_dataset(*, style: str = "full", progress: bool = True) -> Path:
    """The built-in dataset's root (train/, test/, test_truth.txt), generating it if needed.

    `style` draws the same notes another way; those sets live beside the default one
    (`builtin-specshow/`, ...).
    """
    from mnr.data.synth.config import STYLES

    if style not in STYLES:
        raise MnrError(f"--data builtin:{style}: no such style; use one of {', '.join(STYLES)}")
    default = settings.data_dir()
    root = default if style == "full" else default.parent / f"{default.name}-{style}"
    if (root / "train" / TRUTH_FILE).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating it right now
        if not (root / "train" / TRUTH_FILE).exists():
            from mnr.data.synth import SynthConfig, generate_dataset

            print(
                f"mnr: generating the built-in dataset ({style} style) in {root} (once; set "
                "MNR_DATA_DIR to move it)"
            )
            config = SynthConfig.for_style(style)
            generate_dataset(root, seed=BUILTIN_SEED, progress=progress, config=config)
    return root


def resolve_data(path: str | Path | None, *, progress: bool = True) -> DataPaths:
    """Turn `--data` into folders: None means the built-in set, `builtin:STYLE` that set drawn in
    another style.

    A folder with a `train/` subfolder is a dataset root in the layout `mnr data synth` writes
    (train/, test/, test_truth.txt); any other folder is itself the labelled training folder.
    """
    builtin = path is None or str(path).startswith(BUILTIN_PREFIX)
    if builtin:
        style = "full" if path is None else str(path).removeprefix(BUILTIN_PREFIX)
        root = builtin_dataset(style=style, progress=progress)
    else:
        root = Path(path).expanduser()
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
