"""The model registry: immutable versions, aliases, verified loads, encryption at rest, export.

Layout: `SKYLIFT_HOME/registry/<name>/<version>/{model.safetensors[.enc], model.json, MANIFEST.json}`
and `registry/<name>/aliases.json`. A model reference is `NAME` (latest), `NAME:VERSION` or
`NAME@ALIAS`.
"""

from __future__ import annotations

from pathlib import Path

from skylift.registry._listing import VersionInfo, sort_versions
from skylift.registry._ref import ModelRef, parse_ref
from skylift.registry._serving import spec_serve_section
from skylift.registry._store import LoadedModel, ModelEntry, ModelVersion, Pruning, Registry, Verification
from skylift.registry._summary import run_metadata
from skylift.security import MasterKey

__all__ = [
    "LoadedModel",
    "ModelEntry",
    "ModelRef",
    "ModelVersion",
    "Pruning",
    "Registry",
    "Verification",
    "VersionInfo",
    "load_model",
    "parse_ref",
    "run_metadata",
    "sort_versions",
    "spec_serve_section",
]


def load_model(
    ref: str | ModelRef, home: Path | str | None = None, master_key: bytes | MasterKey | None = None
) -> LoadedModel:
    """Load a verified model by reference, e.g. `load_model("mnist-mlp@production")`.

    `home` defaults to $SKYLIFT_HOME or ~/.skylift; `master_key` to $SKYLIFT_MASTER_KEY (needed
    only for encrypted versions). Raises ModelNotFound, IntegrityError (naming the bad file) or
    AuthError; never returns weights that fail their manifest.
    """
    from skylift.home import skylift_home
    from skylift.security import master_key_from_env

    key = master_key if master_key is not None else master_key_from_env()
    return Registry(skylift_home(home), key).load(ref)
