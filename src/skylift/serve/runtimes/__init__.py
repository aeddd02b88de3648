"""Serving runtimes: one module per model kind, found by the version's signature `kind` in RUNTIMES."""

from __future__ import annotations

from collections.abc import Callable

from skylift.serve.runtimes._base import Context, Runtime, Unsupported
from skylift.serve.runtimes.classifier import Classifier
from skylift.serve.runtimes.embedder import Embedder
from skylift.serve.runtimes.generator import Generator
from skylift.serve.runtimes.regressor import Regressor

RUNTIMES: dict[str, Callable[[Context], Runtime]] = {
    "classifier": Classifier,
    "regressor": Regressor,
    "embedder": Embedder,
    "generator": Generator,
}

__all__ = ["RUNTIMES", "Context", "Runtime", "Unsupported", "check_servable", "kind_of"]


def kind_of(info: dict[str, object]) -> str:
    """A version's kind from its model.json signature (classifier for versions older than kinds)."""
    signature = info.get("signature")
    kind = signature.get("kind") if isinstance(signature, dict) else None
    return str(kind or "classifier")


def check_servable(info: dict[str, object], ref: str, runtime: str = "torch") -> None:
    """SpecError unless a runtime serves this version's kind (with `--runtime` torch or onnx)."""
    from skylift.errors import SpecError

    kind = kind_of(info)
    if kind not in RUNTIMES:
        raise SpecError(f"{ref} is a {kind}: skylift serve runs {', '.join(sorted(RUNTIMES))} models so far")
    data = info.get("data")
    text = isinstance(data, dict) and data.get("input") == "text"
    if runtime == "onnx" and (text or kind not in ("classifier", "regressor")):
        what = f"a text {kind}" if text else f"a {kind}"
        raise SpecError(
            f"{ref} is {what}: --runtime onnx serves classifiers and regressors of numeric features"
        )
