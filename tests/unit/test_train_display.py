"""The training display: a live bar (samples this epoch, global samples/s) over the epoch table."""

from __future__ import annotations

import io

from rich.console import Console

from skylift.train.progress import TrainDisplay


def test_bar_shows_samples_and_rate_and_the_table_keeps_every_epoch() -> None:
    out = io.StringIO()
    display = TrainDisplay(Console(file=out, force_terminal=True, width=140, color_system=None))
    display.start("run-1", 1, 2, 1000)
    display.step(640)
    display.live.refresh()
    assert "epoch 1/2" in out.getvalue() and "640/1000" in out.getvalue()
    row = {
        "epoch": 1,
        "loss": 0.5,
        "val_loss": 0.4,
        "val_accuracy": 0.9,
        "val_precision": 0.91,
        "val_recall": 0.89,
        "val_f1": 0.9,
        "seconds": 0.1,
        "samples_per_s": 12345.6,
    }
    display.epoch(row)
    display.live.refresh()
    assert "epoch 2/2" in out.getvalue() and "12,346 samples/s" in out.getvalue()
    display.epoch({**row, "epoch": 2, "val_accuracy": 0.95})
    display.close()
    final = out.getvalue().rsplit("\x1b[?25h", 1)[0]  # what the last frame left on screen
    for column in ("epoch", "loss", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1"):
        assert column in final
    assert "0.9500" in final and "0.9000" in final


def test_a_rate_below_1000_samples_per_s_prints_one_decimal_like_the_rest() -> None:
    out = io.StringIO()
    display = TrainDisplay(Console(file=out, force_terminal=True, width=140, color_system=None))
    display.start("run-1", 1, 1, 100)
    row = {"epoch": 1, "loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "val_precision": 0.91}
    display.epoch({**row, "val_recall": 0.89, "val_f1": 0.9, "samples_per_s": 237.2})
    display.close()
    assert " 237.2" in out.getvalue() and "237.2000" not in out.getvalue()
