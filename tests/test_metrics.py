"""Hand-computed checks of the pitch-aware metrics in `mnr.metrics`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnr.errors import MnrError
from mnr.metrics import (
    accuracy,
    accuracy_by_group,
    accuracy_low,
    accuracy_per_octave,
    confusion_matrix,
    evaluate_predictions,
    format_group_table,
    format_per_class_table,
    macro_f1,
    mean_abs_semitone_error,
    octave_error_rate,
    per_class_table,
    plot_confusion_matrix,
    semitone_errors,
    top_k_accuracy,
    within_one_key_accuracy,
)

# A0, A1, A2, C4 predicted as A0 (right), A2 (octave high), A#2 (a semitone high), C3 (octave low).
Y_TRUE = [0, 12, 24, 39]
Y_PRED = [0, 24, 25, 27]


def test_pitch_metrics_by_hand() -> None:
    assert accuracy(Y_TRUE, Y_PRED) == 0.25
    assert semitone_errors(Y_TRUE, Y_PRED).tolist() == [0, 12, 1, -12]
    assert mean_abs_semitone_error(Y_TRUE, Y_PRED) == pytest.approx((0 + 12 + 1 + 12) / 4)
    assert within_one_key_accuracy(Y_TRUE, Y_PRED) == 0.5  # errors 0 and +1
    assert octave_error_rate(Y_TRUE, Y_PRED) == 0.5  # +12 and -12


def test_octave_error_counts_every_whole_octave_but_not_zero() -> None:
    assert octave_error_rate([0, 0, 0, 0], [0, 12, 24, 36]) == 0.75
    assert octave_error_rate([40, 40], [39, 41]) == 0.0


def test_accuracy_per_octave_keys_on_true_octave() -> None:
    # A0 is octave 0, A1 octave 1, A2 octave 2, C4 (label 39) octave 4; octave 3 is absent.
    assert accuracy_per_octave(Y_TRUE, Y_PRED) == {0: 1.0, 1: 0.0, 2: 0.0, 4: 0.0}
    # B3 (38) and C4 (39) straddle the octave boundary at C.
    assert accuracy_per_octave([38, 39, 40, 41], [38, 39, 0, 41]) == {3: 1.0, 4: 2 / 3}


def test_macro_f1_by_hand() -> None:
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 2, FP 1 -> F1 4/5; class 2: F1 0.
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # A listed class absent from both arrays scores 0 and drags the mean down.
    assert macro_f1(y_true, y_pred, labels=range(4)) == pytest.approx(1.3 / 4)
    # Classes only predicted count too (present in y_pred).
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(1 / 6)


def test_macro_f1_matches_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 88, size=500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 88, size=500))
    expected = sklearn_metrics.f1_score(y_true, y_pred, average="macro")
    assert macro_f1(y_true, y_pred) == pytest.approx(expected)


def test_top_k_accuracy_and_ties() -> None:
    scores = np.array(
        [
            [0.1, 0.6, 0.3],  # true 1: rank 1
            [0.5, 0.2, 0.3],  # true 2: rank 2
            [0.2, 0.3, 0.5],  # true 0: rank 3
        ]
    )
    y_true = [1, 2, 0]
    assert top_k_accuracy(y_true, scores, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y_true, scores, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y_true, scores, 3) == 1.0
    assert top_k_accuracy(y_true, np.log(scores), 2) == pytest.approx(2 / 3)  # logits rank alike
    # Ties count against the model, whatever the class order: equal scores are never a hit
    # unless k covers every tied class.
    tied = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert top_k_accuracy([0], tied, 3) == 0.0
    assert top_k_accuracy([3], tied, 3) == 0.0
    assert top_k_accuracy([3], tied, 4) == 1.0
    assert top_k_accuracy([2], [[0.4, 0.4, 0.2]], 2) == 0.0
    assert top_k_accuracy([0], [[0.4, 0.4, 0.2]], 2) == 1.0


def test_top_k_rejects_bad_k_and_shapes() -> None:
    with pytest.raises(MnrError, match="k must be"):
        top_k_accuracy([0], [[1.0, 0.0]], 0)
    with pytest.raises(MnrError, match="N x C"):
        top_k_accuracy([0], [1.0, 0.0], 1)
    with pytest.raises(MnrError, match="rows"):
        top_k_accuracy([0, 1], [[1.0, 0.0]], 1)
    with pytest.raises(MnrError, match="outside"):
        top_k_accuracy([2], [[1.0, 0.0]], 1)


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    y_true = torch.tensor(Y_TRUE)
    logits = torch.zeros(4, 88, requires_grad=True) + torch.nn.functional.one_hot(
        torch.tensor(Y_PRED), 88
    )
    y_pred = logits.argmax(dim=1)
    assert accuracy(y_true, y_pred) == 0.25
    assert top_k_accuracy(y_true, logits, 1) == 0.25
    assert evaluate_predictions(y_true, y_pred, torch.softmax(logits, dim=1))["accuracy"] == 0.25


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED)
    assert cm.shape == (88, 88)
    assert cm.dtype == np.int64
    assert cm.sum() == 4
    assert cm[0, 0] == 1 and cm[12, 24] == 1 and cm[24, 25] == 1 and cm[39, 27] == 1
    assert cm.sum(axis=1)[[0, 12, 24, 39]].tolist() == [1, 1, 1, 1]
    assert np.trace(cm) == 1
    small = confusion_matrix([0, 1, 1], [1, 1, 0], num_classes=2)
    assert small.tolist() == [[0, 1], [1, 1]]
    with pytest.raises(MnrError, match="outside"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)


def test_per_class_table_and_csv() -> None:
    rows = per_class_table([39, 39, 39, 0], [39, 39, 51, 0])
    assert rows == [
        {"label": 0, "note": "A0", "midi": 21, "support": 1, "correct": 1, "accuracy": 1.0},
        {"label": 39, "note": "C4", "midi": 60, "support": 3, "correct": 2, "accuracy": 2 / 3},
    ]  # C5 (51) was only predicted, so it has no row
    text = format_per_class_table(rows)
    assert text.splitlines() == [
        "label,note,midi,support,correct,accuracy",
        "0,A0,21,1,1,1.0000",
        "39,C4,60,3,2,0.6667",
    ]
    with pytest.raises(MnrError, match="lacks the column"):
        format_per_class_table([{"label": 0}])


def test_evaluate_predictions_keys_and_values() -> None:
    metrics = evaluate_predictions(Y_TRUE, Y_PRED)
    assert list(metrics) == [
        "accuracy",
        "macro_f1",
        "semitone_mae",
        "within_one_key",
        "octave_error_rate",
        "accuracy_low",
        "accuracy_octave_0",
        "accuracy_octave_1",
        "accuracy_octave_2",
        "accuracy_octave_4",
    ]
    assert metrics["semitone_mae"] == pytest.approx(6.25)
    assert metrics["accuracy_low"] == 0.5  # A0 right, C1 wrong; C2 and C4 lie above B1
    assert metrics["octave_error_rate"] == 0.5
    assert all(isinstance(value, float) for value in metrics.values())

    probs = np.full((4, 88), 0.001)
    probs[np.arange(4), Y_PRED] = 0.5
    probs[np.arange(4), Y_TRUE] += 0.2  # the truth is always second unless it was predicted
    with_probs = evaluate_predictions(Y_TRUE, Y_PRED, probs)
    assert with_probs["top3_accuracy"] == 1.0
    assert with_probs["top5_accuracy"] == 1.0
    assert "top1_accuracy" in evaluate_predictions(Y_TRUE, Y_PRED, probs, top_k=(1,))


@pytest.mark.parametrize(
    "call",
    [
        lambda: evaluate_predictions([], []),
        lambda: accuracy([], []),
        lambda: accuracy_per_octave(np.array([], dtype=int), np.array([], dtype=int)),
        lambda: confusion_matrix([], []),
    ],
)
def test_empty_input_raises(call) -> None:
    with pytest.raises(MnrError, match="empty"):
        call()


def test_bad_labels_raise() -> None:
    with pytest.raises(MnrError, match="pair up"):
        accuracy([0, 1], [0])
    with pytest.raises(MnrError, match="outside"):
        accuracy([88], [0])
    with pytest.raises(MnrError, match="whole-number"):
        accuracy([0.5], [0])
    with pytest.raises(MnrError, match="1-D"):
        accuracy([[0.1, 0.9]], [1])
    assert accuracy(np.array([1.0, 2.0]), [1, 3]) == 0.5  # integral floats are fine


def test_plot_confusion_matrix_writes_png(tmp_path: Path) -> None:
    cm = confusion_matrix([0, 12, 24, 39, 39, 87], [0, 24, 25, 27, 39, 87])
    path = plot_confusion_matrix(cm, tmp_path / "plots" / "cm.png", title="test")
    assert path == tmp_path / "plots" / "cm.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def test_plot_confusion_matrix_places_a_subset_on_the_keyboard(tmp_path: Path) -> None:
    subset = np.array([[3, 1], [0, 2]])
    path = plot_confusion_matrix(subset, tmp_path / "subset.png", labels=[39, 51])
    assert path.stat().st_size > 0
    with pytest.raises(MnrError, match="labels must name"):
        plot_confusion_matrix(subset, tmp_path / "bad.png", labels=[39])
    with pytest.raises(MnrError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "bad.png")


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, mnr.metrics; print('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_accuracy_low_and_by_group() -> None:
    assert accuracy_low([0, 14, 15, 40], [0, 13, 15, 40]) == 0.5  # A0-B1 are labels 0..14
    assert accuracy_low([15, 40], [15, 41]) is None  # no bass notes: undefined, not 0 or 1
    table = accuracy_by_group([0, 1, 40, 41], [0, 2, 40, 41], ["organ", "organ", "piano", "piano"])
    assert table == {
        "organ": {"count": 2.0, "accuracy": 0.5, "semitone_mae": 0.5, "accuracy_low": 0.5},
        "piano": {"count": 2.0, "accuracy": 1.0, "semitone_mae": 0.0},
    }
    assert format_group_table(table, group="instrument").splitlines() == [
        "instrument,count,accuracy,accuracy_low,semitone_mae",
        "organ,2,0.5000,0.5000,0.5000",
        "piano,2,1.0000,,0.0000",
    ]
    with pytest.raises(MnrError, match="pair up"):
        accuracy_by_group([0, 1], [0, 1], ["organ"])
