"""`skylift models ...` (the registry) and `skylift keys ...` (API keys and the master key)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.cli._serve import rate_arg, token_rate_arg
from skylift.errors import SpecError

if TYPE_CHECKING:
    from rich.console import Console

    from skylift.registry import Registry
    from skylift.security.apikeys import KeyInfo


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    key = argparse.ArgumentParser(add_help=False)
    key.add_argument(
        "--key-file",
        metavar="PATH",
        help="master key file for encrypted models (default: $SKYLIFT_MASTER_KEY)",
    )
    shared = [common, key]

    m = sub.add_parser("models", parents=[common], help="the model registry: list, show, promote, export ...")
    ms = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(m), required=True)

    p = ms.add_parser(
        "list",
        parents=shared,
        help="every model: versions, aliases, and the latest version's metric and time; "
        "--name N: a table of N's versions",
    )
    p.add_argument("--name", help="list this model's versions, one row each")
    p.add_argument(
        "--sort",
        choices=_SORTS,
        default="version",
        help="with --name: version (ascending, default), created (newest first) or metric "
        "(best first: lowest loss, highest score)",
    )
    p.set_defaults(run=_list)

    p = ms.add_parser("show", parents=shared, help="signature, metrics, lineage, files and hashes")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    p.set_defaults(run=_show)

    p = ms.add_parser(
        "promote", parents=shared, help="point an alias (production, staging, ...) at a version"
    )
    p.add_argument("ref", help="the version, e.g. mnist-mlp:3 (or mnist-mlp@staging)")
    p.add_argument("alias", help="alias name, e.g. production")
    p.set_defaults(run=_promote)

    p = ms.add_parser("delete", parents=shared, help="delete a version (refused while an alias points at it)")
    p.add_argument("ref", help="NAME:VERSION")
    p.add_argument("--force", action="store_true", help="delete even if aliases point at it (drops them)")
    p.set_defaults(run=_delete)

    p = ms.add_parser(
        "prune",
        parents=shared,
        help="delete old versions: keep the N newest and every aliased one (a dry run without --yes)",
    )
    p.add_argument("name", help="model name")
    p.add_argument("--keep", type=_keep_count, required=True, metavar="N", help="newest versions to keep")
    p.add_argument("--yes", action="store_true", help="delete (default: only print what would be deleted)")
    p.set_defaults(run=_prune)

    p = ms.add_parser("verify", parents=shared, help="re-hash every file of a version against its manifest")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    p.set_defaults(run=_verify)

    p = ms.add_parser("register", parents=shared, help="register a run's best checkpoint as a new version")
    p.add_argument("target", help="run id, run folder or checkpoint file")
    p.add_argument("--name", help="model name (default: the name in the checkpoint's spec)")
    p.set_defaults(run=_register)

    p = ms.add_parser(
        "import",
        parents=shared,
        help="register a local Hugging Face / sentence-transformers folder (safetensors) as a new version",
    )
    p.add_argument("path", help="the model folder: config.json, tokenizer.json, model.safetensors")
    p.add_argument("--name", required=True, help="model name in the registry")
    p.set_defaults(run=_import)

    p = ms.add_parser("export", parents=shared, help="write a version as ONNX or TorchScript")
    p.add_argument("ref", help="NAME, NAME:VERSION or NAME@ALIAS")
    p.add_argument("--format", dest="fmt", required=True, choices=["onnx", "torchscript"])
    p.add_argument(
        "--output", required=True, help="output file (or an existing folder for NAME-VERSION.onnx|.pt)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(run=_export)

    k = sub.add_parser(
        "keys", parents=[common], help="API keys for serve (create, list, revoke) and master keys"
    )
    ks = k.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(k), required=True)
    p = ks.add_parser("create", parents=[common], help="a new API key for `skylift serve` (printed once)")
    p.add_argument(
        "--name", help="who or what uses the key, shown in audit logs (default: key-<8 hex>, printed)"
    )
    p.add_argument("--scope", default="predict", help="comma list of predict, metrics, admin")
    p.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: never)")
    p.add_argument(
        "--rate-limit",
        type=rate_arg,
        help="e.g. 100/s, 6000/m or 100 (requests/s) for this key (default: the server's)",
    )
    p.add_argument(
        "--token-limit",
        type=token_rate_arg,
        help="generation tokens (prompt + completion) for this key: 20000/m or 20000 (per minute), "
        "500/s (default: the server's --token-limit)",
    )
    p.set_defaults(run=_key_create)
    p = ks.add_parser(
        "list", parents=[common], help="names, scopes and expiry of the API keys (never the keys)"
    )
    p.set_defaults(run=_key_list)
    p = ks.add_parser(
        "revoke", parents=[common], help="delete an API key; running servers drop it within seconds"
    )
    p.add_argument("name")
    p.set_defaults(run=_key_revoke)
    p = ks.add_parser("master-create", parents=[common], help="write a new master key file (mode 0600)")
    p.add_argument("path", help="where to write the key; an existing file is never overwritten")
    p.set_defaults(run=_master_create)


_SORTS = ("version", "created", "metric")  # skylift.registry.SORTS, without importing it for --help


def _keep_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _console() -> Console:
    from rich.console import Console

    return Console()


def _import(args: argparse.Namespace) -> int:
    from skylift.cli._import import run_import

    return run_import(args)


def _registry(args: argparse.Namespace) -> Registry:
    from skylift.home import skylift_home
    from skylift.registry import Registry
    from skylift.security import master_key_from_env

    return Registry(skylift_home(args.home), master_key_from_env(args.key_file))


def _list(args: argparse.Namespace) -> int:
    from rich.table import Table

    registry = _registry(args)
    if args.name:
        return _list_versions(registry, args.name, args.sort)
    if args.sort != "version":
        raise SpecError("--sort orders the versions of one model: give --name NAME too")
    entries = registry.list()
    console = _console()
    if not entries:
        console.print(f"no models registered in {registry.root}")
        return 0
    table = Table("name", "task", "latest", "versions", "aliases", "created (UTC, latest)", "metric (latest)")
    for e in entries:
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(e.aliases.items()))
        versions = ", ".join(str(v) for v in e.versions[-8:])
        latest = registry.versions(e.name)[-1]  # checked against its manifest, like `show`
        table.add_row(
            e.name,
            latest.task or "?",
            str(e.latest),
            versions if len(e.versions) <= 8 else f"..., {versions}",
            aliases,
            _created(latest.created),
            _metric(latest),
        )
    console.print(table)
    return 0


def _list_versions(registry: Registry, name: str, sort: str) -> int:
    from rich.table import Table

    from skylift.registry import sort_versions

    rows = sort_versions(registry.versions(name), sort)
    table = Table(
        "version",
        "created (UTC)",
        "metric",
        "aliases",
        "task",
        title=f"{name} (by {sort})",
        title_justify="left",
    )
    for r in rows:
        table.add_row(str(r.version), _created(r.created), _metric(r), ", ".join(r.aliases), r.task or "?")
    _console().print(table)
    return 0


def _created(iso: str | None) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(iso or "").astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return "?"


def _metric(row: Any) -> str:
    if row.problem:
        return f"damaged: run `skylift models verify {row.ref}`"
    return "-" if row.monitor is None or row.metric is None else f"{row.monitor}={row.metric:.4f}"


def _prune(args: argparse.Namespace) -> int:
    plan = _registry(args).prune(args.name, args.keep, apply=args.yes)
    console = _console()
    pinned = {v: sorted(a for a, w in plan.aliases.items() if w == v) for v in plan.keep}
    kept = ", ".join(f"{v} ({', '.join(pinned[v])})" if pinned[v] else str(v) for v in plan.keep)
    console.print(f"{plan.name}: keeping {kept} (the {args.keep} newest and every aliased version)")
    if not plan.delete:
        console.print("nothing to delete")
        return 0
    for version in plan.delete:
        console.print(f"{'deleted' if plan.applied else 'would delete'} {plan.name}:{version}")
    if not plan.applied:
        n = len(plan.delete)
        console.print(f"dry run: nothing deleted; pass --yes to delete {n} version{'s' * (n > 1)}")
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value)


def _architecture(model: dict[str, Any]) -> str:
    if model.get("factory"):
        return f"factory {model['factory']}"
    return f"{len(model.get('layers') or [])} declarative layers"


def _integrity(info: dict[str, Any]) -> str:
    if info.get("authenticated"):
        return "every file's SHA-256 verified; manifest authenticated with the master key"
    if info.get("encrypted"):
        return "every file's SHA-256 verified; not authenticated (needs the master key)"
    return "every file's SHA-256 verified"


def _tensor(entry: dict[str, Any]) -> str:
    return f"{entry['name']} {entry['datatype']} {entry['shape']}"


def _architecture_of(arch: dict[str, Any]) -> str:
    """A declarative spec's summary, or an imported model's (`skylift models import`)."""
    if "imported" not in arch:
        return _architecture(arch.get("model", {}))
    config = arch.get("config", {})
    size = f"{config.get('num_hidden_layers')} layers x {config.get('hidden_size')}"
    normalized = ", normalized" if arch.get("normalize") else ""
    return f"imported {arch['imported']}: {size}, {arch.get('pooling')} pooling{normalized}"


def _answers(info: dict[str, Any]) -> tuple[str, str]:
    """(row name, value): what the model's outputs mean, by signature kind."""
    sig, data = info["signature"], info.get("data") or {}
    if sig.get("kind") == "regressor":
        return "targets", ", ".join(str(t) for t in sig.get("targets", []))
    if sig.get("kind") == "generator":
        return "vocabulary", f"{data.get('vocab_size', sig['outputs'][0]['shape'][-1])} tokens"
    if sig.get("kind") == "embedder":
        return "embedding", f"{data.get('dim', '?')} values per text"
    return "classes", ", ".join(str(c) for c in sig.get("classes", []))


