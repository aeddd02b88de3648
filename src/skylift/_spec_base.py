"""The base of every job-spec section: frozen, unknown fields refused, true/false never read as a number."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """true/false where a number or list belongs is a mistake (lax pydantic reads it as 1/0)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
            raise ValueError("true/false is not valid here")
        return value


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or bool in get_args(annotation) or annotation is Any
