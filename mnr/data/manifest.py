"""What played each image: the generator's `manifest.csv`, read back for per-instrument scores.

`mnr data synth` writes it beside train/ and test/ (never inside them: the Kaggle layout stays
exactly as a user's own data has it). A user's dataset has none, and nothing needs one; where it
is present, training runs and `benchmarks/quality.py` break their test scores down by instrument.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnr.errors import MnrError
from mnr.metrics import accuracy_by_group

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "instrument_metrics",
    "instrument_table",
    "instruments_of",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FILE = "manifest.csv"  # what played each image, beside train/ and test/
MANIFEST_COLUMNS = ("split", "file", "label", "note", "instrument")


def read_manifest(path: Path) -> dict[tuple[str, str], str]:
    """``{(split, file): instrument}`` from a manifest; a malformed one is an error naming the
    file and line."""
    table: dict[tuple[str, str], str] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != MANIFEST_COLUMNS:
            raise MnrError(
                f"{path}:1: want the header {','.join(MANIFEST_COLUMNS)}, got {header}; "
                "regenerate the dataset with `mnr data synth` or delete the manifest"
            )
        for line, row in enumerate(reader, start=2):
            if len(row) != len(MANIFEST_COLUMNS):
                raise MnrError(
                    f"{path}:{line}: want {len(MANIFEST_COLUMNS)} columns, got {len(row)}; "
                    "regenerate the dataset with `mnr data synth` or delete the manifest"
                )
            table[(row[0], row[1])] = row[4]
    return table


def write_manifest(path: Path, rows: Sequence[tuple[str, str, int, str, str]]) -> None:
    """Write `rows` (`MANIFEST_COLUMNS`) as a manifest, sorted by split and file like the truth
    files: train first."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(sorted(rows, key=lambda row: (row[0] != "train", row[1])))


def instruments_of(manifest: Path | None, split: str, files: Sequence[str]) -> list[str] | None:
    """The instrument of each of `files` in `split`, or None when there is no manifest or it
    does not name every one of them (a folder that was edited since it was generated)."""
    if manifest is None:
        return None
    table = read_manifest(manifest)
    names = [table.get((split, Path(name).name)) for name in files]
    return None if any(name is None for name in names) else names  # type: ignore[return-value]


def instrument_table(
    manifest: Path | None, split: str, files: Sequence[str], labels: Any, preds: Any
) -> dict[str, dict[str, float]]:
    """`mnr.metrics.accuracy_by_group` by instrument for the images `files` of `split`; empty
    when the manifest does not say what played them."""
    instruments = instruments_of(manifest, split, files)
    return {} if instruments is None else accuracy_by_group(labels, preds, instruments)


def instrument_metrics(table: dict[str, dict[str, float]], *, prefix: str) -> dict[str, float]:
    """An `instrument_table` as flat metrics: ``<prefix>instrument/<name>/accuracy`` (and
    ``.../accuracy_low``, ``.../semitone_mae``), one chart group per instrument in the UI."""
    return {
        f"{prefix}instrument/{name}/{key}": value
        for name, row in table.items()
        for key, value in row.items()
        if key != "count"
    }
