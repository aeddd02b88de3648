"""Export of a verified classifier or regressor to ONNX (dynamic batch) or TorchScript, atomically.

The graph's input and output are named as in the version's signature: `input` (float32 features)
or, for a text model, `input_ids` (int64 token ids, exactly `max_length` per row, right-padded with
0, the tokenizer travelling in the file's metadata); `logits` (a classifier) or `predictions` (a
regressor, in the targets' units: the standardizing wrapper is part of the graph). A language model
is refused: generation is a loop around the model (sampling, a growing context), not one graph.

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
    from torch import nn

    from skylift.registry._store import LoadedModel

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 17  # supported by every onnxruntime since 1.14
_EXAMPLE_ROWS = 2  # not 1: a batch of 1 can let the tracer fold the batch size into a constant


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    """Deliberate deprecations silenced, no gradients, and PyTorch's fused attention fast path off:
    its `_transformer_encoder_layer_fwd` has no ONNX form, the plain path gives the same numbers."""
    import torch
    from torch.jit._trace import TracerWarning

    # catch_warnings and the fast path switch are process-wide state: fine for a CLI command or a
    # script, not meant to run concurrently with other threads that rely on them.
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _deliberate_deprecations(), torch.no_grad():
            # multi_head_attention_forward's own shape assertions (transformer_encoder) read traced
            # sizes as Python bools; they hold for every batch size, so the trace is general.
            warnings.filterwarnings("ignore", category=TracerWarning, module=r"torch\.nn\.functional")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


@contextlib.contextmanager
def _deliberate_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in (
            r"You are using the legacy TorchScript-based ONNX export",
            r"The feature will be removed",
            r"`torch\.jit\.\w+` is deprecated",
        ):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        yield


NOT_EXPORTABLE = (
    "export of language models is not supported: serve them with `skylift serve` or load them "
    "from the registry (skylift.registry.load_model)"
)


def check_exportable(info: dict[str, Any]) -> None:
    """SpecError (one line) unless the version described by model.json `info` can be exported."""
    if info.get("signature", {}).get("kind") == "generator" or info.get("task") == "language_modeling":
        raise SpecError(NOT_EXPORTABLE)
    if info.get("signature", {}).get("kind") == "embedder":
        raise SpecError(
            f"export of imported embedders is not supported: serve {info.get('ref', 'it')} with "
            "skylift serve, or use the folder it was imported from"
        )


def _text(loaded: LoadedModel) -> bool:
    return loaded.data.get("input") == "text"


def _names(loaded: LoadedModel) -> tuple[str, str]:
    """(graph input, graph output) names: the signature's tensor input and its output."""
    sig = loaded.info["signature"]
    tensors = [i["name"] for i in sig["inputs"] if i.get("datatype") != "BYTES"]
    return (tensors[0] if tensors else "input"), str(sig["outputs"][0]["name"])


def _metadata(loaded: LoadedModel) -> dict[str, str]:
    from skylift.models._stack import PAD_ID

    sig = loaded.info["signature"]
    meta = {
        "skylift.ref": loaded.ref,
        "skylift.task": loaded.task,
        "skylift.signature": json.dumps(sig, sort_keys=True),
    }
    if sig.get("kind") == "regressor":
        meta["skylift.targets"] = json.dumps(list(sig.get("targets", [])))
    else:
        meta["skylift.classes"] = json.dumps(loaded.classes)
    if _text(loaded) and loaded.tokenizer is not None:
        data = loaded.data
        meta["skylift.tokenizer"] = loaded.tokenizer
        meta["skylift.max_length"] = str(loaded.input_shape[0])
        meta["skylift.pad_id"] = str(data.get("pad_id", PAD_ID))
        meta["skylift.input_ids"] = (
            f"int64 (batch, {loaded.input_shape[0]}): the tokenizer's ids truncated and right-padded "
            f"with {PAD_ID}; a tokenizer whose pad id P is not {PAD_ID} has ids P and {PAD_ID} swapped"
        )
    return meta


def _example(loaded: LoadedModel) -> torch.Tensor:
    """What the tracer runs: float zeros, or for a text model int64 ids of the model's max length
    (one full row and one half padding, so the padding mask's real and pad paths both run)."""
    import torch

    from skylift.models._stack import PAD_ID

    if not _text(loaded):
        return torch.zeros(_EXAMPLE_ROWS, *loaded.input_shape)
    (length,) = loaded.input_shape
    vocab = int(loaded.data.get("vocab_size", 2))
    ids_BT = torch.arange(_EXAMPLE_ROWS * length, dtype=torch.int64).reshape(_EXAMPLE_ROWS, length)
    ids_BT = 1 + ids_BT % (vocab - 1)  # real ids 1 .. vocab - 1, never PAD_ID (0)
    ids_BT[1:, max(1, length // 2) :] = PAD_ID
    return ids_BT


def _traceable(module: nn.Module) -> nn.Module:
    """A copy of `module` with every nn.RMSNorm computed from plain ops: the TorchScript-based ONNX
    exporter has no `rms_norm` (ONNX gained one in opset 23); the numbers are the same."""
    import copy

    import torch
    from torch import nn

    class PlainRMSNorm(nn.Module):
        def __init__(self, norm: nn.RMSNorm) -> None:
            super().__init__()
            self.weight = norm.weight
            self.eps = norm.eps
            self.dims = tuple(range(-len(norm.normalized_shape), 0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
            y = x * torch.rsqrt(x.pow(2).mean(self.dims, keepdim=True) + eps)
            return y if self.weight is None else y * self.weight

    norms = [name for name, sub in module.named_modules() if isinstance(sub, nn.RMSNorm)]
    if not norms:
        return module
    module = copy.deepcopy(module)
    for name in norms:
        parent, _, leaf = name.rpartition(".")
        owner = module.get_submodule(parent)
        setattr(owner, leaf, PlainRMSNorm(owner.get_submodule(leaf)))  # type: ignore[arg-type]
    return module


def _onnx(loaded: LoadedModel) -> bytes:
    import torch

    try:
        import onnx
    except ImportError:
        raise SkyliftError("ONNX export needs the onnx package: pip install onnx") from None
    given, answer = _names(loaded)
    buf = io.BytesIO()
    with _tracing():
        torch.onnx.export(
            _traceable(loaded.module),
            (_example(loaded),),
            buf,  # type: ignore[arg-type]  # typed as a path; the legacy exporter takes a file object
            dynamo=False,
            input_names=[given],
            output_names=[answer],
            dynamic_axes={given: {0: "batch"}, answer: {0: "batch"}},
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
    with _tracing():
        traced: Any = torch.jit.trace(_traceable(loaded.module), (_example(loaded),))  # type: ignore[no-untyped-call]
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
    """Write `loaded` as `fmt` to `output` (see `export_target`), atomically; return the path.

    SpecError for a language model (see `check_exportable`)."""
    check_exportable(loaded.info)
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
