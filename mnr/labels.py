"""Piano keys: label <-> MIDI number <-> note name <-> frequency.

Labels are the 88 keys of a piano in order: label 0 is A0 (MIDI 21, 27.5 Hz) and label 87 is C8
(MIDI 108, 4186 Hz). Everything shown to a person (tables, confusion matrices, predictions) goes
through these helpers, so that a label is never printed bare where a note name says more.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from mnr.errors import MnrError

__all__ = [
    "NUM_KEYS",
    "MIDI_OFFSET",
    "label_to_midi",
    "midi_to_label",
    "label_to_name",
    "name_to_label",
    "midi_to_name",
    "name_to_midi",
    "midi_to_frequency",
    "label_to_frequency",
    "frequency_to_midi",
    "label_octave",
    "octave_labels",
    "top_k_columns",
    "top_k_table",
    "top_labels",
]

NUM_KEYS = 88  # keys on a piano: A0..C8
MIDI_OFFSET = 21  # MIDI number of A0, label 0
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
_NAME_RE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d+)$")


def _check_label(label: int) -> int:
    if not 0 <= int(label) < NUM_KEYS:
        raise MnrError(f"label {label} is not a piano key: labels run 0 (A0) .. 87 (C8)")
    return int(label)


def label_to_midi(label: int) -> int:
    """MIDI number of a label: 0 -> 21 (A0), 87 -> 108 (C8)."""
    return _check_label(label) + MIDI_OFFSET


def midi_to_label(midi: int) -> int:
    """Label of a MIDI number in 21..108."""
    return _check_label(int(midi) - MIDI_OFFSET)


def midi_to_name(midi: int) -> str:
    """Scientific pitch name with sharps: 60 -> 'C4', 61 -> 'C#4', 21 -> 'A0'."""
    midi = int(midi)
    return f"{_NAMES[midi % 12]}{midi // 12 - 1}"


def name_to_midi(name: str) -> int:
    """MIDI number of a note name; accepts sharps and flats: 'C#4' and 'Db4' -> 61."""
    match = _NAME_RE.match(name.strip())
    if not match:
        raise MnrError(
            f"{name!r} is not a note name: write a letter, optional # or b, an octave (C#4)"
        )
    letter, accidental, octave = match.groups()
    pitch = letter.upper() + accidental
    pitch = _FLATS.get(pitch, pitch)
    if pitch not in _NAMES:  # Cb, Fb and friends
        index = _NAMES.index(letter.upper()) + (1 if accidental == "#" else -1)
        return (int(octave) + 1) * 12 + index
    return (int(octave) + 1) * 12 + _NAMES.index(pitch)


def label_to_name(label: int) -> str:
    """Note name of a label: 0 -> 'A0', 39 -> 'C4', 87 -> 'C8'."""
    return midi_to_name(label_to_midi(label))


def name_to_label(name: str) -> int:
    """Label of a note name: 'A0' -> 0, 'C8' -> 87."""
    return midi_to_label(name_to_midi(name))


def midi_to_frequency(midi: float) -> float:
    """Equal-tempered frequency in Hz, A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((float(midi) - 69.0) / 12.0)


def label_to_frequency(label: int) -> float:
    """Frequency in Hz of a label: 0 -> 27.5, 87 -> 4186.0."""
    return midi_to_frequency(label_to_midi(label))


def frequency_to_midi(frequency: float) -> float:
    """Fractional MIDI number of a frequency (the inverse of `midi_to_frequency`)."""
    if frequency <= 0:
        raise MnrError(f"frequency must be positive, got {frequency}")
    return 69.0 + 12.0 * math.log2(frequency / 440.0)


def label_octave(label: int) -> int:
    """Octave number of a label in scientific pitch notation (C4 starts octave 4)."""
    return label_to_midi(label) // 12 - 1


def octave_labels() -> dict[int, list[int]]:
    """Labels grouped by octave: {0: [0, 1, 2], 1: [3..14], ..., 8: [87]}."""
    groups: dict[int, list[int]] = {}
    for label in range(NUM_KEYS):
        groups.setdefault(label_octave(label), []).append(label)
    return groups


# ------------------------------------------------------------------------ the top-k answer table
TOP_K_FIELDS = ("label", "note", "probability")  # per rank, in this order: topR_label, ...


def top_k_columns(top_k: int) -> list[str]:
    """``top1_label, top1_note, top1_probability, ..., topK_probability``: the flat top-k
    columns of every answer table (served JSON, DataFrame, predictions CSV, out-of-fold CSV)."""
    return [f"top{rank}_{field}" for rank in range(1, top_k + 1) for field in TOP_K_FIELDS]


def top_labels(probabilities: np.ndarray, top_k: Any) -> np.ndarray:
    """N x top_k labels, most probable first (ties: the lower label), for N x classes
    probabilities; a top_k outside 1..classes is an `MnrError`."""
    num_classes = probabilities.shape[1]
    try:
        value = int(top_k)
    except (TypeError, ValueError):
        raise MnrError(f"top_k must be an integer, got {top_k!r}") from None
    if not 1 <= value <= num_classes:
        raise MnrError(f"top_k must be between 1 and {num_classes}, got {value}")
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :value]


def top_k_table(
    probabilities: np.ndarray, top_k: Any, *, decimals: int | None = None
) -> dict[str, Any]:
    """The top-k columns (`top_k_columns`, in order) for N x classes probabilities: labels as
    int64, note names, probabilities as float64, or as text with `decimals` places (CSV files).

    >>> top_k_table(np.array([[0.1, 0.7, 0.2] + [0.0] * 85]), 2)["top2_note"]
    ['B0']
    """
    order = top_labels(probabilities, top_k)
    chosen = np.take_along_axis(probabilities, order, axis=1).astype(np.float64)
    table: dict[str, Any] = {}
    for rank in range(order.shape[1]):
        labels = order[:, rank].astype(np.int64)
        table[f"top{rank + 1}_label"] = labels
        table[f"top{rank + 1}_note"] = [label_to_name(int(v)) for v in labels]
        values = chosen[:, rank]
        table[f"top{rank + 1}_probability"] = (
            values if decimals is None else [f"{v:.{decimals}f}" for v in values]
        )
    return table
