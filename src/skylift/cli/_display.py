"""Terminal tables: overall metrics, per-class metrics and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from skylift.metrics import ClassificationReport


def metrics_table(title: str, rows: Sequence[tuple[str, float]]) -> Table:
    table = Table("metric", "value", title=title, title_justify="left")
    for name, value in rows:
        table.add_row(name, f"{value:.4f}")
    return table


def report_tables(rep: ClassificationReport, classes: Sequence[str]) -> list[Table]:
    """Overall metrics, per-class precision/recall/F1/support, and the confusion matrix."""
    macro, weighted = rep.macro(), rep.weighted()
    overall = metrics_table(
        "overall",
        [
            ("accuracy", rep.accuracy),
            ("precision (macro)", macro["precision"]),
            ("recall (macro)", macro["recall"]),
            ("f1 (macro)", macro["f1"]),
            ("f1 (weighted)", weighted["f1"]),
        ],
    )
    per_class = Table(
        "class", "precision", "recall", "f1", "support", title="per class", title_justify="left"
    )
    for i, name in enumerate(classes):
        per_class.add_row(
            name,
            f"{rep.precision[i]:.4f}",
            f"{rep.recall[i]:.4f}",
            f"{rep.f1[i]:.4f}",
            str(int(rep.support[i])),
        )
    cm = Table("true \\ pred", *classes, title="confusion matrix", title_justify="left")
    for i, name in enumerate(classes):
        cm.add_row(name, *(str(int(c)) for c in rep.confusion[i]))
    return [overall, per_class, cm]
