"""One version's files: built from weights + metadata, and read back verified, decrypted and rebuilt.

Plain and encrypted versions share every step but one: the weights' bytes pass through
`security.encrypt` / `security.decrypt` (associated data: name, version, file name) or not.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import __version__
from skylift.errors import AuthError, IntegrityError, MasterKeyMissing, SpecError
from skylift.registry import _manifest
from skylift.security import MasterKey, decrypt, encrypt

if TYPE_CHECKING:
    from torch import nn

WEIGHTS = "model.safetensors"
WEIGHTS_ENC = WEIGHTS + ".enc"
TOKENIZER = "tokenizer.json"  # a text model's tokenizer: part of the model, sealed like the weights
TOKENIZER_ENC = TOKENIZER + ".enc"
MODEL_JSON = "model.json"
FORMAT = 1  # layout version of model.json; bump on an incompatible change


def associated_data(name: str, version: int, file: str) -> bytes:
    """Binds a sealed file to its place: copied to another model, version or file name, it fails to open."""
    return json.dumps(["skylift-registry", name, version, file], separators=(",", ":")).encode()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def prepare_weights(state_dict: Mapping[str, Any]) -> bytes:
    """safetensors bytes of a state dict: contiguous CPU tensors, tensors sharing memory copied apart."""
    import torch
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise SpecError(f"state dict entry {key!r} is a {type(value).__name__}, expected a tensor")
        t = value.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in storages:  # tied weights: safetensors
            t = t.clone()  # refuses tensors that share memory; load_state_dict re-ties them
        storages.add(t.untyped_storage().data_ptr())
        tensors[str(key)] = t
    if not tensors:
        raise SpecError("the state dict holds no tensors")
    return bytes(save(tensors, metadata={"format": "pt"}))


def check_metadata(meta: Mapping[str, Any], metrics: Mapping[str, Any], lineage: Mapping[str, Any]) -> None:
    """SpecError unless `meta` is a skylift checkpoint's meta and metrics/lineage are plain JSON data."""
    task = meta.get("task", "classification")
    needed = ("model", "input_shape", *(("classes",) if task == "classification" else ("n_outputs",)))
    for field in needed:
        if field not in meta:
            raise SpecError(f"model metadata lacks {field!r} (expected a skylift checkpoint's 'meta')")
    shape = meta["input_shape"]
    if (
        not isinstance(shape, list | tuple)
        or not shape
        or not all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise SpecError(f"model metadata 'input_shape' must be a list of positive sizes, got {shape!r}")
    if task == "classification" and (not isinstance(meta["classes"], list | tuple) or not meta["classes"]):
        raise SpecError("model metadata 'classes' must be a non-empty list of class labels")
    try:
        json.dumps([data_meta(meta), dict(metrics), dict(lineage)], allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"model metadata, metrics and lineage must be plain JSON data ({exc})") from None


# Checkpoint meta that is lineage, not data: kept out of model.json's "data" block.
_NOT_DATA = ("model", "run_id", "name", "spec_hash", "data_hash", "epoch", "tokenizer")


def data_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a consumer needs to rebuild the model and shape its inputs and outputs (model.json "data")."""
    data = {k: v for k, v in meta.items() if k not in _NOT_DATA}
    data.setdefault("task", "classification")
    if "n_outputs" not in data and "classes" in data:
        data["n_outputs"] = len(data["classes"])
    return {"model": meta["model"], **data}


def _signature(data: Mapping[str, Any]) -> dict[str, Any]:
    """The KServe-style input/output description of a version, by task."""
    task, shape, n = data["task"], list(data["input_shape"]), data["n_outputs"]
    text = data.get("input") == "text"
    ids = {"name": "input_ids", "datatype": "INT64", "shape": [-1, *shape]}
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}, ids] if text else []
    if task == "language_modeling":
        return {
            "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, n]}],
            "kind": "generator",
        }
    inputs = inputs or [{"name": "input", "datatype": "FP32", "shape": [-1, *shape]}]
    if task == "regression":
        return {
            "inputs": inputs,
            "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [-1, n]}],
            "targets": list(data["targets"]),
            "kind": "regressor",
        }
    return {
        "inputs": inputs,
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, n]}],
        "classes": list(data["classes"]),
        "kind": "classifier",
    }


def _model_json(
    name: str,
    version: int,
    meta: Mapping[str, Any],
    metrics: Mapping[str, Any],
    lineage: Mapping[str, Any],
    files: Mapping[str, int],
    key: MasterKey | None,
    serve: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data = data_meta(meta)
    info: dict[str, Any] = {
        "format": FORMAT,
        "skylift_version": __version__,
        "name": name,
        "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": data["task"],
        "architecture": {"model": meta["model"]},
        "data": {k: v for k, v in data.items() if k != "model"},
        "signature": _signature(data),
        "metrics": dict(metrics),
        "lineage": {
            "run_id": meta.get("run_id"),
            "spec_hash": meta.get("spec_hash"),
            "data_hash": meta.get("data_hash"),
            **({"epoch": meta["epoch"]} if "epoch" in meta else {}),
            **lineage,
        },
        "encrypted": key is not None,
        "files": dict(files),
    }
    if serve is not None:
        info["serve"] = dict(serve)  # the spec's serving defaults: `skylift serve` starts from them
    if key is not None:
        info["encryption"] = {"algorithm": "AES-256-GCM", "key_id": key.key_id}
    return info


def build_files(
    name: str,
    version: int,
    weights: bytes,
    meta: Mapping[str, Any],
    metrics: Mapping[str, Any],
    lineage: Mapping[str, Any],
    key: MasterKey | None,
    serve: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """Every file of the version folder, MANIFEST.json included, as bytes ready to write.

    `weights` comes from `prepare_weights` and the metadata passed `check_metadata`; `serve` is a
    validated `serve:` section or None.
    """

    plain = {WEIGHTS: weights}
    if isinstance(meta.get("tokenizer"), str):
        plain[TOKENIZER] = meta["tokenizer"].encode("utf-8")
    return seal_files(
        name,
        version,
        plain,
        key,
        lambda sizes: _model_json(name, version, meta, metrics, lineage, sizes, key, serve),
    )


def seal_files(
    name: str,
    version: int,
    plain: Mapping[str, bytes],
    key: MasterKey | None,
    model_json: Callable[[dict[str, int]], dict[str, Any]],
) -> dict[str, bytes]:
    """Every file of a version folder: `plain` files sealed (encrypted in their place with `key`, as
    NAME.enc), model.json made by `model_json` from the sealed files' sizes, and MANIFEST.json
    (with its MAC under `key`)."""

    def seal(file: str, data: bytes) -> tuple[str, bytes]:
        if key is None:
            return file, data
        return file + ".enc", encrypt(key, data, associated_data(name, version, file + ".enc"))

    sealed = dict(seal(f, b) for f, b in plain.items())
    blobs = {**sealed, MODEL_JSON: _json_bytes(model_json({f: len(b) for f, b in sealed.items()}))}
    manifest = _manifest.build(blobs)
    if key is not None:
        payload = _manifest.mac_payload(name, version, manifest["files"])
        manifest["mac"] = key.mac(payload, _manifest.MAC_PURPOSE)
    return {**blobs, _manifest.MANIFEST: _json_bytes(manifest)}


PLAIN_WITH_KEY = (
    "not encrypted although a master key is set (a plain version could have been swapped in for an "
    "encrypted one): re-register it with the key, or use it without the key"
)


def _parse_info(data: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        info = json.loads(data)
    except ValueError:
        return None, [f"{MODEL_JSON}: not readable JSON"]
    if not isinstance(info, dict):
        return None, [f"{MODEL_JSON}: not a JSON object"]
    return info, []


def raise_problems(where: str, found: list[str]) -> None:
    """IntegrityError with the first problem (and how many more), unless `found` is empty."""
    if found == [PLAIN_WITH_KEY]:
        raise IntegrityError(f"{where} is {PLAIN_WITH_KEY}")
    if found:
        more = f" (and {len(found) - 1} more problem{'s' * (len(found) > 2)})" if len(found) > 1 else ""
        raise IntegrityError(f"{where}: {found[0]}{more}; run `skylift models verify {where}`")


def check_identity(info: Mapping[str, Any], name: str, version: int) -> list[str]:
    """model.json must describe the folder it sits in (catches whole files moved between versions)."""
    if info.get("name") != name or info.get("version") != version:
        return [f"{MODEL_JSON}: describes {info.get('name')}:{info.get('version')}, not {name}:{version}"]
    file = WEIGHTS_ENC if info.get("encrypted") else WEIGHTS
    files = info.get("files")
    if not isinstance(files, dict) or file not in files:
        return [f"{MODEL_JSON}: does not list the weights file {file}"]
    return []


def check_mac(manifest: Mapping[str, Any], name: str, version: int, key: MasterKey) -> list[str]:
    """An encrypted version's manifest MAC, under `key`: catches a rewritten model.json + manifest."""
    expected = manifest.get("mac")
    payload = _manifest.mac_payload(name, version, manifest["files"])
    if not isinstance(expected, str) or not key.check_mac(payload, _manifest.MAC_PURPOSE, expected):
        return [f"{_manifest.MANIFEST}: authentication failed (the manifest or model.json was rewritten)"]
    return []


def _open(key: MasterKey, blob: bytes, name: str, version: int, file: str = WEIGHTS_ENC) -> bytes:
    try:
        return decrypt(key, blob, associated_data(name, version, file))
    except IntegrityError as exc:
        raise IntegrityError(f"{file}: {exc}") from None


def check_decrypts(folder: Path, name: str, version: int, key: MasterKey) -> list[str]:
    """[] if the encrypted weights open under `key` in their place, else the one problem."""
    try:
        _open(key, (folder / WEIGHTS_ENC).read_bytes(), name, version)
    except IntegrityError as exc:
        return [str(exc)]
    return []


def check_key(info: Mapping[str, Any], key: MasterKey | None, where: str) -> MasterKey:
    """The key that opens this encrypted version; MasterKeyMissing when none is given, AuthError when
    it is another key."""
    if key is None:
        raise MasterKeyMissing(
            f"{where} is encrypted: set SKYLIFT_MASTER_KEY or pass --key-file "
            "with the key it was registered with"
        )
    encryption = info.get("encryption")
    want = str(encryption.get("key_id", "?")) if isinstance(encryption, dict) else "?"
    if want != key.key_id:
        raise AuthError(f"{where} is encrypted with master key {want}, not with the given key {key.key_id}")
    return key


@dataclass(frozen=True)
class Inspection:
    """What `inspect` found in a version folder, before any decryption."""

    manifest: dict[str, Any]
    info: dict[str, Any]
    """model.json (empty when it could not be read)."""
    problems: list[str]
    """One line per problem, each naming its file; empty when every check passed."""
    authenticated: bool
    """The manifest's MAC was checked: an encrypted version, inspected with its key."""


def inspect(
    folder: Path, name: str, version: int, key: MasterKey | None, blobs: Mapping[str, bytes] | None = None
) -> Inspection:
    """Check a version folder against its manifest, model.json against the folder, and the key.

    With `key`, a plain version is a problem (it could have been swapped in for an encrypted one)
    and an encrypted version's manifest MAC is checked; without it an encrypted version is checked
    by hash only (`authenticated` False). `blobs` holds files already read: those bytes are the
    ones checked. AuthError when the version is encrypted under another key.
    """
    try:
        manifest = _manifest.read(folder)
    except IntegrityError as exc:
        return Inspection({}, {}, [str(exc)], False)
    found = _manifest.problems(folder, manifest, blobs)
    if found:
        return Inspection(manifest, {}, found, False)
    if MODEL_JSON not in manifest["files"]:
        return Inspection(manifest, {}, [f"{MODEL_JSON}: not in the manifest"], False)
    try:
        data = blobs[MODEL_JSON] if blobs and MODEL_JSON in blobs else (folder / MODEL_JSON).read_bytes()
    except OSError as exc:
        return Inspection(manifest, {}, [f"{MODEL_JSON}: cannot read it ({exc.strerror})"], False)
    info, found = _parse_info(data)
    if info is None:
        return Inspection(manifest, {}, found, False)
    found = check_identity(info, name, version)
    weights = WEIGHTS_ENC if info.get("encrypted") else WEIGHTS
    if not found and weights not in manifest["files"]:
        found = [f"{weights}: not in the manifest"]
    if found:
        return Inspection(manifest, info, found, False)
    if not info.get("encrypted"):
        return Inspection(manifest, info, [PLAIN_WITH_KEY] if key is not None else [], False)
    if key is None:
        return Inspection(manifest, info, [], False)
    key = check_key(info, key, f"{name}:{version}")
    return Inspection(manifest, info, check_mac(manifest, name, version, key), True)


def read_verified(
    folder: Path, name: str, version: int, key: MasterKey | None
) -> tuple[Inspection, bytes, str | None]:
    """(the inspection, plain safetensors bytes, the tokenizer JSON of a text model or None) after
    checking every file against the manifest.

    Each file is read once: the bytes hashed are the bytes used, so nothing can change in between.
    """
    where = f"{name}:{version}"
    try:
        listed = _manifest.read(folder)["files"]
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc}; run `skylift models verify {where}`") from None
    blobs = {file: (folder / file).read_bytes() for file in listed if (folder / file).is_file()}
    found = inspect(folder, name, version, key, blobs)
    raise_problems(where, found.problems)
    encrypted = bool(found.info.get("encrypted"))
    file = WEIGHTS_ENC if encrypted else WEIGHTS
    if file not in blobs:
        raise IntegrityError(f"{where}: {file} is not in the manifest")
    weights = blobs[file]
    if encrypted:
        key = check_key(found.info, key, where)
        try:
            weights = _open(key, weights, name, version)
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: {exc}") from None
    tokenizer = None
    sealed = TOKENIZER_ENC if encrypted else TOKENIZER
    if found.info.get("data", {}).get("input") == "text" or found.info.get("task") == "language_modeling":
        if sealed not in blobs:
            raise IntegrityError(f"{where}: a text model without its {sealed} in the manifest")
        raw = blobs[sealed]
        if encrypted:
            try:
                raw = _open(check_key(found.info, key, where), raw, name, version, TOKENIZER_ENC)
            except IntegrityError as exc:
                raise IntegrityError(f"{where}: {exc}") from None
        tokenizer = raw.decode("utf-8")
    return found, weights, tokenizer