def _tokenizer_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """A text model's tokenizer: sizes and padding from model.json, its file and hash from the manifest."""
    data = info.get("data") or {}
    file = next((f for f in ("tokenizer.json.enc", "tokenizer.json") if f in info["files"]), None)
    if file is None and data.get("input") != "text":
        return []
    rows = [("vocab size", str(data.get("vocab_size", "?"))), ("pad id", str(data.get("pad_id", "?")))]
    if "eos_id" in data:
        rows.append(("eos id", str(data["eos_id"])))
    if info.get("task") == "language_modeling":
        rows.append(("block size", f"{data.get('block_size', '?')} tokens (the context it was trained on)"))
    else:
        rows.append(("max length", f"{data.get('max_length', '?')} tokens (longer texts are truncated)"))
    if file is None:
        rows.append(("file", "missing from the manifest"))
    else:
        entry = info["files"][file]
        rows += [("file", f"{file} ({entry['size']:,} bytes)"), ("sha256", str(entry["sha256"]))]
    return rows


def _show(args: argparse.Namespace) -> int:
    from rich.table import Table

    info = _registry(args).info(args.ref)
    sig = info["signature"]
    overview = Table("field", "value", title=info["ref"], title_justify="left", show_header=False)
    rows = [
        ("task", info.get("task", "classification")),
        ("signature", sig.get("kind", "classifier")),
        ("created", info.get("created", "?")),
        ("aliases", ", ".join(info["aliases"]) or "-"),
        ("architecture", _architecture_of(info.get("architecture", {}))),
        *((f"input{'s' * (len(sig['inputs']) > 1)}", "; ".join(_tensor(i) for i in sig["inputs"])),),
        *((f"output{'s' * (len(sig['outputs']) > 1)}", "; ".join(_tensor(o) for o in sig["outputs"])),),
        _answers(info),
        ("encrypted", "yes (AES-256-GCM)" if info.get("encrypted") else "no"),
        ("integrity", _integrity(info)),
        ("size", f"{info['size_bytes']:,} bytes"),
        ("path", info["path"]),
    ]
    for name, value in rows:
        overview.add_row(name, str(value))
    tables = [overview]
    tokenizer = _tokenizer_rows(info)
    if tokenizer:
        t = Table("field", "value", title="tokenizer", title_justify="left", show_header=False)
        for name, value in tokenizer:
            t.add_row(name, value)
        tables.append(t)
    for title in ("metrics", "lineage"):
        if info.get(title):
            t = Table("name", "value", title=title, title_justify="left")
            for name, value in info[title].items():
                t.add_row(name, _fmt(value))
            tables.append(t)
    files = Table("file", "bytes", "sha256", title="files", title_justify="left")
    for name, entry in sorted(info["files"].items()):
        files.add_row(name, f"{entry['size']:,}", entry["sha256"])
    tables.append(files)
    console = _console()
    for table in tables:
        console.print(table)
    return 0


