"""Metrics that know the 88 classes are ordered pitches, a semitone apart.

Generic classification metrics treat "predicted C5 for C4" and "predicted F#2 for C4" as the same
mistake. For piano keys they are not: labels are semitones, so ``y_pred - y_true`` is the error in
semitones, an error of exactly 12 (or 24, ...) is an octave confusion (a harmonic taken for the
fundamental, the classic failure of pitch detectors), and an error of 1 is a near miss. This
module reports those alongside the usual accuracy, top-k and macro-F1, plus a confusion matrix and
a per-class table whose axes and rows are note names rather than bare labels.

Everything here is plain numpy. Inputs may be lists, numpy arrays or torch tensors (on any
device); they are converted once at the boundary. A metric of no samples is undefined, so empty
input raises `MnrError` instead of returning NaN that would be logged silently.

Example::

    >>> evaluate_predictions([0, 12, 24, 39], [0, 24, 25, 27])["octave_error_rate"]
    0.5

matplotlib is imported only inside `plot_confusion_matrix`, so ``import mnr.metrics`` stays light
for the CLI and for workers that never plot.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnr.errors import MnrError
from mnr.labels import MIDI_OFFSET, NUM_KEYS, label_to_midi, label_to_name

__all__ = [
    "accuracy",
    "top_k_accuracy",
    "macro_f1",
    "semitone_errors",
    "mean_abs_semitone_error",
    "within_one_key_accuracy",
    "octave_error_rate",
    "accuracy_per_octave",
    "accuracy_low",
    "accuracy_by_group",
    "format_group_table",
    "confusion_matrix",
    "per_class_table",
    "format_per_class_table",
    "evaluate_predictions",
    "plot_confusion_matrix",
    "format_per_octave_table",
    "HEADLINE",
    "LOWEST_LABELS",
    "PER_CLASS_COLUMNS",
]

PER_CLASS_COLUMNS = ("label", "note", "midi", "support", "correct", "accuracy")  # CSV header order
# The lowest octave and a bit, A0..B1 (labels 0..14, 27.5-62 Hz): where a fundamental shares
# its mel band with its neighbours' and the key is told only by its partials, so where models
# fail first on an unfamiliar instrument. Reported on its own as `accuracy_low`.
LOWEST_LABELS = range(0, 15)
# The scalar metrics worth a chart of their own; per-octave accuracies go to a table instead.
HEADLINE = (
    "accuracy",
    "accuracy_low",
    "top3_accuracy",
    "top5_accuracy",
    "macro_f1",
    "semitone_mae",
    "within_one_key",
    "octave_error_rate",
)


def _to_numpy(values: Any) -> np.ndarray:
    """A numpy view of a list, array or torch tensor (detached and moved to the CPU)."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _as_labels(values: Any, *, name: str, num_classes: int = NUM_KEYS) -> np.ndarray:
    """A 1-D int64 array of labels in ``0 .. num_classes-1``, or an `MnrError` naming ``name``."""
    array = _to_numpy(values)
    if array.ndim != 1:
        raise MnrError(
            f"{name} must be a 1-D sequence of labels, got shape {tuple(array.shape)}; "
            "pass class indices (argmax of the scores), not the scores"
        )
    if array.size == 0:
        raise MnrError(f"{name} is empty: a metric of no samples is undefined")
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.bool_) or not np.issubdtype(array.dtype, np.number):
            raise MnrError(f"{name} must hold integer labels, got dtype {array.dtype}")
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise MnrError(f"{name} must hold whole-number labels, got non-integers")
    array = array.astype(np.int64)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise MnrError(
            f"{name} holds label {bad}, outside 0 .. {num_classes - 1} "
            f"({num_classes} classes; 0 = A0 ... 87 = C8 for a piano)"
        )
    return array


