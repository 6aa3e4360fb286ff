"""How a result shows itself: one short line as `repr`, a short table in a notebook.

A notebook renders an object's `_repr_html_`; the results of `mnr.train`, `mnr.tune` and
`mnr.cv` build theirs here from a few key values and a link to the run's page in the MLflow UI,
so that the cell under `mnr.train(...)` reads like the line `mnr train` prints, not like a
dataclass holding a training history and a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["result_html", "result_repr", "shown"]


def shown(value: Any) -> str:
    """A value as the tables show it: floats to 4 decimals, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def result_repr(kind: str, rows: Mapping[str, Any]) -> str:
    """`Kind(key=value, ...)` over the rows that have a value: one line, whatever the result holds."""
    fields = ", ".join(f"{key}={shown(value)}" for key, value in rows.items() if value is not None)
    return f"{kind}({fields})"


def result_html(title: str, rows: Mapping[str, Any], *, run_id: str | None = None) -> str:
    """A two-column HTML table of the rows that have a value, under `title`, with a link to the
    page of `run_id` in the MLflow UI (`mnr.tracking.run_url`) when there is a run."""
    import html  # here, not at the top: `import mnr` imports this module

    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(key))}</th>"
        f"<td style='text-align:left'>{html.escape(shown(value))}</td></tr>"
        for key, value in rows.items()
        if value is not None
    )
    if run_id is not None:
        from mnr.tracking import run_url

        url = html.escape(run_url(run_id), quote=True)
        cells += (
            "<tr><th style='text-align:left'>MLflow</th>"
            f"<td style='text-align:left'><a href='{url}' target='_blank'>{url}</a></td></tr>"
        )
    return f"<table><caption style='text-align:left'><b>{html.escape(title)}</b></caption>{cells}</table>"
