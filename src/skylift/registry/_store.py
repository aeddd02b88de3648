"""The registry on disk: immutable numbered versions, aliases, and the lock that orders writers."""

from __future__ import annotations

import builtins
import contextlib
import difflib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic
from skylift._atomic import _fsync_dir  # the rename of a whole version folder needs it too
from skylift.data._media import Preprocessing, preprocessing_from_json
from skylift.errors import IntegrityError, ModelNotFound, SkyliftError, SpecError
from skylift.registry import _artifact
from skylift.registry._listing import VersionInfo, version_info
from skylift.registry._ref import ModelRef, check_alias, check_name, check_version, parse_ref
from skylift.registry._serving import run_serve_section, serve_section
from skylift.security import MasterKey

if TYPE_CHECKING:
    from torch import nn

ALIASES = "aliases.json"
_LOCK = ".lock"  # flock target; never replaced, so every writer locks the same inode
_LAST = ".last_version"  # highest version ever claimed: numbers of deleted versions are never reused
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
_STALE_TMP_S = 3600.0  # a registration's temp folder this old belongs to a writer that was killed


@dataclass(frozen=True)
class ModelVersion:
    """One registered version and its folder."""

    name: str
    version: int
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True)
class ModelEntry:
    """A model name with its versions (ascending) and aliases (alias -> version)."""

    name: str
    versions: tuple[int, ...]
    aliases: dict[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return self.versions[-1]


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: `module` in eval mode on the CPU, `info` its model.json."""

    module: nn.Module
    info: dict[str, Any]
    name: str
    version: int
    files: dict[str, Any] = field(default_factory=dict)
    """The verified manifest's entries: file name -> {sha256, size}."""
    tokenizer: str | None = None
    """A text model's tokenizer (tokenizer.json text), verified and decrypted like the weights."""

    @property
    def task(self) -> str:
        return str(self.info.get("task", "classification"))

    @property
    def data(self) -> dict[str, Any]:
        """model.json's "data": task, classes or targets, input shape, vocabulary, scaling."""
        found = self.info.get("data")
        return dict(found) if isinstance(found, dict) else {"task": "classification"}

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def preprocessing(self) -> Preprocessing | None:
        """How an image or audio file becomes this model's input (model.json "data.preprocessing")."""
        return preprocessing_from_json(self.data.get("preprocessing"))

    @property
    def classes(self) -> list[Any]:
        return list(self.info["signature"].get("classes", []))

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = self.info.get("data", {}).get("input_shape")
        return tuple(shape) if shape else tuple(self.info["signature"]["inputs"][0]["shape"][1:])


@dataclass(frozen=True)
class Verification:
    """What `Registry.check` found for one version."""

    ref: str
    problems: tuple[str, ...]
    """One line per problem, each naming its file; empty when all is well."""
    encrypted: bool
    authenticated: bool
    """The manifest's MAC and the weights' GCM tag were checked too (an encrypted version, with its
    key). An encrypted version checked without its key passes on hashes alone: `authenticated` False."""
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    """model.json as checked (empty when it could not be read)."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Pruning:
    """What `Registry.prune` deleted, or would delete in a dry run."""

    name: str
    delete: tuple[int, ...]
    """Versions deleted (or to delete): beyond the newest `keep`, with no alias."""
    keep: tuple[int, ...]
    """Versions that stay: the newest `keep` and every aliased one."""
    aliases: dict[str, int]
    applied: bool
    """False for a dry run: nothing was deleted."""


def _as_key(master_key: bytes | MasterKey | None) -> MasterKey | None:
    if master_key is None or isinstance(master_key, MasterKey):
        return master_key
    return MasterKey(bytes(master_key))


class Registry:
    """Model versions under `home/registry/<name>/<version>/`, aliases in `<name>/aliases.json`.

    Contract: a version folder appears whole (built in a hidden temp folder, then renamed) and is
    never changed afterwards; a version number is never reused, even after a delete. Writers of one
    name (register's number claim, promote, delete) serialise on an flock of `<name>/.lock`, so
    concurrent processes are safe; readers take no lock. Every read of a version (`load`, `info`,
    `export`) verifies MANIFEST.json first. With `master_key`, new versions store their weights
    AES-256-GCM encrypted; loading an encrypted version needs the same key, and a plain version is
    refused (it could have been swapped in for an encrypted one).
    """

    def __init__(self, home: Path | str, master_key: bytes | MasterKey | None = None) -> None:
        self.root = Path(home) / "registry"
        self._key = _as_key(master_key)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r}, encrypts={self.encrypts})"

    @property
    def encrypts(self) -> bool:
        """Whether new versions are stored encrypted (a master key was given)."""
        return self._key is not None

    # -- writers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)  # closing releases the flock

    def _claim_version(self, name: str) -> int:
        with self._locked(name) as folder:
            try:
                last = int((folder / _LAST).read_text().strip() or 0)
            except (FileNotFoundError, ValueError):
                last = 0
            version = max([last, *self._versions(name)]) + 1
            _atomic.write_text(folder / _LAST, f"{version}\n")
            _remove_stale_temps(folder)
        return version

    def register(
        self,
        name: str,
        state_dict: Mapping[str, Any],
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        serve: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store `state_dict` as the next version of `name`; `meta` is a skylift checkpoint's meta.

        `serve`: the serving defaults to record (a spec's `serve:` section); when not given, the
        section of the spec in the run folder `home/runs/<meta run_id>/`, if there is one.
        """
        check_name(name)
        metrics, lineage = dict(metrics or {}), dict(lineage or {})
        _artifact.check_metadata(meta, metrics, lineage)  # bad input changes nothing on disk
        defaults = (
            serve_section(serve)
            if serve is not None
            else run_serve_section(self.root.parent, meta.get("run_id"))
        )
        weights = _artifact.prepare_weights(state_dict)
        return self._add_version(
            name,
            lambda v: _artifact.build_files(name, v, weights, meta, metrics, lineage, self._key, defaults),
        )

    def import_folder(self, path: Path | str, name: str) -> ModelVersion:
        """Register a local Hugging Face / sentence-transformers folder (a BERT encoder with
        safetensors weights and tokenizer.json) as the next version of `name`, an embedder.

        The folder is checked end to end first (DataError, one line; pickled weights are refused):
        a folder that cannot be served changes nothing on disk.
        """
        from skylift.registry._import import import_files, read_folder

        check_name(name)
        found = read_folder(Path(path))
        return self._add_version(name, lambda v: import_files(name, v, found, self._key))

    def _add_version(self, name: str, files_of: Callable[[int], Mapping[str, bytes]]) -> ModelVersion:
        """Claim the next version number, write `files_of(version)` into a temp folder, rename it in."""
        version = self._claim_version(name)
        files = files_of(version)
        folder = self.root / name
        tmp = folder / f".tmp-{version}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            for file, data in files.items():
                _atomic.write_bytes(tmp / file, data)
            os.rename(tmp, folder / str(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(folder)
        return ModelVersion(name, version, folder / str(version))

    def promote(self, name: str, version: int, alias: str) -> int | None:
        """Point `alias` at `name:version`; return the version it pointed at before (or None)."""
        check_name(name)
        check_version(version)
        check_alias(alias)
        self._need(name, version)
        with self._locked(name) as folder:
            self._need(name, version)
            aliases = self._aliases(name)
            before = aliases.get(alias)
            aliases[alias] = version
            _atomic.write_json(folder / ALIASES, aliases)
        return before

    def delete(self, name: str, version: int, force: bool = False) -> list[str]:
        """Remove `name:version`; refused while an alias points at it unless `force` (which drops them).

        Returns the aliases dropped.
        """
        check_name(name)
        check_version(version)
        self._need(name, version)
        with self._locked(name) as folder:
            self._need(name, version)
            aliases = self._aliases(name)
            pointing = sorted(a for a, v in aliases.items() if v == version)
            if pointing and not force:
                raise SpecError(
                    f"{name}:{version} is the target of alias {', '.join(pointing)}: promote another "
                    "version first, or delete with --force to drop the alias too"
                )
            if pointing:
                _atomic.write_json(folder / ALIASES, {a: v for a, v in aliases.items() if v != version})
            _remove(folder, version)
        return pointing

    def prune(self, name: str, keep: int, *, apply: bool = False) -> Pruning:
        """Delete the versions of `name` beyond the `keep` newest, never one an alias points at.

        Without `apply` it is a dry run: the plan, nothing deleted. Planned and applied under the
        name's lock, so a promote cannot land between the plan and the deletes.
        """
        check_name(name)
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise SpecError(f"keep must be a whole number >= 1, got {keep!r}")
        if not self._versions(name):  # before _locked, which would create the folder
            raise ModelNotFound(self._unknown_name(name))
        with self._locked(name) as folder:
            versions = self._versions(name)
            aliases = self._aliases(name)
            newest, pinned = set(versions[-keep:]), set(aliases.values())
            delete = tuple(v for v in versions if v not in newest and v not in pinned)
            if apply:
                for version in delete:
                    _remove(folder, version)
        kept = tuple(v for v in versions if v not in delete)
        return Pruning(name, delete, kept, aliases, apply)

    # -- readers ---------------------------------------------------------------------------

    def _versions(self, name: str) -> builtins.list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if _VERSION_DIR.fullmatch(p.name) and p.is_dir())

    def _aliases(self, name: str) -> dict[str, int]:
        path = self.root / name / ALIASES
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise IntegrityError(f"{path} is not readable JSON") from None
        if not isinstance(raw, dict) or not all(
            isinstance(a, str) and isinstance(v, int) and not isinstance(v, bool) for a, v in raw.items()
        ):
            raise IntegrityError(f"{path} is malformed: expected {{alias: version}}")
        return dict(raw)

    def _need(self, name: str, version: int) -> None:
        versions = self._versions(name)
        if not versions:
            raise ModelNotFound(self._unknown_name(name))
        if version not in versions:
            raise ModelNotFound(f"{name} has no version {version} (versions: {_ranges(versions)})")

    def _unknown_name(self, name: str) -> str:
        known = [e.name for e in self.list()]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ("" if known else "; the registry is empty")
        return f"no model named {name!r} in {self.root}{hint}"

    def list(self) -> builtins.list[ModelEntry]:
        """Every model name that has at least one version, sorted by name."""
        if not self.root.is_dir():
            return []
        entries = []
        for folder in sorted(self.root.iterdir()):
            with contextlib.suppress(SpecError):
                versions = self._versions(check_name(folder.name))
                if versions:
                    entries.append(ModelEntry(folder.name, tuple(versions), self._aliases(folder.name)))
        return entries

    def versions(self, name: str) -> builtins.list[VersionInfo]:
        """Every version of `name` with its monitored metric, creation time and aliases, ascending.

        Each is checked against its manifest first; one that fails is listed with its `problem`
        instead of its metadata, so one damaged version does not hide the others.
        """
        versions = self._versions(check_name(name))
        if not versions:
            raise ModelNotFound(self._unknown_name(name))
        return [self._version_info(name, v, self._aliases(name)) for v in versions]

    def _version_info(self, name: str, version: int, aliases: dict[str, int]) -> VersionInfo:
        pointing = [a for a, v in aliases.items() if v == version]
        try:
            found = _artifact.inspect(self.root / name / str(version), name, version, self._key)
        except SkyliftError as exc:  # e.g. encrypted under another master key
            return VersionInfo(name, version, None, tuple(sorted(pointing)), None, None, str(exc))
        if found.problems:
            problem = "; ".join(found.problems)
            return VersionInfo(name, version, None, tuple(sorted(pointing)), None, None, problem)
        return version_info(name, version, found.info, pointing)

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """(name, version) of a reference: NAME is the latest version, NAME@ALIAS follows the alias."""
        r = parse_ref(ref) if isinstance(ref, str) else ref
        versions = self._versions(r.name)
        if not versions:
            raise ModelNotFound(self._unknown_name(r.name))
        if r.version is not None:
            self._need(r.name, r.version)
            return r.name, r.version
        if r.alias is not None:
            aliases = self._aliases(r.name)
            if r.alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise ModelNotFound(f"{r.name} has no alias {r.alias!r} (aliases: {known})")
            version = aliases[r.alias]
            if version not in versions:
                raise ModelNotFound(f"{r} points at version {version}, which no longer exists")
            return r.name, version
        return r.name, versions[-1]

    def info(self, ref: str | ModelRef) -> dict[str, Any]:
        """model.json plus `ref`, `aliases`, `path`, per-file size + SHA-256, total `size_bytes` and
        `authenticated` (see `Verification`), after checking every file against the manifest.

        Raises IntegrityError naming the first bad file (the same checks as `check`, without
        test-decrypting the weights).
        """
        name, version = self.resolve(ref)
        where = f"{name}:{version}"
        folder = self.root / name / str(version)
        found = _artifact.inspect(folder, name, version, self._key)
        _artifact.raise_problems(where, found.problems)
        manifest = found.manifest
        info = dict(found.info)
        info["ref"] = where
        info["aliases"] = sorted(a for a, v in self._aliases(name).items() if v == version)
        info["path"] = str(folder)
        info["files"] = {f: dict(e) for f, e in manifest["files"].items()}
        info["size_bytes"] = sum(int(e["size"]) for e in manifest["files"].values())
        info["authenticated"] = found.authenticated
        return info

    def check(self, ref: str | ModelRef) -> Verification:
        """Re-hash every file of a version against its manifest and report every problem.

        With the master key, an encrypted version is also authenticated (manifest MAC) and
        test-decrypted, and a plain version is a problem: it could have been swapped in for an
        encrypted one. Without the key an encrypted version is checked by hash only.
        """
        name, version = self.resolve(ref)
        folder = self.root / name / str(version)
        found = _artifact.inspect(folder, name, version, self._key)
        problems = found.problems
        if not problems and found.authenticated and self._key is not None:
            problems = _artifact.check_decrypts(folder, name, version, self._key)
        encrypted = bool(found.info.get("encrypted"))
        return Verification(f"{name}:{version}", tuple(problems), encrypted, found.authenticated, found.info)

    def verify(self, ref: str | ModelRef) -> builtins.list[str]:
        """`check(ref).problems` as a list: empty when all is well."""
        return list(self.check(ref).problems)

    def load(self, ref: str | ModelRef) -> LoadedModel:
        """The verified model, rebuilt from model.json and its weights; IntegrityError names a bad file.

        With the master key, a plain version is refused: it could have been swapped in for an
        encrypted one.
        """
        name, version = self.resolve(ref)
        folder = self.root / name / str(version)
        found, weights, tokenizer = _artifact.read_verified(folder, name, version, self._key)
        module = _artifact.build_module(found.info, weights, f"{name}:{version}")
        files = {f: dict(e) for f, e in found.manifest["files"].items()}
        return LoadedModel(module, found.info, name, version, files, tokenizer)

    def export(self, ref: str | ModelRef, fmt: str, output: Path | str, overwrite: bool = False) -> Path:
        """Write the verified model as `fmt` "onnx" (dynamic batch) or "torchscript" to `output`, atomically.

        A folder as `output` receives `<name>-<version>.onnx|.pt`. An existing file is replaced only
        with `overwrite`, and a missing folder is never created (SpecError, before any work). An
        encrypted version is written in the clear: export is an explicit decision to take the model
        out of the registry.
        """
        from skylift.registry._export import check_exportable, export_model, export_target

        name, version = self.resolve(ref)
        check_exportable(self.info(f"{name}:{version}"))  # a language model: refused before any work
        export_target(Path(output), name, version, fmt, overwrite)  # refuse before the slow part
        return export_model(self.load(f"{name}:{version}"), fmt, Path(output), overwrite)


def _ranges(versions: builtins.list[int]) -> str:
    shown = ", ".join(str(v) for v in versions[-10:])
    return f"..., {shown}" if len(versions) > 10 else shown


def _remove(folder: Path, version: int) -> None:
    """Delete one version folder; the caller holds the name's lock."""
    # Rename first: readers then see the version either whole or gone, never half-deleted.
    trash = folder / f".deleted-{version}-{secrets.token_hex(4)}"
    os.rename(folder / str(version), trash)
    _fsync_dir(folder)
    shutil.rmtree(trash)


def _remove_stale_temps(folder: Path) -> None:
    """Delete `.tmp-*` folders left by registrations that were killed mid-write (SIGKILL, power)."""
    now = time.time()
    for tmp in folder.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp)