def _as_pair(
    y_true: Any, y_pred: Any, *, num_classes: int = NUM_KEYS
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y_true, y_pred)`` label arrays of the same length."""
    true = _as_labels(y_true, name="y_true", num_classes=num_classes)
    pred = _as_labels(y_pred, name="y_pred", num_classes=num_classes)
    if true.shape != pred.shape:
        raise MnrError(
            f"y_true has {true.size} labels but y_pred has {pred.size}; they must pair up"
        )
    return true, pred


def _octaves(labels: np.ndarray) -> np.ndarray:
    """Octave numbers of labels, vectorised `mnr.labels.label_octave` (C4 starts octave 4)."""
    return (labels + MIDI_OFFSET) // 12 - 1


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of predictions equal to the true label."""
    true, pred = _as_pair(y_true, y_pred)
    return float(np.mean(true == pred))


def top_k_accuracy(y_true: Any, scores: Any, k: int) -> float:
    """Fraction of samples whose true label is among the ``k`` highest scores.

    ``scores`` is N x C, probabilities or logits (only the order within a row matters). Ties are
    counted against the model: a sample is a hit only when fewer than ``k`` *other* classes score
    at least as high as the true class. So a row of equal scores is never a hit (for ``k < C``),
    and the result does not depend on class order, unlike an argsort that breaks ties by index.
    With ties, top-1 can therefore be lower than `accuracy` of an argmax that picked the first
    maximum. ``k >= C`` makes every sample a hit.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MnrError(f"k must be a positive integer, got {k!r}")
    matrix = _to_numpy(scores)
    if matrix.ndim != 2:
        raise MnrError(
            f"scores must be N x C (one row per sample), got shape {tuple(matrix.shape)}"
        )
    true = _as_labels(y_true, name="y_true", num_classes=matrix.shape[1])
    if matrix.shape[0] != true.size:
        raise MnrError(f"y_true has {true.size} labels but scores has {matrix.shape[0]} rows")
    matrix = matrix.astype(np.float64)
    if np.isnan(matrix).any():
        raise MnrError("scores contain NaN: check the model output before scoring it")
    true_scores = matrix[np.arange(true.size), true]
    # ">=" counts the true class itself, hence "<= k" for "fewer than k others".
    at_least_as_high = np.sum(matrix >= true_scores[:, None], axis=1)
    return float(np.mean(at_least_as_high <= k))


def macro_f1(y_true: Any, y_pred: Any, *, labels: Iterable[int] | None = None) -> float:
    """Unweighted mean of per-class F1 scores.

    By default the mean runs over the classes present in ``y_true`` or ``y_pred`` (as
    scikit-learn does when ``labels`` is not given): a validation split rarely holds all 88 keys,
    and a key that is neither true nor predicted has no F1 to speak of. Pass ``labels`` (e.g.
    ``range(88)``) to fix the set of classes; a listed class absent from both arrays then scores
    0, as scikit-learn's ``zero_division=0`` does, so such a number is comparable across splits
    but pessimistic.
    """
    true, pred = _as_pair(y_true, y_pred)
    if labels is None:
        classes = np.union1d(true, pred)
    else:
        classes = _as_labels(list(labels), name="labels")
        classes = np.unique(classes)
    hits = true == pred
    tp = np.bincount(true[hits], minlength=NUM_KEYS)[classes]
    true_count = np.bincount(true, minlength=NUM_KEYS)[classes]
    pred_count = np.bincount(pred, minlength=NUM_KEYS)[classes]
    denominator = true_count + pred_count  # = 2 TP + FP + FN
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(classes.size), where=denominator > 0)
    return float(np.mean(f1))


def semitone_errors(y_true: Any, y_pred: Any) -> np.ndarray:
    """Signed error of each prediction in semitones, ``y_pred - y_true`` (+12 = an octave high)."""
    true, pred = _as_pair(y_true, y_pred)
    return pred - true


def mean_abs_semitone_error(y_true: Any, y_pred: Any) -> float:
    """Mean of ``|y_pred - y_true|`` in semitones: how far off the model is, not just how often."""
    return float(np.mean(np.abs(semitone_errors(y_true, y_pred))))


def within_one_key_accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of predictions at most one semitone (one adjacent key) from the truth."""
    return float(np.mean(np.abs(semitone_errors(y_true, y_pred)) <= 1))


