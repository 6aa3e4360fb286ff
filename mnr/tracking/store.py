"""The tracking store: which one, whether it answers, a client for it, and a safe first start.

Two things people meet on their first day are handled here:

- several mnr processes started together on a fresh `sqlite:///mlflow.db` (a shell loop with
  `&`) race to create MLflow's tables, and all but one die in alembic's migrations
  ("table _alembic_tmp_tags already exists"). The first `client()` of a process creates the
  schema under a file lock beside the database, before any run starts; the others wait and then
  find it made. (A store is created only when something is tracked: a bad data folder, which
  stops training before that, leaves none behind.)
- a bare `postgresql://` URL (the form people type) is read by SQLAlchemy 2 as psycopg 3, which
  is another package than the psycopg2 most have; `database_url` names the driver that is
  installed, or says which to install.
"""

from __future__ import annotations

import fcntl
import importlib.util
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnr import settings
from mnr.errors import MnrError

__all__ = ["client", "configure_tracking", "database_url", "experiment_id", "tracking_uri"]

_POSTGRES_DRIVERS = (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg"))
_initialised: set[str] = set()  # sqlite stores whose schema this process has made sure of


def database_url(url: str, *, option: str = "MLFLOW_TRACKING_URI") -> str:
    """`url` with a PostgreSQL driver named when it names none (`postgresql://`, `postgres://`).

    The installed driver is used: psycopg2 first (what `pip install psycopg2-binary` gives),
    then psycopg 3. With neither installed it is an `MnrError` naming `option` and the fix.
    Any other URL is returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    for module, prefix in _POSTGRES_DRIVERS:
        if importlib.util.find_spec(module) is not None:
            return f"{prefix}://{rest}"
    raise MnrError(
        f"{option}={scheme}://...: no PostgreSQL driver is installed. Install one "
        "(pip install psycopg2-binary, or pip install 'psycopg[binary]') and keep the URL, or name "
        "the driver yourself: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
    )


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI (a bare postgresql:// given its driver), else `sqlite:///mlflow.db`
    in the working directory."""
    return database_url(settings.MLFLOW_TRACKING_URI.get())


def _check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable server: MLflow itself retries for minutes before giving up."""
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:  # noqa: S310 (user's URI)
            response.read()
    except urllib.error.HTTPError:
        return  # the server answered; auth or routing is MLflow's to report
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MnrError(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to track in the local sqlite:///mlflow.db."
        ) from None


def configure_tracking(*, check: bool = True) -> str:
    """Point MLflow at the tracking store and, for a server, check it answers before any work."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    scheme = urlparse(uri).scheme
    if check and scheme in ("http", "https"):
        _check_server(uri)
    return uri


def _initialise_sqlite(uri: str) -> None:
    """Create (or migrate) a local store's schema once, under a file lock beside the database,
    so that processes started together on a fresh store do not race in alembic's migrations."""
    if uri in _initialised:
        return
    database = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if database is None or str(database) in ("", ":memory:"):
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process creates the tables; the rest wait
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    _initialised.add(uri)


def client() -> MlflowClient:
    """A client for the configured store (a fresh local store gets its schema first, safely)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        _initialise_sqlite(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created if needed (safe when two processes race)."""
    mlflow_client = client()
    for _ in range(3):
        found = mlflow_client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise MnrError(
                    f"MLflow experiment {name!r} is deleted; restore it or pick another --experiment"
                )
            return found.experiment_id
        try:
            # the kind MLflow's UI opens in its "Model training" view (not the GenAI one)
            return mlflow_client.create_experiment(
                name, tags={"mlflow.experimentKind": "custom_model_development"}
            )
        except MlflowException:
            time.sleep(0.2)  # another process created it first
    raise MnrError(f"could not create MLflow experiment {name!r}")