def build_module(info: Mapping[str, Any], weights: bytes, where: str) -> nn.Module:
    """The model rebuilt from model.json's architecture (pure data) with the weights loaded, in eval mode."""
    import torch
    from pydantic import ValidationError
    from safetensors import SafetensorError
    from safetensors.torch import load

    from skylift.spec import ModelSpec
    from skylift.tasks import TASKS

    if isinstance(info.get("architecture"), dict) and "imported" in info["architecture"]:
        return _build_imported(info["architecture"], weights, where)
    try:
        spec = ModelSpec.model_validate(info["architecture"]["model"])
        data = (
            info.get("data")
            or {  # a version registered before tasks existed: a classifier
                "task": "classification",
                "input_shape": info["signature"]["inputs"][0]["shape"][1:],
                "n_outputs": len(info["signature"]["classes"]),
            }
        )
        task = TASKS[data["task"]]
        input_shape = tuple(int(d) for d in data["input_shape"])
        n_outputs = int(data["n_outputs"])
    except (KeyError, IndexError, TypeError, ValueError, ValidationError):
        raise IntegrityError(f"{where}: {MODEL_JSON} has no valid architecture and signature") from None
    try:
        state = load(weights)
    except (SafetensorError, ValueError):
        raise IntegrityError(f"{where}: the weights are not a valid safetensors file") from None
    # Building initialises weights from the global RNG; a load must not shift the caller's seed.
    with torch.random.fork_rng(devices=[]):
        model = task.build(spec, data, input_shape, n_outputs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "mismatch"
        raise IntegrityError(f"{where}: the weights do not fit the recorded architecture ({first})") from None
    return model.eval()


def _build_imported(architecture: Mapping[str, Any], weights: bytes, where: str) -> nn.Module:
    """A model imported from a Hugging Face folder (`skylift models import`), rebuilt without transformers."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from skylift.registry._bert import build_embedder

    if architecture.get("imported") != "bert":
        raise IntegrityError(f"{where}: {MODEL_JSON} names an unknown imported architecture")
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError):
        raise IntegrityError(f"{where}: the weights are not a valid safetensors file") from None
    try:
        return build_embedder(architecture, tensors, where)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
