"""The public API is small and pinned; importing skylift stays light."""

from __future__ import annotations

import subprocess
import sys

import skylift


def test_public_api_is_pinned() -> None:
    assert skylift.__all__ == sorted(
        [
            "AuthError",
            "DataError",
            "IntegrityError",
            "JobSpec",
            "ModelNotFound",
            "Overloaded",
            "Registry",
            "SkyliftError",
            "SpecError",
            "__version__",
            "build_model",
            "evaluate",
            "fit",
            "load_model",
            "load_spec",
            "load_splits",
            "parse_spec",
            "predict",
            "read_source",
            "resume",
        ]
    )
    for name in skylift.__all__:
        assert getattr(skylift, name) is not None


def test_import_and_help_load_no_heavy_libraries() -> None:
    code = (
        "import sys, skylift, skylift.cli; skylift.cli._parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'pyarrow', 'matplotlib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
