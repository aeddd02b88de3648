"""Embedders: one vector per text (an imported sentence-transformers model: pooled, and normalised
when the model says so), over KServe V2 / TF-Serving and OpenAI's /v1/embeddings.

Shape legend: R rows   T tokens   D embedding size
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skylift.serve.runtimes._base import Context, Named, Runtime
from skylift.serve.runtimes._text import TextRows


def _run(module: Any, pad_id: int) -> Any:
    import torch

    def run(ids_RT: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(ids_RT)
        mask_RT = ids != 0
        if pad_id != 0:  # undo the server's pad <-> 0 swap (tasks._text.encode) for the lookup
            ids = torch.where(mask_RT, torch.where(ids == pad_id, 0, ids), pad_id)
        with torch.inference_mode():
            out: np.ndarray = module(ids, mask_RT).float().numpy()
            return out

    return run


class Embedder(Runtime):
    kind = "embedder"
    outputs = ("embedding",)

    def __init__(self, ctx: Context) -> None:
        data = ctx.loaded.data
        self.text = TextRows(ctx, _run(ctx.loaded.module, int(data.get("pad_id", 0))))
        super().__init__(ctx, self.text, int(data["dim"]))

    def named(self, out: np.ndarray) -> Named:
        return {"embedding": out}

    def output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "embedding", "datatype": "FP32", "shape": [-1, self.width]}]

    def parameters(self) -> dict[str, Any]:
        return {"max_length": self.text.max_length}

    async def embed(self, texts: list[str], deadline: float) -> tuple[np.ndarray, int]:
        ids_RL, lengths_R = self.text.encode(texts)
        return await self.text.batcher.submit(ids_RL, deadline), int(lengths_R.sum())
