"""Media preprocessing as data: what a registered model records so that every stage decodes alike."""

from __future__ import annotations

from typing import Any

from skylift.data._audio import AudioPrep
from skylift.data._image import ImagePrep
from skylift.errors import DataError

Preprocessing = ImagePrep | AudioPrep
_KINDS: dict[str, type[ImagePrep] | type[AudioPrep]] = {"image": ImagePrep, "audio": AudioPrep}


def preprocessing_from_json(d: dict[str, Any] | None) -> Preprocessing | None:
    """The inverse of `prep.to_json()`; None for a model without media inputs."""
    if d is None:
        return None
    try:
        return _KINDS[d["kind"]].from_json(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the model's recorded preprocessing is invalid ({exc!r})") from None
