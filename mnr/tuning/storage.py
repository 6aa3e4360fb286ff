"""Where a study lives: a journal file by default, or an RDB (sqlite, PostgreSQL, ...) for a URL.

The storage is what makes a study resumable and shareable: running the same command again, or
in several processes at once, adds trials to the same study. A journal needs nothing but a file
system; an RDB adds heartbeats, so a trial whose machine was lost is failed and retried.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from mnr import settings, tracking
from mnr.errors import MnrError
from mnr.tuning.runs import RetryStaleTrial

__all__ = ["describe_storage", "make_storage"]


def make_storage(url: str | None, study_name: str) -> optuna.storages.BaseStorage:
    """Optuna storage for a study: a journal file by default, or an RDB for a URL.

    No URL means `<study_name>.journal` in the working directory; a plain path is a journal file
    too. Both are safe for several processes on one machine. A URL (sqlite:///..., postgresql://...)
    is an RDB with heartbeats every MNR_HEARTBEAT_SECONDS (60): a trial whose worker died is
    failed after twice that and retried up to 3 times as a new trial, which is what scaling out
    over machines relies on. A bare postgresql:// URL gets the installed driver
    (`tracking.database_url`).
    """
    journal = _journal_path(url, study_name)
    if journal is None and url is not None:
        url = tracking.database_url(url, option="--storage")
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(journal))
            return optuna.storages.JournalStorage(backend)
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _open_rdb(
                url,
                heartbeat_interval=_heartbeat_seconds(),
                grace_period=2 * _heartbeat_seconds(),
                heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=3),
            )
    except (OSError, ValueError, ImportError) as exc:
        raise MnrError(
            f"--storage {url or journal}: cannot open the Optuna storage ({exc})"
        ) from None
    except Exception as exc:  # sqlalchemy errors: bad URL, unreachable server, missing driver
        if type(exc).__module__.startswith("sqlalchemy"):
            raise MnrError(f"--storage {url}: cannot open the Optuna storage ({exc})") from None
        raise


def describe_storage(url: str | None, study_name: str) -> str:
    """The storage as recorded in MLflow: the journal's absolute path, or the URL sans password."""
    journal = _journal_path(url, study_name)
    if journal is not None:
        return str(journal.resolve())
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url or "")


def _journal_path(url: str | None, study_name: str) -> Path | None:
    """The journal file a storage option means, or None for an RDB URL."""
    if url and "://" in url:
        return None
    if url:
        return Path(url).expanduser()
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "_", study_name) + ".journal")


def _heartbeat_seconds() -> int:
    """MNR_HEARTBEAT_SECONDS as a whole number of seconds, at least 1."""
    value = settings.MNR_HEARTBEAT_SECONDS.get()
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise MnrError(
            f"MNR_HEARTBEAT_SECONDS={value!r}: expected a whole number of seconds, at least 1"
        )
    return seconds


def _open_rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An RDBStorage, retried while another worker creates Optuna's tables in a new database.

    Workers started together on an empty database all create the tables, and all but one fail
    with an IntegrityError (optuna/optuna#1092); a moment later the tables exist.
    """
    import sqlalchemy.exc

    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.5 * (attempt + 1))
    return optuna.storages.RDBStorage(url, **kwargs)
