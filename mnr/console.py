"""What reaches the user's console: mnr's own lines, bars and warnings; libraries stay quiet.

mnr's own notes to the user (a plot it skipped, a cache it rebuilds, a plugin that failed to
load) go through `note`: one line, `mnr: ...`, on stderr. They are not Python warnings, which
print the path and line of mnr's source plus that line of code, noise to a user of the command.

MLflow, alembic and Optuna log at INFO to the console by default ("Creating initial MLflow
database tables...", "Validating input example against model signature"), and a few libraries
warn about things that are harmless for mnr's use of them. `configure_console` turns those
down unless the user asks for them with `-v`. Real warnings and errors still show: only the
loggers' INFO level and the listed warnings are affected.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["HARMLESS_WARNINGS", "configure_console", "note"]

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


def note(message: str) -> None:
    """Tell the user something in one line on stderr, `mnr: MESSAGE`, above any progress bar.

    For what mnr itself has to say about its work, where a Python warning would add a source
    path and a code line (see the module docstring). A problem the user must fix is an
    `MnrError`, not a note.
    """
    from tqdm import tqdm

    tqdm.write(f"mnr: {message}", file=sys.stderr)
