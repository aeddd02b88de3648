"""Classification metrics, all derived from one confusion matrix (so they all-reduce exactly)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClassificationReport", "confusion_matrix", "report"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts C[t, p] of samples with true class t predicted as p, shape (n_classes, n_classes)."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # A class never predicted (or never present) scores 0, as scikit-learn's zero_division=0.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracy plus per-class, macro and support-weighted precision / recall / F1."""

    confusion: np.ndarray
    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def n(self) -> int:
        return int(self.support.sum())

    def macro(self) -> dict[str, float]:
        return {
            "precision": float(self.precision.mean()),
            "recall": float(self.recall.mean()),
            "f1": float(self.f1.mean()),
        }

    def weighted(self) -> dict[str, float]:
        w = _safe_div(self.support.astype(np.float64), np.full_like(self.support, self.n, dtype=np.float64))
        return {
            "precision": float((self.precision * w).sum()),
            "recall": float((self.recall * w).sum()),
            "f1": float((self.f1 * w).sum()),
        }

    def summary(self, prefix: str = "") -> dict[str, float]:
        """Flat scalar metrics: accuracy, macro precision/recall/f1, weighted f1."""
        m = self.macro()
        return {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}precision": m["precision"],
            f"{prefix}recall": m["recall"],
            f"{prefix}f1": m["f1"],
            f"{prefix}f1_weighted": self.weighted()["f1"],
        }


def report(confusion: np.ndarray) -> ClassificationReport:
    """Every metric from a confusion matrix C[true, pred]."""
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted.astype(np.float64))
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = cm.sum()
    accuracy = float(tp.sum() / total) if total else 0.0
    return ClassificationReport(cm, accuracy, precision, recall, f1, support)