def octave_error_rate(y_true: Any, y_pred: Any) -> float:
    """Fraction of *all* predictions that are off by a whole, non-zero number of octaves.

    ``|error|`` in {12, 24, ...}: the right pitch class in the wrong octave, which usually means
    a harmonic was taken for the fundamental. The denominator is every sample, not only the
    mistakes, so it reads on the same scale as `accuracy`.
    """
    errors = np.abs(semitone_errors(y_true, y_pred))
    return float(np.mean((errors > 0) & (errors % 12 == 0)))


def accuracy_per_octave(y_true: Any, y_pred: Any) -> dict[int, float]:
    """Accuracy within each octave of the *true* label, for the octaves present, in order.

    Octaves follow scientific pitch notation (`mnr.labels.label_octave`): octave 0 holds only
    A0..B0 and octave 8 only C8, so their accuracies rest on few samples.
    """
    true, pred = _as_pair(y_true, y_pred)
    octaves = _octaves(true)
    hits = true == pred
    return {int(octave): float(np.mean(hits[octaves == octave])) for octave in np.unique(octaves)}


def confusion_matrix(y_true: Any, y_pred: Any, *, num_classes: int = NUM_KEYS) -> np.ndarray:
    """``num_classes`` x ``num_classes`` int64 counts; rows are true labels, columns predicted.

    Always full size, whatever classes appear, so matrices of different runs line up cell by cell.
    """
    if num_classes < 1:
        raise MnrError(f"num_classes must be positive, got {num_classes}")
    true, pred = _as_pair(y_true, y_pred, num_classes=num_classes)
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def per_class_table(
    y_true: Any, y_pred: Any, *, num_classes: int = NUM_KEYS
) -> list[dict[str, Any]]:
    """One row per class that occurs in ``y_true``, in label order.

    Each row has ``label``, ``note`` (e.g. 'C#4'), ``midi``, ``support`` (true samples),
    ``correct`` and ``accuracy`` (= correct / support, i.e. the class's recall). Classes with no
    support are left out rather than given an undefined accuracy; find them as the labels missing
    from the table. ``num_classes`` may not exceed 88, since rows are named as piano keys.
    """
    if num_classes > NUM_KEYS:
        raise MnrError(
            f"num_classes is {num_classes}, but rows are piano keys (at most {NUM_KEYS})"
        )
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    support = cm.sum(axis=1)
    correct = np.diag(cm)
    return [
        {
            "label": label,
            "note": label_to_name(label),
            "midi": label_to_midi(label),
            "support": int(support[label]),
            "correct": int(correct[label]),
            "accuracy": float(correct[label] / support[label]),
        }
        for label in np.flatnonzero(support).tolist()
    ]


def format_per_class_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The rows of `per_class_table` as CSV text (header ``label,note,midi,support,correct,accuracy``).

    CSV rather than Markdown because it is meant to be logged as an artifact and reopened in a
    spreadsheet or pandas; accuracy is written with 4 decimals.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_CLASS_COLUMNS)
    for row in rows:
        try:
            values = [row[column] for column in PER_CLASS_COLUMNS]
        except KeyError as error:
            raise MnrError(
                f"per-class row {dict(row)!r} lacks the column {error.args[0]!r}"
            ) from None
        values[-1] = f"{float(values[-1]):.4f}"
        writer.writerow(values)
    return buffer.getvalue()


