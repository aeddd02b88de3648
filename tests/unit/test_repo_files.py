"""The repository is self-contained: its docs link only to files it holds, and it carries its license."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_docs_points_into_the_repo() -> None:
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} links outside the repo: {target}"
            assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_nothing_points_at_folders_outside_the_repo() -> None:
    texts = [*DOCS, *(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").iterdir(), ROOT / "pyproject.toml"]
    for path in texts:
        assert "../shared" not in path.read_text(), f"{path.relative_to(ROOT)} refers to ../shared"


def test_the_license_pyproject_names_is_in_the_repo() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
