"""Regressors: one value per target, in the targets' units (the model de-standardizes its own
outputs), from numeric rows or texts.

Shape legend: R rows   K targets
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skylift.serve.runtimes._base import Context, Named, Runtime
from skylift.serve.runtimes.classifier import inputs_of


class Regressor(Runtime):
    kind = "regressor"
    outputs = ("predictions",)

    def __init__(self, ctx: Context) -> None:
        self.targets = tuple(str(t) for t in ctx.loaded.data.get("targets", ()))
        super().__init__(ctx, inputs_of(ctx, softmax=False), len(self.targets))

    def named(self, out: np.ndarray) -> Named:
        return {"predictions": out}

    def output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "predictions", "datatype": "FP32", "shape": [-1, len(self.targets)]}]

    def parameters(self) -> dict[str, Any]:
        return {"targets": list(self.targets)}
