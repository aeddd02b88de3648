"""A BERT encoder with sentence-transformers pooling, in plain torch: imported embedding models.

Reads a Hugging Face BertModel's weights under their own names, so a folder imported with
`skylift models import` runs without `transformers`; the pooling (mean, cls, max, mean_sqrt_len)
and the optional L2 normalisation are those of sentence-transformers' Pooling and Normalize
modules. Tested against sentence-transformers' `encode` on all-MiniLM-L6-v2 (within 1e-5).

Shape legend: B batch   T tokens   D hidden size   H heads   E head dim   F intermediate size
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")
_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
_IGNORED = ("pooler.", "embeddings.position_ids")  # BertModel's pooler is unused by sentence embeddings


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str

    @classmethod
    def from_hf(cls, config: Mapping[str, Any], where: str) -> BertConfig:
        """From config.json; ValueError naming the field on anything this encoder cannot run."""
        values: dict[str, Any] = {}
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            values[name] = _positive(config, name, where)
        values["intermediate_size"] = _positive(config, "intermediate_size", where)
        values["max_position_embeddings"] = _positive(config, "max_position_embeddings", where)
        values["type_vocab_size"] = _positive(config, "type_vocab_size", where, default=2)
        eps = config.get("layer_norm_eps", 1e-12)
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ValueError(f"{where}: layer_norm_eps must be a small positive number, got {eps!r:.40}")
        values["layer_norm_eps"] = float(eps)
        act = config.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"{where}: hidden_act {act!r:.40} is not one of {', '.join(_ACTIVATIONS)}")
        values["hidden_act"] = act
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ValueError(f"{where}: hidden_size is not a multiple of num_attention_heads")
        positions = config.get("position_embedding_type", "absolute")
        if positions != "absolute":
            raise ValueError(
                f"{where}: position_embedding_type {positions!r:.40} (only absolute is supported)"
            )
        return cls(**values)


def _positive(config: Mapping[str, Any], name: str, where: str, default: int | None = None) -> int:
    value = config.get(name, default)
    if type(value) is not int or not 0 < value <= 1 << 24:
        raise ValueError(f"{where}: {name} must be a positive whole number, got {value!r:.40}")
    return value


class _Named(nn.Module):
    """A bare container, so parameters keep the Hugging Face names (attention.self.query ...)."""

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        d, f = c.hidden_size, c.intermediate_size
        self.heads = c.num_attention_heads
        self.act = _ACTIVATIONS[c.hidden_act]
        qkv: dict[str, nn.Module] = {n: nn.Linear(d, d) for n in ("query", "key", "value")}
        norm = nn.LayerNorm(d, c.layer_norm_eps)
        self.attention = _Named(
            {"self": _Named(qkv), "output": _Named({"dense": nn.Linear(d, d), "LayerNorm": norm})}
        )
        self.intermediate = _Named({"dense": nn.Linear(d, f)})
        self.output = _Named({"dense": nn.Linear(f, d), "LayerNorm": nn.LayerNorm(d, c.layer_norm_eps)})

    def forward(self, x_BTD: torch.Tensor, keep_B11T: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        att: Any = self.attention
        q_BHTE, k_BHTE, v_BHTE = (
            getattr(att.self, n)(x_BTD).view(B, T, self.heads, D // self.heads).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        y_BHTE = F.scaled_dot_product_attention(q_BHTE, k_BHTE, v_BHTE, attn_mask=keep_B11T)
        y_BTD = att.output.dense(y_BHTE.transpose(1, 2).reshape(B, T, D))
        x_BTD = att.output.LayerNorm(y_BTD + x_BTD)
        h_BTF = self.act(self.intermediate.dense(x_BTD))  # type: ignore[operator,no-untyped-call]
        out: torch.Tensor = self.output.LayerNorm(self.output.dense(h_BTF) + x_BTD)  # type: ignore[operator]
        return out


class BertEmbedder(nn.Module):
    """(ids (B, T) int64, mask (B, T) bool: True at real tokens) -> sentence embeddings (B, D)."""

    def __init__(self, c: BertConfig, pooling: str, normalize: bool) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        d = c.hidden_size
        self.pooling, self.normalize = pooling, normalize
        self.embeddings = _Named(
            {
                "word_embeddings": nn.Embedding(c.vocab_size, d),
                "position_embeddings": nn.Embedding(c.max_position_embeddings, d),
                "token_type_embeddings": nn.Embedding(c.type_vocab_size, d),
                "LayerNorm": nn.LayerNorm(d, c.layer_norm_eps),
            }
        )
        self.encoder = _Named({"layer": nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))})

    def forward(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        emb: Any = self.embeddings
        T = ids_BT.shape[1]
        positions_T = torch.arange(T, device=ids_BT.device)
        # Token type 0 for every token: one sentence per input, as sentence-transformers encodes.
        x_BTD = emb.word_embeddings(ids_BT) + emb.position_embeddings(positions_T)
        x_BTD = emb.LayerNorm(x_BTD + emb.token_type_embeddings.weight[0])
        keep_B11T = mask_BT[:, None, None, :]
        for layer in self.encoder.layer:  # type: ignore[union-attr]
            x_BTD = layer(x_BTD, keep_B11T)
        out_BD = _pool(x_BTD, mask_BT, self.pooling)
        return F.normalize(out_BD, p=2.0, dim=1) if self.normalize else out_BD


def _pool(x_BTD: torch.Tensor, mask_BT: torch.Tensor, mode: str) -> torch.Tensor:
    """sentence-transformers' Pooling over the real tokens (its order of operations, for equal floats)."""
    if mode == "cls":
        return x_BTD[:, 0]
    weight_BT1 = mask_BT.unsqueeze(-1).to(x_BTD.dtype)
    if mode == "max":
        return x_BTD.masked_fill(weight_BT1 == 0, -1e9).max(dim=1).values
    summed_BD = (x_BTD * weight_BT1).sum(dim=1)
    count_B1 = weight_BT1.sum(dim=1).clamp(min=1e-9)
    return summed_BD / (count_B1.sqrt() if mode == "mean_sqrt_len" else count_B1)


def bert_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face BERT checkpoint's tensors under the encoder's names: a `bert.` prefix (as in
    BertForMaskedLM) dropped, the pooler and position ids left out."""
    state = {}
    for key, value in tensors.items():
        key = key.removeprefix("bert.")
        if not key.startswith(_IGNORED):
            state[key] = value
    return state


def build_embedder(
    architecture: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], where: str
) -> BertEmbedder:
    """The encoder of model.json's `architecture` with `tensors` loaded strictly, in eval mode.

    ValueError naming what does not fit (a missing, extra or misshapen weight).
    """
    config = BertConfig.from_hf(architecture["config"], where)
    with torch.random.fork_rng(devices=[]):  # init draws from the global RNG; the weights replace it
        model = BertEmbedder(config, str(architecture["pooling"]), bool(architecture["normalize"]))
    try:
        model.load_state_dict(bert_state(tensors), strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise ValueError(
            f"{where}: the weights do not fit a BERT of config.json ({lines[-1][:300]})"
        ) from None
    return model.eval()
