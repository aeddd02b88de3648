"""A language model over texts: each text's log-likelihood (natural log, summed over its tokens).

A text's tokens t_1..t_n are scored after an end-of-text token, as a document starts in training
(each follows the previous document's end-of-text): log p(t_1 | eos) + ... + log p(t_n | eos,
t_1..t_n-1), nothing added after the text. A text longer than the model's block is scored in
consecutive windows of `block_size` tokens, each read alone (as training reads its blocks), so the
sum equals the task's loss summed over those windows, negated. An empty text scores 0 over 0 tokens.
Shape legend: W windows, T block size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from skylift.batch._predictor import encode_part, model_error

if TYPE_CHECKING:
    import torch
    from torch import nn

    from skylift.data._tokenizer import TextTokenizer

COLUMNS = (("log_likelihood", "float64"), ("tokens", "int64"))
_LOGIT_VALUES = 1 << 24  # float32 logits held per forward pass (64 MiB): bounds the windows per pass
_IGNORE = -100  # target id of padding, skipped by cross_entropy


class LikelihoodPredictor:
    """Scores batches of texts (lists of str) with a causal language model."""

    def __init__(self, module: nn.Module, tokenizer: TextTokenizer, block_size: int, eos_id: int) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.block = block_size
        self.eos_id = eos_id
        self.vocab = tokenizer.vocab_size

    def chunk(self, batches: Iterable[list[str]]) -> tuple[int, bytes]:
        """(rows, part bytes): log-likelihoods float64 (n,) and token counts int64 (n,)."""
        scores: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        for texts in batches:
            flat, lengths = self.tokenizer.encode_pieces(texts)
            scores.append(self.score(flat, lengths))
            counts.append(lengths.astype(np.int64))
        ll = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)
        n = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        return len(ll), encode_part([ll, n])

    def windows(self, flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x int64 (W, T), y int64 (W, T) padded with -100, owner int64 (W,): each window's text)."""
        xs, ys, owners = [], [], []
        start = 0
        for i, n in enumerate(lengths.tolist()):
            seq = np.concatenate([[self.eos_id], flat[start : start + n]])
            start += n
            for lo in range(0, n, self.block):
                x = seq[lo : lo + self.block]
                y = seq[lo + 1 : lo + 1 + self.block]
                xs.append(np.pad(x, (0, self.block - len(x))))
                ys.append(np.pad(y, (0, self.block - len(y)), constant_values=_IGNORE))
                owners.append(i)
        if not xs:
            empty = np.zeros((0, self.block), dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.int64)
        return np.stack(xs).astype(np.int64), np.stack(ys).astype(np.int64), np.array(owners, dtype=np.int64)

    def score(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Each text's log-likelihood, float64 (N,), from its token ids one text after another."""
        import torch

        x_WT, y_WT, owner_W = self.windows(flat, lengths)
        total = torch.zeros(len(lengths), dtype=torch.float64)
        step = max(1, _LOGIT_VALUES // (self.block * self.vocab))
        with torch.inference_mode():
            for lo in range(0, len(x_WT), step):
                x, y = torch.from_numpy(x_WT[lo : lo + step]), torch.from_numpy(y_WT[lo : lo + step])
                nll_W = self._nll(x, y)
                total.index_add_(0, torch.from_numpy(owner_W[lo : lo + step]), nll_W)
        out: np.ndarray = (-total).numpy()
        return out

    def _nll(self, x_WT: torch.Tensor, y_WT: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        try:
            logits_WTV = self.module(x_WT)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise model_error(exc) from None
        nll = F.cross_entropy(
            logits_WTV.reshape(-1, logits_WTV.shape[-1]).double(),
            y_WT.reshape(-1),
            reduction="none",
            ignore_index=_IGNORE,
        )
        return nll.reshape(y_WT.shape).sum(1)
