"""Classifiers: class probabilities (softmax of the logits) and the most likely class's name, from
numeric rows or texts.

Shape legend: R rows   C classes
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skylift.serve.runtimes._base import Context, Inputs, Named, Runtime
from skylift.serve.runtimes._rows import NumericRows, model_run


def inputs_of(ctx: Context, softmax: bool) -> Inputs:
    """Texts for a text model (`data.input: text`), else numeric rows."""
    if ctx.loaded.data.get("input") == "text":
        from skylift.serve.runtimes._rows import torch_run
        from skylift.serve.runtimes._text import TextRows

        return TextRows(ctx, torch_run(ctx.loaded.module, softmax))
    return NumericRows(ctx, model_run(ctx, softmax))


class Classifier(Runtime):
    kind = "classifier"
    outputs = ("probabilities", "label")

    def __init__(self, ctx: Context) -> None:
        self.classes = tuple(str(c) for c in ctx.loaded.classes)
        super().__init__(ctx, inputs_of(ctx, softmax=True), len(self.classes))

    def named(self, out: np.ndarray) -> Named:
        classes = self.classes
        return {"probabilities": out, "label": [classes[i] for i in out.argmax(axis=1).tolist()]}

    def output_metadata(self) -> list[dict[str, Any]]:
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.classes)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]

    def parameters(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}
