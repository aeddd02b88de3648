"""skylift: train, tune, register and serve PyTorch models, from one laptop to a cluster.

The public API is what `__all__` lists; names load lazily so `import skylift` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "JobSpec": "skylift.spec",
    "load_spec": "skylift.spec",
    "parse_spec": "skylift.spec",
    "SkyliftError": "skylift.errors",
    "SpecError": "skylift.errors",
    "DataError": "skylift.errors",
    "ModelNotFound": "skylift.errors",
    "IntegrityError": "skylift.errors",
    "AuthError": "skylift.errors",
    "Overloaded": "skylift.errors",
    "load_splits": "skylift.data",
    "read_source": "skylift.data",
    "build_model": "skylift.models",
    "fit": "skylift.train",
    "resume": "skylift.train",
    "evaluate": "skylift.train",
    "load_model": "skylift.registry",
    "Registry": "skylift.registry",
    "predict": "skylift.batch",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # static types for the lazy names below
    from skylift.batch import predict as predict
    from skylift.data import load_splits as load_splits
    from skylift.data import read_source as read_source
    from skylift.errors import AuthError as AuthError
    from skylift.errors import DataError as DataError
    from skylift.errors import IntegrityError as IntegrityError
    from skylift.errors import ModelNotFound as ModelNotFound
    from skylift.errors import Overloaded as Overloaded
    from skylift.errors import SkyliftError as SkyliftError
    from skylift.errors import SpecError as SpecError
    from skylift.models import build_model as build_model
    from skylift.registry import Registry as Registry
    from skylift.registry import load_model as load_model
    from skylift.spec import JobSpec as JobSpec
    from skylift.spec import load_spec as load_spec
    from skylift.spec import parse_spec as parse_spec
    from skylift.train import evaluate as evaluate
    from skylift.train import fit as fit
    from skylift.train import resume as resume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'skylift' has no attribute {name!r}")
    return getattr(import_module(module), name)