def format_per_octave_table(metrics: Mapping[str, float]) -> str:
    """The ``accuracy_octave_<n>`` values of `evaluate_predictions` as CSV text: octave, its first
    and last note, accuracy. What a run logs as a table rather than as nine separate metrics."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("octave", "from", "to", "accuracy"))
    for key in sorted(
        (k for k in metrics if k.startswith("accuracy_octave_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    ):
        octave = int(key.rsplit("_", 1)[1])
        labels = [label for label in range(NUM_KEYS) if (label + MIDI_OFFSET) // 12 - 1 == octave]
        writer.writerow(
            (octave, label_to_name(labels[0]), label_to_name(labels[-1]), f"{metrics[key]:.4f}")
        )
    return buffer.getvalue()


def accuracy_low(y_true: Any, y_pred: Any) -> float | None:
    """Accuracy on the images whose true key is in the lowest octave and a bit (A0..B1,
    `LOWEST_LABELS`); None when there are none."""
    true, pred = _as_pair(y_true, y_pred)
    low = true < LOWEST_LABELS.stop
    return float(np.mean(true[low] == pred[low])) if low.any() else None


def accuracy_by_group(
    y_true: Any, y_pred: Any, groups: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per group (e.g. the instrument that played each image): its `count`, `accuracy`,
    `semitone_mae` and, where it has bass notes, `accuracy_low`; groups in sorted order."""
    true, pred = _as_pair(y_true, y_pred)
    names = np.asarray(groups, dtype=object)
    if names.shape != true.shape:
        raise MnrError(f"{names.size} group names for {true.size} labels; they must pair up")
    table: dict[str, dict[str, float]] = {}
    for name in sorted(set(names.tolist())):
        mask = names == name
        row = {
            "count": float(mask.sum()),
            "accuracy": accuracy(true[mask], pred[mask]),
            "semitone_mae": mean_abs_semitone_error(true[mask], pred[mask]),
        }
        low = accuracy_low(true[mask], pred[mask])
        if low is not None:
            row["accuracy_low"] = low
        table[str(name)] = row
    return table