def _promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    name, version = registry.resolve(args.ref)
    before = registry.promote(name, version, args.alias)
    was = f" (was {name}:{before})" if before is not None and before != version else ""
    _console().print(f"{name}@{args.alias} -> {name}:{version}{was}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from skylift.registry import parse_ref

    ref = parse_ref(args.ref)
    if ref.version is None:
        raise SpecError(f"delete needs an explicit version like {ref.name}:1, got {args.ref!r}")
    dropped = _registry(args).delete(ref.name, ref.version, force=args.force)
    console = _console()
    console.print(f"deleted {ref}")
    for alias in dropped:
        console.print(f"dropped alias {ref.name}@{alias}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    result = _registry(args).check(args.ref)
    console = _console()
    if result.ok and result.encrypted and not result.authenticated:
        console.print(
            f"hashes OK {result.ref}; not authenticated: checking the encrypted weights' tag and the "
            "manifest's MAC needs the master key (--key-file or SKYLIFT_MASTER_KEY)",
            highlight=False,
            soft_wrap=True,
        )
        return 0
    if result.ok:
        console.print(f"OK {result.ref}", highlight=False)
        return 0
    n = len(result.problems)
    console.print(f"{result.ref}: {n} problem{'s' * (n > 1)}", highlight=False)
    for line in result.problems:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    return 1


def _run_summary(checkpoint: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The summary.json of the run that wrote `checkpoint`, if it is that run's best checkpoint."""
    run = checkpoint.resolve().parent.parent
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("run_id") != meta.get("run_id"):
        return None
    recorded = run / str(summary.get("checkpoint", ""))
    return summary if recorded.resolve() == checkpoint.resolve() else None


def _register(args: argparse.Namespace) -> int:
    from skylift.home import skylift_home
    from skylift.registry import run_metadata, spec_serve_section
    from skylift.train.checkpoint import load
    from skylift.train.evaluation import resolve_checkpoint

    registry = _registry(args)
    path = resolve_checkpoint(args.target, skylift_home(args.home))
    state = load(path)
    meta = dict(state["meta"])
    name = args.name or meta.get("name")
    if not name:
        raise SpecError(f"{path}: the checkpoint records no model name; pass --name")
    summary = _run_summary(path, meta)
    metrics, lineage = run_metadata(summary) if summary else ({}, {})
    # The spec in the checkpoint's run folder, wherever that is (not only under --home).
    serve = spec_serve_section(path.resolve().parent.parent / "spec.yaml")
    version = registry.register(str(name), state["model"], meta, metrics, lineage, serve)
    encrypted = " (encrypted)" if registry.encrypts else ""
    _console().print(f"registered {version.ref}{encrypted} from {path}", highlight=False)
    return 0


def _export(args: argparse.Namespace) -> int:
    out = _registry(args).export(args.ref, args.fmt, Path(args.output), overwrite=args.overwrite)
    _console().print(f"wrote {out} ({args.fmt}, {out.stat().st_size:,} bytes)", highlight=False)
    return 0


def _master_create(args: argparse.Namespace) -> int:
    from skylift.security import create_master_key_file

    key = create_master_key_file(args.path)
    console = _console()
    console.print(f"wrote master key {args.path} (mode 0600, key id {key.key_id})", highlight=False)
    console.print(
        "keep it safe: encrypted models cannot be loaded without it. Use it with --key-file "
        f"{args.path} or SKYLIFT_MASTER_KEY=$(cat {args.path})",
        highlight=False,
    )
    return 0


def _keystore(args: argparse.Namespace) -> Any:
    from skylift.home import skylift_home
    from skylift.security.apikeys import KeyStore, keys_file

    return KeyStore(keys_file(skylift_home(args.home)))


def _key_create(args: argparse.Namespace) -> int:
    from skylift.security.apikeys import parse_duration, parse_scopes

    scopes = parse_scopes(args.scope)
    expires = parse_duration(args.expires) if args.expires else None
    store = _keystore(args)
    key, info = store.create(args.name, scopes, expires, args.rate_limit, args.token_limit)
    print(key)  # stdout holds the key alone, so `KEY=$(skylift keys create ...)` works
    import sys

    print(
        f"created API key {info.name!r} (scopes: {', '.join(info.scopes)}) in {store.path}; "
        "it is shown once and stored only as a salted hash",
        file=sys.stderr,
    )
    return 0


def _key_list(args: argparse.Namespace) -> int:
    import time

    from rich.table import Table

    table = Table(
        "name", "id", "scopes", "created", "expires", "rate limit", title="API keys", title_justify="left"
    )
    fmt = "%Y-%m-%d %H:%M"
    for k in sorted(_keystore(args).infos(), key=lambda k: k.created):
        expires = "never" if k.expires is None else time.strftime(fmt, time.gmtime(k.expires))
        if k.expired():
            expires += " (expired)"
        table.add_row(
            k.name,
            k.key_id,
            ",".join(k.scopes),
            time.strftime(fmt, time.gmtime(k.created)),
            expires,
            _limits(k),
        )
    _console().print(table)
    return 0


def _limits(k: KeyInfo) -> str:
    """'server default', '100/s', or either with ' + 20000 tokens/m' for a key's own token limit."""
    rate = "server default" if k.rate_limit is None else f"{k.rate_limit:g}/s"
    return rate if k.token_limit is None else f"{rate} + {k.token_limit:g} tokens/m"


def _key_revoke(args: argparse.Namespace) -> int:
    info = _keystore(args).revoke(args.name)
    _console().print(f"revoked API key {info.name!r} ({info.key_id})")
    return 0
