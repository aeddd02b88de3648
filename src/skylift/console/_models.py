"""The registry as the console shows it: models, versions, one version's card; promote and delete.

A thin layer over `skylift.registry.Registry`: every version shown was checked against its
manifest by the registry. Versions are immutable, so a listing is cached until a version folder,
its manifest or the aliases change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift.console._files import as_dict
from skylift.registry import Registry, VersionInfo


@dataclass(frozen=True)
class ModelRow:
    name: str
    task: str | None
    latest: int
    versions: tuple[int, ...]
    aliases: dict[str, int]
    created: str | None
    monitor: str | None
    metric: float | None
    problem: str | None


class Models:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._versions: dict[str, tuple[tuple[Any, ...], list[VersionInfo]]] = {}

    def _stamp(self, name: str) -> tuple[Any, ...]:
        folder = self.registry.root / name
        parts: list[Any] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            # version folders, their manifest and model.json, and aliases.json (rewritten by a promote)
            for f in (path, path / "MANIFEST.json", path / "model.json"):
                try:
                    st = f.stat()
                    parts.append((str(f), st.st_mtime_ns, st.st_ino, st.st_size))
                except OSError:
                    continue
        return tuple(parts)

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of `name` (ModelNotFound for an unknown name), checked by the registry."""
        stamp = self._stamp(name)
        hit = self._versions.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        found = self.registry.versions(name)
        self._versions[name] = (stamp, found)
        return found

    def rows(self) -> list[ModelRow]:
        out = []
        for e in self.registry.list():
            latest = self.versions(e.name)[-1]
            out.append(
                ModelRow(
                    e.name, latest.task, e.latest, e.versions, dict(sorted(e.aliases.items())),
                    latest.created, latest.monitor, latest.metric, latest.problem,
                )
            )  # fmt: skip
        return out

    def card(self, name: str, version: int | None) -> dict[str, Any]:
        """One version (latest when None): model.json after the manifest check, its verification,
        and the pieces a page shows (signature, lineage links)."""
        ref = f"{name}:{version}" if version is not None else name
        checked = self.registry.check(ref)
        info: dict[str, Any] = {}
        problem = None
        if checked.ok:
            info = self.registry.info(checked.ref)
        else:
            problem = "; ".join(checked.problems)
        sig = as_dict(info.get("signature"))
        lineage = as_dict(info.get("lineage"))
        return {
            "ref": checked.ref,
            "version": int(checked.ref.rsplit(":", 1)[1]),
            "ok": checked.ok,
            "encrypted": checked.encrypted,
            "authenticated": checked.authenticated,
            "problem": problem,
            "info": info,
            "signature": sig,
            "kind": sig.get("kind", "classifier") if sig else None,
            "answers": _answers(info, sig),
            "metrics": as_dict(info.get("metrics")),
            "lineage": lineage,
            "files": info.get("files") or {},
        }

    def promote(self, name: str, version: int, alias: str) -> int | None:
        return self.registry.promote(name, version, alias)

    def delete(self, name: str, version: int, force: bool) -> list[str]:
        return self.registry.delete(name, version, force=force)


def _answers(info: dict[str, Any], sig: dict[str, Any]) -> tuple[str, str] | None:
    """(label, value): what the outputs mean, by signature kind (as `models show` says it)."""
    if not sig:
        return None
    data = as_dict(info.get("data"))
    kind = sig.get("kind")
    if kind == "regressor":
        return "targets", ", ".join(str(t) for t in sig.get("targets", []))
    if kind == "generator":
        return "vocabulary", f"{data.get('vocab_size', '?')} tokens"
    if kind == "embedder":
        return "embedding", f"{data.get('dim', '?')} values per text"
    return "classes", ", ".join(str(c) for c in sig.get("classes", []))


def make(home: Path, key_file: str | None) -> Models:
    from skylift.security import master_key_from_env

    return Models(Registry(home, master_key_from_env(key_file)))
