"""Export of a verified model to ONNX (dynamic batch) or TorchScript, written atomically.

Why the TorchScript-based exporters: torch 2.13 deprecates `torch.onnx.export(dynamo=False)` and
`torch.jit.trace/save`, but its dynamo ONNX exporter takes ~5 s for an MLP, logs about missing
torchvision and raises an internal FutureWarning of its own. For the feed-forward models a spec
builds, tracing is exact and ~25x faster. The deprecation warnings of exactly those calls are
silenced (by message, inside this module only) because the choice is deliberate; any other
warning, e.g. a TracerWarning about a factory model's data-dependent control flow, still shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift._atomic import _fsync_dir
from skylift.errors import SkyliftError, SpecError

if TYPE_CHECKING:
    import torch

    from skylift.registry._store import LoadedModel

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 17  # supported by every onnxruntime since 1.14
_EXAMPLE_ROWS = 2  # not 1: a batch of 1 can let the tracer fold the batch size into a constant


@contextlib.contextmanager
def _deliberate_deprecations() -> Iterator[None]:
    # catch_warnings swaps process-wide state: fine for a CLI command or a script, not meant to
    # run concurrently with other threads that rely on warning filters.
    with warnings.catch_warnings():
        for message in (
            r"You are using the legacy TorchScript-based ONNX export",
            r"The feature will be removed",
            r"`torch\.jit\.\w+` is deprecated",
        ):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield


def _metadata(loaded: LoadedModel) -> dict[str, str]:
    return {
        "skylift.ref": loaded.ref,
        "skylift.classes": json.dumps(loaded.classes),
        "skylift.signature": json.dumps(loaded.info["signature"], sort_keys=True),
    }


def _example(loaded: LoadedModel) -> torch.Tensor:
    import torch

    return torch.zeros(_EXAMPLE_ROWS, *loaded.input_shape)


def _onnx(loaded: LoadedModel) -> bytes:
    import torch

    try:
        import onnx
    except ImportError:
        raise SkyliftError("ONNX export needs the onnx package: pip install onnx") from None
    buf = io.BytesIO()
    with _deliberate_deprecations(), torch.no_grad():
        torch.onnx.export(
            loaded.module,
            (_example(loaded),),
            buf,  # type: ignore[arg-type]  # typed as a path; the legacy exporter takes a file object
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in _metadata(loaded).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def _torchscript(loaded: LoadedModel) -> bytes:
    import torch

    buf = io.BytesIO()
    extra = {"skylift.json": json.dumps(_metadata(loaded), sort_keys=True)}
    with _deliberate_deprecations(), torch.no_grad():
        traced: Any = torch.jit.trace(loaded.module, (_example(loaded),))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, buf, _extra_files=extra)
    return buf.getvalue()


def export_target(output: Path, name: str, version: int, fmt: str, overwrite: bool) -> Path:
    """The file an export writes (a folder gets `<name>-<version>.onnx|.pt`), checked before any work:
    SpecError for an existing file without `overwrite`, or a folder that does not exist (a typo in
    the path must not create folders)."""
    if fmt not in FORMATS:
        raise SpecError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if output.is_dir():
        output = output / f"{name}-{version}{FORMATS[fmt]}"
    if not output.parent.is_dir():
        where = output.parent
        raise SpecError(f"folder {where} does not exist; create it first (mkdir -p {where}) or fix the path")
    if output.exists() and not overwrite:
        raise SpecError(f"{output} already exists; pass --overwrite to replace it")
    return output


def export_model(loaded: LoadedModel, fmt: str, output: Path, overwrite: bool = False) -> Path:
    """Write `loaded` as `fmt` to `output` (see `export_target`), atomically; return the path."""
    target = export_target(output, loaded.name, loaded.version, fmt, overwrite)
    data = _onnx(loaded) if fmt == "onnx" else _torchscript(loaded)
    _publish(data, target, overwrite)
    return target


def _publish(data: bytes, target: Path, overwrite: bool) -> None:
    """Temp file beside `target`, fsync, then rename over it (`overwrite`) or hard-link it in, which
    fails if a file appeared there during the export: no clobbering, even by a race."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise SpecError(f"{target} already exists; pass --overwrite to replace it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(target.parent)