def format_group_table(table: Mapping[str, Mapping[str, float]], *, group: str) -> str:
    """`accuracy_by_group`'s result as CSV text, one row per group (`group` names the column)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((group, "count", "accuracy", "accuracy_low", "semitone_mae"))
    for name, row in table.items():
        low = row.get("accuracy_low")
        writer.writerow(
            (
                name,
                int(row["count"]),
                f"{row['accuracy']:.4f}",
                "" if low is None else f"{low:.4f}",
                f"{row['semitone_mae']:.4f}",
            )
        )
    return buffer.getvalue()


def evaluate_predictions(
    y_true: Any, y_pred: Any, probs: Any = None, *, top_k: Sequence[int] = (3, 5)
) -> dict[str, float]:
    """Every scalar metric of one evaluation, flat and ready for ``mlflow.log_metrics``.

    Keys: ``accuracy``, ``top{k}_accuracy`` for each ``k`` in ``top_k`` (only when ``probs``, the
    N x C probabilities or logits, is given), ``macro_f1`` (over classes present, see
    `macro_f1`), ``semitone_mae``, ``within_one_key``, ``octave_error_rate``, ``accuracy_low``
    (A0..B1 alone, when ``y_true`` has such keys) and ``accuracy_octave_<n>`` for each octave
    present in ``y_true``. Empty input raises `MnrError`.

    Example::

        >>> evaluate_predictions([0, 39], [0, 51])["octave_error_rate"]
        0.5
    """
    true, pred = _as_pair(y_true, y_pred)
    metrics: dict[str, float] = {"accuracy": accuracy(true, pred)}
    if probs is not None:
        for k in top_k:
            metrics[f"top{k}_accuracy"] = top_k_accuracy(true, probs, k)
    metrics["macro_f1"] = macro_f1(true, pred)
    metrics["semitone_mae"] = mean_abs_semitone_error(true, pred)
    metrics["within_one_key"] = within_one_key_accuracy(true, pred)
    metrics["octave_error_rate"] = octave_error_rate(true, pred)
    low = accuracy_low(true, pred)
    if low is not None:
        metrics["accuracy_low"] = low
    for octave, value in accuracy_per_octave(true, pred).items():
        metrics[f"accuracy_octave_{octave}"] = value
    return metrics


def _tick_labels() -> tuple[list[int], list[str]]:
    """Positions and names of the readable ticks: A0, every C (C1 .. C8)."""
    positions = [0] + [label for label in range(NUM_KEYS) if (label + MIDI_OFFSET) % 12 == 0]
    return positions, [label_to_name(label) for label in positions]


def plot_confusion_matrix(
    cm: Any,
    path: str | Path,
    *,
    labels: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix as an 88 x 88 PNG with note-name axes and return its path.

    Each row is divided by its support, so a cell is the fraction of that true note predicted as
    the column's note (a row of ones on the diagonal is perfect), and the colour is log-scaled so
    that rare confusions such as octave errors stay visible next to a bright diagonal; empty cells
    and notes with no samples stay white. Ticks name A0 and every C (C1 .. C8), with faint lines at
    each C, to keep 88 classes readable.

    ``cm`` is what `confusion_matrix` returns. When it covers only some classes, give their labels
    in ``labels`` (row/column order of ``cm``, like scikit-learn's ``labels``); a smaller matrix
    without ``labels`` is taken to be labels ``0 .. n-1``. Either way the picture is the full
    88 x 88 keyboard, so the matrices of different runs compare at a glance. Parent folders of
    ``path`` are created. matplotlib runs with the Agg backend, so no display is needed.
    """
    matrix = _to_numpy(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise MnrError(f"cm must be a square matrix, got shape {tuple(matrix.shape)}")
    size = matrix.shape[0]
    if labels is None:
        if size > NUM_KEYS:
            raise MnrError(f"cm is {size} x {size}, larger than the {NUM_KEYS} piano keys")
        class_labels = np.arange(size)
    else:
        class_labels = _as_labels(list(labels), name="labels")
        if class_labels.size != size or np.unique(class_labels).size != size:
            raise MnrError(
                f"labels must name each of the {size} rows of cm once, got {class_labels.size} "
                f"labels ({np.unique(class_labels).size} distinct)"
            )
    matrix = matrix.astype(np.float64)
    if np.isnan(matrix).any() or (matrix < 0).any():
        raise MnrError("cm must hold non-negative counts")

    full = np.zeros((NUM_KEYS, NUM_KEYS))
    full[np.ix_(class_labels, class_labels)] = matrix
    support = full.sum(axis=1, keepdims=True)
    fractions = np.divide(full, support, out=np.zeros_like(full), where=support > 0)
    masked = np.ma.masked_less_equal(fractions, 0.0)
    total = int(full.sum())
    if title is None:
        correct = np.trace(full)
        title = f"Confusion matrix: {total} samples, accuracy {correct / max(total, 1):.1%}"

    import matplotlib

    matplotlib.use("Agg")  # inside the call: importing mnr.metrics must not pick a backend
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    positive = fractions[fractions > 0]
    vmin = min(float(positive.min()), 1e-2) if positive.size else 1e-2
    figure, axes = plt.subplots(figsize=(9.5, 8.5))
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="white")
        image = axes.imshow(
            masked, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=1.0), interpolation="nearest"
        )
        colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
        colorbar.set_label("fraction of the true note's samples (log scale)")
        positions, names = _tick_labels()
        axes.set_xticks(positions, names, rotation=90)
        axes.set_yticks(positions, names)
        for position in positions[1:]:  # octave boundaries, just before each C
            axes.axhline(position - 0.5, color="0.85", linewidth=0.5)
            axes.axvline(position - 0.5, color="0.85", linewidth=0.5)
        axes.set_xlabel("predicted note")
        axes.set_ylabel("true note")
        axes.set_title(title)
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path
