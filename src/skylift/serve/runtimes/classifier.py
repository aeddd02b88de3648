"""Classifiers: class probabilities (softmax of the logits) and the most likely class's name, from
numeric rows or texts.

Shape legend: R rows   C classes
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from skylift.serve.runtimes._base import Context, Inputs, Named, Runtime
from skylift.serve.runtimes._rows import NumericRows, model_run, torch_run


def _texts(ctx: Context, softmax: bool) -> Inputs:
    from skylift.serve.runtimes._text import TextRows

    return TextRows(ctx, torch_run(ctx.loaded.module, softmax))


def _media(ctx: Context, softmax: bool) -> Inputs:
    from skylift.serve.runtimes._media import MediaRows

    prep = ctx.loaded.preprocessing
    if prep is None:
        raise ValueError(f"{ctx.loaded.ref} takes media files but records no preprocessing; re-register it")
    return MediaRows(ctx, model_run(ctx, softmax), prep)


def _numbers(ctx: Context, softmax: bool) -> Inputs:
    return NumericRows(ctx, model_run(ctx, softmax))


_INPUTS: dict[str, Callable[[Context, bool], Inputs]] = {"text": _texts, "image": _media, "audio": _media}
"""How a model's inputs arrive, by its data's `input` (numeric rows when it names none)."""


def inputs_of(ctx: Context, softmax: bool) -> Inputs:
    """The model's inputs: texts, media files (images, audio) or numeric rows (`data.input`)."""
    return _INPUTS.get(str(ctx.loaded.data.get("input")), _numbers)(ctx, softmax)


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
