"""Model references: `NAME` (latest), `NAME:VERSION` or `NAME@ALIAS`, parsed strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass

from skylift.errors import SpecError

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # as JobSpec.name, minus '..' (checked apart)
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # no sign, no leading zero: `x:01` would not round-trip
_FORM = "NAME, NAME:VERSION or NAME@ALIAS (e.g. mnist-mlp:3, mnist-mlp@production)"


def check_name(name: str) -> str:
    """`name` if it is a valid model name (a safe single folder name), else SpecError."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise SpecError(
            f"model name {name!r} is not allowed: use 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def check_alias(alias: str) -> str:
    """`alias` if it is a valid alias (production, staging, ...), else SpecError."""
    if not _ALIAS.fullmatch(alias):
        raise SpecError(
            f"alias {alias!r} is not allowed: use 1-32 lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return alias


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecError(f"model version must be a positive integer, got {version!r}")
    return version


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference; at most one of `version` and `alias` is set (neither means latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.version is not None:
            check_version(self.version)
        if self.alias is not None:
            check_alias(self.alias)
        if self.version is not None and self.alias is not None:
            raise SpecError("a model reference takes a version or an alias, not both")

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> ModelRef:
    """Parse `NAME`, `NAME:VERSION` or `NAME@ALIAS`; one SpecError line for anything else."""
    if not isinstance(text, str):
        raise SpecError(f"a model reference must be text like {_FORM}, got {type(text).__name__}")
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if text.count(":") + text.count("@") > 1:
        raise SpecError(f"model reference {shown} is malformed: expected {_FORM}")
    name, sep, tail = text.partition(":") if ":" in text else text.partition("@")
    if not name:
        raise SpecError(f"model reference {shown} has no model name: expected {_FORM}")
    check_name(name)
    if sep == ":":
        if not _VERSION.fullmatch(tail):
            raise SpecError(f"model reference {shown}: version must be a positive integer like {name}:1")
        return ModelRef(name, version=int(tail))
    if sep == "@":
        if not tail:
            raise SpecError(f"model reference {shown} has an empty alias: expected e.g. {name}@production")
        return ModelRef(name, alias=check_alias(tail))
    return ModelRef(name)
