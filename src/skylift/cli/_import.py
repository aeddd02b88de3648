"""`skylift models import PATH --name N`: a local Hugging Face / sentence-transformers folder, registered."""

from __future__ import annotations

import argparse


def run_import(args: argparse.Namespace) -> int:
    from skylift.home import skylift_home
    from skylift.registry import Registry
    from skylift.security import master_key_from_env

    registry = Registry(skylift_home(args.home), master_key_from_env(args.key_file))
    version = registry.import_folder(args.path, args.name)
    info = registry.info(version.ref)
    arch, data = info["architecture"], info["data"]
    encrypted = " (encrypted)" if info.get("encrypted") else ""
    print(
        f"registered {version.ref}{encrypted} from {args.path}: an embedder, BERT "
        f"{arch['config']['num_hidden_layers']} layers x {data['dim']}, {arch['pooling']} pooling"
        f"{', normalized' if arch['normalize'] else ''}, up to {data['max_length']} tokens",
        flush=True,
    )
    return 0
