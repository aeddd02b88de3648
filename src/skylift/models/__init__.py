"""Models from a job spec: declarative layers or a factory, built into a torch nn.Module."""

from __future__ import annotations

from skylift.models._build import build_model
from skylift.models._layers import LAYERS
from skylift.models._summary import count_parameters, describe_model
from skylift.models._transformer import transformer_blocks

LAYER_TYPES: tuple[str, ...] = tuple(LAYERS)
"""Names of the declarative layer types accepted in `model.layers`."""

__all__ = ["LAYER_TYPES", "build_model", "count_parameters", "describe_model", "transformer_blocks"]
