"""The model applied to a chunk, packed as part bytes: logits -> class ids (and probabilities or
top-k) for classifiers, or named value columns (a regressor's targets).

Shape legend: n rows of a chunk, B rows of a batch, S... the model's per-sample input shape,
C classes, K top-k (classifiers) or targets (regressors).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from skylift.errors import DataError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Outputs:
    """What every output row carries besides its class."""

    proba: bool = False
    top_k: int | None = None
    columns: tuple[tuple[str, str], ...] = ()
    """Named value columns (name, numpy dtype) instead of a class: a regressor's targets, or a
    language model's log-likelihood and token count. Empty for classifiers."""
    key: str | None = None
    """The name of a key column that leads every row (`path` for media files; None: no key). Its
    values travel as the last array of each part."""


def encode_part(arrays: list[np.ndarray]) -> bytes:
    """A chunk's result arrays as consecutive .npy records (deterministic bytes, never pickled)."""
    buffer = io.BytesIO()
    for array in arrays:
        np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_part(stream: BinaryIO, outputs: Outputs) -> list[np.ndarray]:
    """What `encode_part` wrote: class ids (n,), then proba (n, C) or top-k ids and probabilities (n, K);
    or one (n,) array per value column; then the keys (n,) when the outputs have a key column."""
    count = len(outputs.columns) or 1 + int(outputs.proba) + 2 * int(outputs.top_k is not None)
    count += outputs.key is not None
    return [np.lib.format.read_array(stream, allow_pickle=False) for _ in range(count)]


class Predictor:
    """Runs a model in eval mode under inference_mode over a chunk's batches."""

    def __init__(
        self, module: nn.Module, input_shape: tuple[int, ...], n_classes: int, outputs: Outputs
    ) -> None:
        self.module = module.eval()
        self.input_shape = input_shape
        self.n_classes = n_classes
        self.outputs = outputs

    def chunk(self, batches: Iterable[np.ndarray]) -> tuple[int, bytes]:
        """(rows, part bytes) of one chunk; batches are float32 (B, ...) with prod(S) values per row."""
        import torch

        ids: list[torch.Tensor] = []
        first: list[torch.Tensor] = []  # proba (B, C), or top-k ids (B, K)
        second: list[torch.Tensor] = []  # top-k probabilities (B, K)
        with torch.inference_mode():
            for x in batches:
                x_BS = torch.from_numpy(x).reshape(len(x), *self.input_shape)  # a view for 2-D inputs
                try:
                    logits_BC = self.module(x_BS)
                except (RuntimeError, ValueError, IndexError) as exc:  # what torch raises on bad input
                    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    raise DataError(f"the model failed on this input: {line}") from None
                ids.append(logits_BC.argmax(1))
                if self.outputs.proba:
                    first.append(torch.softmax(logits_BC, dim=1))
                elif self.outputs.top_k is not None:
                    p_BK, i_BK = torch.topk(torch.softmax(logits_BC, dim=1), self.outputs.top_k, dim=1)
                    first.append(i_BK)
                    second.append(p_BK)
        ids_n = _cat(ids, None, np.int64)
        arrays = [ids_n]
        if self.outputs.proba:
            arrays.append(_cat(first, self.n_classes, np.float32))
        elif self.outputs.top_k is not None:
            arrays.append(_cat(first, self.outputs.top_k, np.int64))
            arrays.append(_cat(second, self.outputs.top_k, np.float32))
        return len(ids_n), encode_part(arrays)


def _cat(parts: list[torch.Tensor], width: int | None, dtype: type[np.generic]) -> np.ndarray:
    """Batches joined as one array; an empty chunk gives shape (0,) or (0, width)."""
    import torch

    if not parts:
        return np.zeros((0,) if width is None else (0, width), dtype=dtype)
    return torch.cat(parts).numpy().astype(dtype, copy=False)


def model_error(exc: Exception) -> DataError:
    """What torch raised on input the model cannot take, as one line."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return DataError(f"the model failed on this input: {line}")


class ValuesPredictor:
    """A regressor: its outputs (B, K) in the targets' units, one float32 column per target."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], targets: int) -> None:
        self.module = module.eval()
        self.input_shape = input_shape
        self.targets = targets

    def chunk(self, batches: Iterable[np.ndarray]) -> tuple[int, bytes]:
        """(rows, part bytes) of one chunk; batches are float32 features or int64 token ids (B, T)."""
        import torch

        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for x in batches:
                x_BS = torch.from_numpy(x).reshape(len(x), *self.input_shape)
                try:
                    out.append(self.module(x_BS).reshape(len(x), self.targets).float())
                except (RuntimeError, ValueError, IndexError) as exc:
                    raise model_error(exc) from None
        values_nK = _cat(out, self.targets, np.float32)
        return len(values_nK), encode_part([values_nK[:, j] for j in range(self.targets)])


class KeyedPredictor:
    """Another predictor over batches of (keys, x): its part, then the chunk's keys as one more array."""

    def __init__(self, inner: Predictor | ValuesPredictor) -> None:
        self.inner = inner

    def chunk(self, batches: Iterable[tuple[list[str], np.ndarray]]) -> tuple[int, bytes]:
        keys: list[str] = []

        def values() -> Iterable[np.ndarray]:
            for batch_keys, x in batches:
                keys.extend(batch_keys)
                yield x

        rows, data = self.inner.chunk(values())
        return rows, data + encode_part([np.array(keys, dtype=str)])
