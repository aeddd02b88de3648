"""`skylift models import`: a local Hugging Face / sentence-transformers folder as a registry version.

The folder's safetensors weights and tokenizer.json are stored as they are (sealed like a trained
model's: hashed, and encrypted with the master key), its config and pooling go into model.json.
Everything is checked before a version number is claimed, the weights by loading them into the
encoder they will run in: a folder that cannot be served is refused with one line, and nothing
lands on disk. Pickled weights (.bin, .pt, ...) are never read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift import __version__
from skylift.errors import DataError
from skylift.security import MasterKey

PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_JSON = 16 << 20  # config, tokenizer and module files larger than this are not model folders


@dataclass(frozen=True)
class ImportedFolder:
    """What an importable folder holds, checked: ready to be sealed as a version."""

    source: Path
    weights: bytes
    tokenizer: str
    architecture: dict[str, Any]
    data: dict[str, Any]
    sources: dict[str, str]
    """Each file read from the folder -> its SHA-256 (the version's lineage)."""


def _json(path: Path, required: bool = True) -> Any:
    if not path.is_file():
        if required:
            raise DataError(f"{path}: not found (a Hugging Face model folder has one)")
        return None
    if path.stat().st_size > _MAX_JSON:
        raise DataError(f"{path}: {path.stat().st_size:,} bytes is too large for a model folder's JSON")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def _weights_file(folder: Path) -> Path:
    """model.safetensors; a folder with only pickled weights is refused, saying why."""
    weights = folder / "model.safetensors"
    if weights.is_file():
        return weights
    if (folder / "model.safetensors.index.json").is_file():
        raise DataError(f"{folder}: sharded safetensors weights are not supported yet; save them as one file")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
    if pickles:
        raise DataError(
            f"{folder / pickles[0]}: pickled weights are refused, as loading a pickle can run any code "
            "inside it; save the model with safetensors (model.safetensors) and import again"
        )
    raise DataError(f"{folder}: no model.safetensors in it")


def _pooling(folder: Path) -> tuple[str, bool]:
    """(pooling mode, normalize) from sentence-transformers' modules.json; mean and no
    normalisation for a plain Hugging Face folder (what sentence-transformers does with one)."""
    modules = _json(folder / "modules.json", required=False)
    if modules is None:
        return "mean", False
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise DataError(f"{folder / 'modules.json'}: expected a list of modules")
    pooling, normalize = None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            path = folder / str(module.get("path", "")) / "config.json"
            if ".." in Path(str(module.get("path", ""))).parts:
                raise DataError(
                    f"{folder / 'modules.json'}: module path {module.get('path')!r:.60} leaves the folder"
                )
            pooling = _pooling_mode(path, _json(path))
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise DataError(
                f"{folder / 'modules.json'}: module {kind!r:.60} is not supported "
                "(Transformer, Pooling, Normalize)"
            )
    return pooling or "mean", normalize


def _pooling_mode(path: Path, config: Any) -> str:
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    modes = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    }
    chosen = [mode for mode, key in modes.items() if config.get(key) is True]
    others = [
        k
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v is True and k not in modes.values()
    ]
    if len(chosen) != 1 or others:
        raise DataError(f"{path}: exactly one of {', '.join(modes.values())} must be true")
    return chosen[0]


def _max_length(folder: Path, positions: int) -> int:
    """sentence-transformers' max_seq_length, else the tokenizer's model_max_length, within the positions."""
    st = _json(folder / "sentence_bert_config.json", required=False)
    if isinstance(st, dict) and type(st.get("max_seq_length")) is int and st["max_seq_length"] > 0:
        return min(int(st["max_seq_length"]), positions)
    tc = _json(folder / "tokenizer_config.json", required=False)
    if isinstance(tc, dict) and type(tc.get("model_max_length")) is int and tc["model_max_length"] > 0:
        return min(int(tc["model_max_length"]), positions)
    return positions


