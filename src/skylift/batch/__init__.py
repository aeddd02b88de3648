"""Batch inference: a registered model over an input of any size, sharded over worker processes and nodes.

`predict(model, input, output, workers=N)` reads the input a chunk at a time (memory stays
bounded), spreads the chunks over N worker processes per node (and several nodes under PyTorch's
elastic agent), and writes one output file in input order. Finished chunks are kept beside the
output while it runs, so the same call after a crash resumes where it stopped.
"""

from __future__ import annotations

from skylift.batch._launch import PredictResult, predict

__all__ = ["PredictResult", "predict"]
