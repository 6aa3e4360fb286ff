"""The MLflow model registry: register a logged model, move aliases, list what is registered.

Registering a run's predictor by run id (`mnr register`) is `mnr.predict.logged.register_run`.

A registered version always points at the image-taking pyfunc that `mnr train` logs as
``predictor`` (`mnr.predict.logged`), never at the raw torch module, so that ``models:/NAME@champion``
can be given as is to `mnr predict`, `mnr evaluate` and `mlflow models serve`. Versions are
named by aliases (``champion``, ``challenger``), not by the deprecated stages: promoting is
moving an alias, and rolling back is moving it back.

Example::

    mnr register RUN_ID --name piano --alias challenger
    mnr evaluate models:/piano@challenger data/test --truth data/test_truth.txt
    mnr promote piano 3 --alias champion
    mnr models --registered
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
from collections.abc import Iterable, Mapping
from typing import Any

from mnr.errors import MnrError
from mnr.tracking.models import mlflow_error
from mnr.tracking.store import client, configure_tracking, tracking_uri

__all__ = ["check_name", "format_registered", "list_registered", "promote", "register_logged"]

# the best weights' final evaluation first, else the last epoch's
_ACCURACY_METRICS = ("best/val_accuracy", "val/acc")


def _client() -> Any:
    configure_tracking(check=True)  # an unreachable server fails in seconds
    return client()


def register_logged(
    model_id: str,
    *,
    name: str,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    what: str | None = None,
) -> Any:
    """Register the logged model `model_id` as a new version of `name`, with version `tags` and
    a `description` (what the registry page shows); returns the `ModelVersion`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    check_name(name, "--name")
    try:
        # register_model prints "Successfully registered model ..." to stderr itself; mnr
        # reports the version in its own words
        with contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
        client = _client()
        if description:
            client.update_model_version(name, version.version, description=description)
        if not client.get_registered_model(name).description:
            client.update_registered_model(
                name,
                description="An mnr predictor: give it spectrogram PNGs (paths, bytes or base64), it names "
                "the piano key of each (`mnr predict models:/NAME@ALIAS FOLDER`, `mlflow models serve`).",
            )
    except MlflowException as exc:
        raise MnrError(
            f"cannot register {what or model_id} as {name!r}: {mlflow_error(exc)}"
        ) from None
    return version


def promote(name: str, version: str | int, alias: str) -> Any:
    """Point `alias` of registered model `name` at `version` (moving it from any other version)."""
    from mlflow.exceptions import MlflowException

    check_name(alias, "--alias")
    client = _client()
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise MnrError(
            f"registered model {name!r} has no version {version} ({mlflow_error(exc)}); "
            "see `mnr models --registered`"
        ) from None
    try:
        client.set_registered_model_alias(name, alias, str(version))
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise MnrError(
            f"cannot set alias {alias!r} of {name!r} to version {version}: {mlflow_error(exc)}"
        ) from None


def check_name(value: str, option: str) -> None:
    if not value or not value.strip():
        raise MnrError(f"{option} must not be empty")


def _accuracy(client: Any, run_id: str | None, cache: dict[str, float | None]) -> float | None:
    """The validation accuracy of a version's source run (None when unknown or deleted)."""
    if not run_id:
        return None
    if run_id not in cache:
        from mlflow.exceptions import MlflowException

        try:
            metrics = client.get_run(run_id).data.metrics
        except MlflowException:  # the source run was deleted: the version still lists
            metrics = {}
        cache[run_id] = next((float(metrics[k]) for k in _ACCURACY_METRICS if k in metrics), None)
    return cache[run_id]


def list_registered(pattern: str | None = None) -> list[dict[str, Any]]:
    """One row per registered version, newest first within each model, models sorted by name.

    `pattern` filters model names with shell wildcards (``piano*``), as `mnr models` does. Each
    row has name, version, aliases (list), run_id, val_accuracy (of the source run: its final
    ``best/val_accuracy``, else its last ``val/acc``; None when unknown), status and created (ms).
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        models = list(_all_registered(client))
    except MlflowException as exc:
        raise MnrError(
            f"cannot list registered models in {tracking_uri()}: {mlflow_error(exc)}"
        ) from None
    rows: list[dict[str, Any]] = []
    cache: dict[str, float | None] = {}
    for model in sorted(models, key=lambda m: m.name):
        if pattern and not fnmatch.fnmatchcase(model.name, pattern):
            continue
        aliases: dict[str, list[str]] = {}
        for alias, number in (
            model.aliases or {}
        ).items():  # search results leave versions' aliases out
            aliases.setdefault(str(number), []).append(alias)
        versions = client.search_model_versions(f"name = '{_quote(model.name)}'")
        for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
            rows.append(
                {
                    "name": model.name,
                    "version": int(version.version),
                    "aliases": sorted(
                        set(version.aliases or []) | set(aliases.get(str(version.version), []))
                    ),
                    "run_id": version.run_id,
                    "val_accuracy": _accuracy(client, version.run_id, cache),
                    "status": version.status,
                    "created": version.creation_timestamp,
                }
            )
    return rows


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _all_registered(client: Any) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def format_registered(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows of `list_registered` as an aligned table (what `mnr models --registered` prints)."""
    rows = list(rows)
    if not rows:
        return "no registered models (register one with `mnr train --register NAME` or `mnr register RUN_ID --name NAME`)"
    header = ("NAME", "VERSION", "ALIASES", "VAL_ACC", "RUN_ID")
    table = [header] + [
        (
            str(row["name"]),
            str(row["version"]),
            ",".join(row.get("aliases") or []) or "-",
            f"{row['val_accuracy']:.4f}" if row.get("val_accuracy") is not None else "-",
            str(row.get("run_id") or "-"),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