def _chat_template(folder: Path) -> str | None:
    """tokenizer_config.json's chat_template (a string, or Hugging Face's list of named templates:
    the one named default), checked as a trained model's is; None when it has none."""
    from skylift._chat_template import template_problem

    path = folder / "tokenizer_config.json"
    tc = _json(path, required=False)
    found = tc.get("chat_template") if isinstance(tc, dict) else None
    if isinstance(found, list):
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default", next(iter(named.values()), None))
    if found is None:
        return None
    if not isinstance(found, str):
        raise DataError(f"{path}: chat_template must be a string, got {found!r:.40}")
    problem = template_problem(found)
    if problem is not None:
        raise DataError(f"{path}: chat_template {problem}")
    return found


def read_folder(path: Path) -> ImportedFolder:
    """Check a model folder end to end; DataError (one line) on anything that cannot be served."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from skylift.data._tokenizer import TextTokenizer
    from skylift.registry._bert import BertConfig, build_embedder

    folder = path.expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (give a Hugging Face or sentence-transformers model folder)")
    weights_path = _weights_file(folder)
    config = _json(folder / "config.json")
    if not isinstance(config, dict):
        raise DataError(f"{folder / 'config.json'}: expected a JSON object")
    if config.get("model_type") != "bert":
        raise DataError(
            f"{folder / 'config.json'}: model_type {config.get('model_type')!r:.40} is not supported "
            "(imports run BERT encoders: sentence-transformers models such as all-MiniLM-L6-v2)"
        )
    try:
        bert = BertConfig.from_hf(config, str(folder / "config.json"))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json")
    if tokenizer.vocab_size > bert.vocab_size:
        raise DataError(
            f"{folder}: tokenizer.json has ids up to {tokenizer.vocab_size - 1}, beyond config.json's "
            f"vocab_size {bert.vocab_size}"
        )
    pooling, normalize = _pooling(folder)
    max_length = _max_length(folder, bert.max_position_embeddings)
    weights = weights_path.read_bytes()
    architecture = {"imported": "bert", "config": config, "pooling": pooling, "normalize": normalize}
    try:
        build_embedder(architecture, load(weights), str(weights_path))
    except (SafetensorError, ValueError) as exc:
        raise DataError(f"{weights_path}: {str(exc).removeprefix(str(weights_path) + ': ')}") from None
    data = {
        "task": "embedding",
        "input": "text",
        "max_length": max_length,
        "dim": bert.hidden_size,
        "vocab_size": tokenizer.vocab_size,
        "pad_id": tokenizer.pad_id,
        "input_shape": [max_length],
        "n_outputs": bert.hidden_size,
    }
    template = _chat_template(folder)
    if template is not None:  # kept with the model, as its tokenizer is
        data["chat_template"] = template
    read = ["config.json", "tokenizer.json", weights_path.name]
    read += [
        f
        for f in ("modules.json", "sentence_bert_config.json", "tokenizer_config.json")
        if (folder / f).is_file()
    ]
    sources = {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in sorted(read)}
    tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
    return ImportedFolder(folder.resolve(), weights, tokenizer_json, architecture, data, sources)


def import_files(name: str, version: int, found: ImportedFolder, key: MasterKey | None) -> dict[str, bytes]:
    """Every file of the version folder (see `_artifact.seal_files`)."""
    from skylift.registry._artifact import TOKENIZER, WEIGHTS, seal_files

    def model_json(sizes: dict[str, int]) -> dict[str, Any]:
        dim = found.data["dim"]
        info: dict[str, Any] = {
            "format": 1,
            "skylift_version": __version__,
            "name": name,
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "task": "embedding",
            "architecture": found.architecture,
            "data": found.data,
            "signature": {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, dim]}],
                "kind": "embedder",
            },
            "metrics": {},
            "lineage": {"imported_from": str(found.source), "source_sha256": found.sources},
            "encrypted": key is not None,
            "files": sizes,
        }
        if key is not None:
            info["encryption"] = {"algorithm": "AES-256-GCM", "key_id": key.key_id}
        return info

    plain = {WEIGHTS: found.weights, TOKENIZER: found.tokenizer.encode("utf-8")}
    return seal_files(name, version, plain, key, model_json)
