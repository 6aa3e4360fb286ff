"""What reaches the user's console: mnr's own lines, bars and warnings; libraries stay quiet.

mnr's own notes to the user (a plot it skipped, a cache it rebuilds, a plugin that failed to
load) go through `note`: one line, `mnr: ...`, on stderr. They are not Python warnings, which
print the path and line of mnr's source plus that line of code, noise to a user of the command.

MLflow, alembic and Optuna log at INFO to the console by default ("Creating initial MLflow
database tables...", "Validating input example against model signature"), and a few libraries
warn about things that are harmless for mnr's use of them. `configure_console` turns those
down unless the user asks for them with `-v`. Real warnings and errors still show: only the
loggers' INFO level and the listed warnings are affected.

Progress bars (`progress`) redraw themselves where that renders (a terminal, a notebook) and
print a few whole lines elsewhere (a log file, CI, `mlflow run`), where every redrawn frame
would be a carriage return left in the file.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = [
    "HARMLESS_WARNINGS",
    "configure_console",
    "is_live",
    "libraries_quiet",
    "note",
    "progress",
    "say",
]

_LIBRARY_LOGGERS = ("mlflow", "alembic", "optuna", "urllib3", "matplotlib", "PIL")
# (message regex, category, why it is harmless here)
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        "No complete tensor found in the group",
        UserWarning,
        "torch.export when MLflow saves the pt2 model: mnr saves CPU weights, the case it is about",
    ),
    (
        "Operation with range is deprecated",
        Warning,
        "pandas 3 on a line of MLflow's model-signature check, about a future pandas change",
    ),
    (
        "The ``noload`` loader strategy is deprecated",
        Warning,
        "SQLAlchemy 2.1 on MLflow's own store code",
    ),
    (
        "Hint: Inferred schema contains integer column",
        UserWarning,
        "MLflow's advice about nullable integers in an inferred signature; mnr's are explicit",
    ),
    (
        "IProgress not found",
        Warning,
        "tqdm.auto in a notebook without ipywidgets: its text bar, used instead, renders there too",
    ),
)


def configure_console(*, verbose: bool = False) -> None:
    """Library INFO logs off and known-harmless warnings hidden, unless `verbose`.

    Also turns MLflow's artifact download bars off: `mnr predict` shows its own progress.
    """
    if verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO")
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        return
    # MLflow sets its loggers' level from this variable when it is imported (after this, as
    # commands import it lazily); processes it starts (mlflow run, serve) inherit it
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, category, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextmanager
def libraries_quiet() -> Iterator[None]:
    """`configure_console`'s quiet for one Python API call (`mnr.train` in a notebook): library
    INFO logs, MLflow's download bars and the harmless warnings are hidden inside the block,
    and the process is left as it was after it, since a library must not reconfigure the
    logging of the notebook or program that imports it.

    MLflow sets its loggers' level when it is imported, so it is imported first: a level set
    before that would be overwritten.
    """
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    bars = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bars or "false"
    try:
        with warnings.catch_warnings():
            for message, category, _why in HARMLESS_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            import mlflow  # noqa: F401
            import tqdm.auto  # noqa: F401  (it warns once, when imported, about ipywidgets)

            for logger in loggers:
                if logger.getEffectiveLevel() < logging.WARNING:
                    logger.setLevel(logging.WARNING)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if bars is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)


def note(message: str) -> None:
    """Tell the user something in one line on stderr, `mnr: MESSAGE`, above any progress bar.

    For what mnr itself has to say about its work, where a Python warning would add a source
    path and a code line (see the module docstring). A problem the user must fix is an
    `MnrError`, not a note.
    """
    say(f"mnr: {message}")


def say(line: str, *, stream: TextIO | None = None) -> None:
    """Write `line` as it is on `stream` (stderr by default), above any progress bar, flushed.

    The one way mnr's library code writes to the console: progress lines (an epoch, a trial, a
    fold) and notes (`note`). Commands print their results with `click.echo`.
    """
    from tqdm import tqdm

    stream = stream or sys.stderr
    tqdm.write(line, file=stream)
    stream.flush()


def is_live(stream: TextIO | None = None) -> bool:
    """Whether a bar on `stream` (stderr by default) can redraw itself in place: a terminal, or
    a Jupyter kernel, whose output area renders tqdm's widget (or its carriage returns).

    ipykernel's streams are not ttys, hence the second test (tqdm.auto's own notebook test).
    """
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


# a bar that is not live prints its start, each quarter and its end
_LINES_PER_BAR = 4


def progress(*, total: int, desc: str, unit: str = "img", disable: bool = False) -> Any:
    """A tqdm bar on stderr: live where `is_live`, else a handful of whole lines per bar.

    Not live, tqdm's own throttles set how often it draws: `miniters` a quarter of `total` and
    `mininterval` 0, so it draws at the start, at each quarter and at the end (`close`), and
    `maxinterval` infinite, since tqdm's monitor thread otherwise drops `miniters` to 1 after
    10 s without a draw and the bar then draws on every update. tqdm has no option for a
    newline in place of its carriage return, so `_Lines` turns each frame into one line.
    """
    if disable or is_live(sys.stderr):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr)
    from tqdm import tqdm as plain_tqdm

    return plain_tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=_Lines(sys.stderr),
        miniters=max(1, math.ceil(total / _LINES_PER_BAR)),
        mininterval=0.0,
        maxinterval=math.inf,
    )


class _Lines:
    """A text stream for tqdm that writes each frame it draws as one line: a frame starts with a
    carriage return and is padded with blanks over the previous one. The blank frame tqdm draws
    to clear a bar is dropped, and so is a frame with the same count as the last one (the end,
    drawn again by `close` with the overall rate): the count is what precedes " [" in tqdm's
    bar format, the times and rate what follows."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for frame in text.replace("\n", "\r").split("\r"):
            frame = frame.rstrip()
            count = frame.split(" [", 1)[0]
            if frame and count != self._last:
                self.stream.write(frame + "\n")
                self._last = count
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
