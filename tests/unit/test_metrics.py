"""The one confusion-matrix implementation against scikit-learn, absent classes included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion

from skylift.metrics import confusion_matrix, report


def _check_against_sklearn(t: np.ndarray, p: np.ndarray, n: int) -> None:
    labels = list(range(n))
    rep = report(confusion_matrix(t, p, n))
    np.testing.assert_array_equal(rep.confusion, sk_confusion(t, p, labels=labels))
    assert rep.accuracy == pytest.approx(accuracy_score(t, p))
    for avg in (None, "macro", "weighted"):
        sp, sr, sf, _ = precision_recall_fscore_support(t, p, labels=labels, average=avg, zero_division=0)
        ours = {
            None: (rep.precision, rep.recall, rep.f1),
            "macro": tuple(rep.macro().values()),
            "weighted": tuple(rep.weighted().values()),
        }[avg]
        np.testing.assert_allclose(ours, (sp, sr, sf), atol=1e-12)
    assert not np.isnan([rep.precision, rep.recall, rep.f1]).any()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), size=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_matches_sklearn_on_random_labels(n: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Draw from a subset of classes so some never occur as truth and some are never predicted.
    t = rng.integers(0, max(1, n // 2), size)
    p = rng.integers(n // 3, n, size)
    _check_against_sklearn(t, p, n)


def test_absent_classes_score_zero_not_nan() -> None:
    rep = report(confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 4))
    assert rep.accuracy == 1.0
    assert rep.precision.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert rep.macro()["f1"] == 0.5
    assert rep.weighted()["f1"] == 1.0


def test_empty_matrix_is_all_zero() -> None:
    rep = report(np.zeros((3, 3), dtype=np.int64))
    assert rep.accuracy == 0.0 and rep.n == 0 and rep.weighted()["f1"] == 0.0


def test_summary_keys_and_prefix() -> None:
    rep = report(confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2))
    assert set(rep.summary("val_")) == {
        "val_accuracy",
        "val_precision",
        "val_recall",
        "val_f1",
        "val_f1_weighted",
    }


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        confusion_matrix(np.array([0, 1, 1]), np.array([0, 1]), 2)
