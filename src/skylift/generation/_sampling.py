"""Next tokens from logits, one row per sequence: greedy, temperature and top-p, each row with its own RNG.

A row's draw depends only on its own logits and its own torch.Generator (one uniform number per
token, inverse-CDF sampling), never on the other rows, so a seeded request gives the same tokens
alone or batched with others. Shape legend: M rows   V vocabulary
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sample(
    logits_MV: torch.Tensor,
    temperature: Sequence[float],
    top_p: Sequence[float],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """One token id per row; rows with temperature 0 take the argmax (their generator may be None)."""
    out_M = logits_MV.argmax(dim=-1)
    drawn = [i for i, t in enumerate(temperature) if t > 0]
    if drawn:
        rows = torch.tensor(drawn)
        temps = torch.tensor([temperature[i] for i in drawn], dtype=logits_MV.dtype)
        probs_mV = torch.softmax(logits_MV[rows] / temps[:, None], dim=-1)
        gens = [generators[i] for i in drawn]
        u_m = torch.cat([torch.rand(1, generator=g) for g in gens])
        nucleus = [j for j, i in enumerate(drawn) if top_p[i] < 1.0]
        full = [j for j, i in enumerate(drawn) if top_p[i] >= 1.0]
        if full:
            pick = torch.tensor(full)
            out_M[rows[pick]] = _inverse_cdf(probs_mV[pick], u_m[pick])
        if nucleus:
            pick = torch.tensor(nucleus)
            p = torch.tensor([top_p[drawn[j]] for j in nucleus], dtype=probs_mV.dtype)
            sorted_mV, order_mV = probs_mV[pick].sort(dim=-1, descending=True)
            # keep the most probable tokens until their mass reaches top_p (always the first one)
            sorted_mV = sorted_mV * ((sorted_mV.cumsum(-1) - sorted_mV) < p[:, None])
            index_m = _inverse_cdf(sorted_mV, u_m[pick])
            out_M[rows[pick]] = order_mV.gather(1, index_m[:, None])[:, 0]
    tokens: list[int] = out_M.tolist()
    return tokens


def _inverse_cdf(probs_mV: torch.Tensor, u_m: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative-probability interval holds u * total, per row."""
    cdf_mV = probs_mV.cumsum(dim=-1)
    index_m = torch.searchsorted(cdf_mV, (u_m * cdf_mV[:, -1])[:, None], right=True)[:, 0]
    return index_m.clamp_(max=probs_mV.shape[-1] - 1)
