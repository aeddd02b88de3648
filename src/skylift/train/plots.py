"""Training curves and confusion-matrix pictures (PNG, matplotlib's headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skylift import _atomic


def _figure(ncols: int, width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # headless: servers and CI have no display
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    _atomic.write_with(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def curves(history: Sequence[dict[str, Any]], path: Path, best_epoch: int | None = None) -> None:
    """Loss (train, validation) and validation accuracy / F1 per epoch."""
    fig, axes = _figure(2, 10, 4)
    epochs = [h["epoch"] for h in history]
    loss_ax, acc_ax = axes[0]
    loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="val loss")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="val accuracy")
    acc_ax.plot(epochs, [h["val_f1"] for h in history], marker=".", linestyle="--", label="val F1 (macro)")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "validation accuracy")):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


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
