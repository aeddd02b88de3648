"""Numeric inputs: float32 rows of the model's input shape, batched by rows on one batcher.

Shape legend: R rows   S... per-row input shape   O outputs per row
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from skylift.serve import codec
from skylift.serve.codec import Signature, V2Request
from skylift.serve.runtimes._base import Batched, Context

Run = Callable[[np.ndarray], np.ndarray]


def torch_run(module: Any, softmax: bool) -> Run:
    """The module's outputs (softmax of the logits for a classifier), float32 numpy."""
    import torch

    def run(x_RS: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out_RO = module(torch.from_numpy(x_RS))
            return (torch.softmax(out_RO.float(), dim=-1) if softmax else out_RO.float()).numpy()

    return run


def onnx_run(path: Path, threads: int, softmax: bool) -> Run:
    """onnxruntime over the exported model (input `input`); softmax of the logits in numpy."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x_RS: np.ndarray) -> np.ndarray:
        out_RO: np.ndarray = np.asarray(session.run(None, {"input": x_RS})[0], dtype=np.float32)
        if not softmax:
            return out_RO
        z_RO: np.ndarray = np.exp(out_RO - out_RO.max(axis=1, keepdims=True))
        probs_RO: np.ndarray = z_RO / z_RO.sum(axis=1, keepdims=True)
        return probs_RO

    return run


def model_run(ctx: Context, softmax: bool) -> Run:
    """The run function of `--runtime` torch or onnx (exported from the verified load)."""
    c = ctx.config
    if c.runtime == "onnx":
        from skylift.registry import Registry

        # Exported into the server's private state folder.
        path = Registry(c.home, c.master_key).export(
            f"{ctx.name}:{ctx.version}", "onnx", c.state_dir / f"{ctx.name}-{ctx.version}.onnx"
        )
        return onnx_run(path, c.threads, softmax)
    return torch_run(ctx.loaded.module, softmax)


class NumericRows(Batched):
    """Tensor `input` (V2, any numeric datatype) or TF-Serving rows, as float32 (R, *input_shape)."""

    def __init__(self, ctx: Context, run: Run) -> None:
        c = ctx.config
        self.signature = Signature(tuple(ctx.loaded.input_shape), ())
        for rows in (1, c.max_batch_rows):  # warm-up: first calls allocate and pick kernels
            run(np.zeros((rows, *self.signature.input_shape), dtype=np.float32))
        super().__init__(ctx, run)

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": codec.INPUT_NAME, "datatype": "FP32", "shape": [-1, *self.signature.input_shape]}]

    def decode_v2(self, body: bytes, header_length: int | None, outputs: tuple[str, ...]) -> V2Request:
        return codec.decode_v2(body, header_length, self.signature, outputs)

    def decode_v1(self, body: bytes) -> tuple[np.ndarray, bool]:
        return codec.decode_v1(body, self.signature)

    def cache_input(self, x: np.ndarray) -> np.ndarray | bytes:
        return x

    def submit(self, x: np.ndarray, deadline: float) -> Awaitable[np.ndarray]:
        return self.batcher.submit(x, deadline)
