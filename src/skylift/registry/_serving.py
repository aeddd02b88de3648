"""The serving defaults a version records: the `serve:` section of the spec it was trained from.

`skylift serve` starts from them (command-line flags override), so a spec's `serve:` section is
what serves its model. The section is copied into model.json at registration: a run folder may be
deleted later, a registered version never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skylift.errors import SpecError
from skylift.home import RUN_ID

SPEC_FILE = "spec.yaml"  # the resolved spec in each run folder, runs/<run-id>/spec.yaml


def serve_section(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` validated as a spec's `serve:` section, defaults filled in; SpecError names the field."""
    from pydantic import ValidationError

    from skylift.spec import ServeSpec

    try:
        return ServeSpec.model_validate(dict(raw)).model_dump(mode="json")
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in ("serve", *err["loc"]))
        raise SpecError(f"{field}: {err['msg'].lower()}, got {err.get('input')!r}") from None


def run_serve_section(home: Path, run_id: Any) -> dict[str, Any] | None:
    """The `serve:` section of the run `home/runs/<run_id>/` (see `spec_serve_section`)."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        return None
    return spec_serve_section(home / "runs" / run_id / SPEC_FILE)


def spec_serve_section(spec_file: Path) -> dict[str, Any] | None:
    """The validated `serve:` section of a spec file; None when there is no such file or section,
    or it does not validate (a registration never fails over serving defaults)."""
    import yaml

    try:
        raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        return serve_section(raw["serve"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError, SpecError):
        return None
