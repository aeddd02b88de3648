"""Training curves and confusion-matrix pictures (PNG, matplotlib's headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skylift._plot import figure as _figure
from skylift._plot import save as _save


def curves(history: Sequence[dict[str, Any]], path: Path, best_epoch: int | None = None) -> None:
    """Loss (train, validation) and the task's validation metrics per epoch (accuracy and F1 for a
    classifier; MAE for a regressor; perplexity for a language model)."""
    fig, axes = _figure(2, 10, 4)
    epochs = [h["epoch"] for h in history]
    loss_ax, metric_ax = axes[0]
    loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    shown = _PANEL.get(next((k for k in _PANEL if k in history[0]), ""), ())
    for i, (key, label) in enumerate(shown):
        metric_ax.plot(epochs, [h[key] for h in history], marker="o" if i == 0 else ".", label=label)
    title = shown[0][1] if shown else ""
    for ax, name in ((loss_ax, "loss"), (metric_ax, title)):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


# The right-hand panel of the curves, by the metric that identifies the task.
_PANEL: dict[str, tuple[tuple[str, str], ...]] = {
    "val_accuracy": (("val_accuracy", "val accuracy"), ("val_f1", "val F1 (macro)")),
    "val_mae": (("val_mae", "val MAE"), ("val_rmse", "val RMSE")),
    "val_perplexity": (("val_perplexity", "val perplexity"),),
}


def confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "confusion matrix") -> None:
    """Heat map of C[true, pred] with counts written in the cells (for up to 30 classes)."""
    n = len(classes)
    side = min(4 + 0.45 * n, 16)
    fig, axes = _figure(1, side + 1, side)
    ax = axes[0][0]
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= 30:
        ticks = range(n)
        ax.set_xticks(ticks, labels=list(classes), rotation=90 if n > 10 else 0)
        ax.set_yticks(ticks, labels=list(classes))
        threshold = cm.max() / 2 if cm.size else 0
        for (t, p), count in np.ndenumerate(cm):
            ax.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > threshold else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _save(fig, path)
