"""The tracking store: which one, whether it answers, and a client for it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnr import settings
from mnr.errors import MnrError

__all__ = ["client", "configure_tracking", "experiment_id", "tracking_uri"]


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory."""
    return settings.MLFLOW_TRACKING_URI.get()


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


def client() -> MlflowClient:
    """A client for the configured store."""
    return MlflowClient(tracking_uri=tracking_uri())


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
            return mlflow_client.create_experiment(name)
        except MlflowException:
            time.sleep(0.2)  # another process created it first
    raise MnrError(f"could not create MLflow experiment {name!r}")
