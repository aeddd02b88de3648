"""Media files on the wire (V2 BYTES in JSON base64 and binary, TF-Serving b64, a plain POST) and the
media runtime that decodes them off the event loop: every form gives the model's own answer; bad
files, wrong types and overload are 4xx/503 that name what was wrong."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.data._audio import AudioPrep
from skylift.data._image import ImagePrep
from skylift.errors import Overloaded
from skylift.models import build_model
from skylift.registry import LoadedModel
from skylift.serve import codec, media_codec
from skylift.serve.app import _content_type
from skylift.serve.batcher import DeadlineExceeded
from skylift.serve.codec import BadRequest
from skylift.serve.config import ServeConfig
from skylift.serve.media_codec import Files
from skylift.serve.metrics import Metrics
from skylift.serve.runtimes import RUNTIMES, Context, Runtime
from skylift.serve.runtimes._media import MediaRows
from skylift.spec import ModelSpec
from tests.integration.media_files import (
    AUDIO_PREP,
    CLASSES,
    IMAGE_PREP,
    bomb_png,
    image,
    unsupported_wav,
    wav,
)

PNGS = [image(i) for i in range(3)]


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _loaded(prep: ImagePrep | AudioPrep, shape: tuple[int, ...] | None = None) -> LoadedModel:
    shape = shape or tuple(prep.shape)
    torch.manual_seed(0)
    layers = [{"flatten": {}}, {"dense": {"units": len(CLASSES)}}]
    module = build_model(ModelSpec(layers=layers), shape, len(CLASSES)).eval()
    data = {
        "task": "classification",
        "input_shape": list(shape),
        "classes": CLASSES,
        "input": prep.kind,
        "preprocessing": prep.to_json(),
    }
    info = {"task": "classification", "data": data, "signature": {"kind": "classifier", "classes": CLASSES}}
    return LoadedModel(module, info, "m", 1)


def _runtime(tmp_path: Path, prep: ImagePrep | AudioPrep = IMAGE_PREP, **config: Any) -> Runtime:
    settings_ = {"max_batch_rows": 8, **config}
    cfg = ServeConfig(models=("m",), home=tmp_path, state_dir=tmp_path, **settings_)
    return RUNTIMES["classifier"](Context("m", 1, _loaded(prep), cfg, Metrics(0, None)))


def _run(runtime: Runtime, body: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    async def go() -> Any:
        runtime.start()
        try:
            return await body()
        finally:
            await runtime.stop()

    return asyncio.run(go())


def _local(runtime: Runtime, blobs: list[bytes]) -> np.ndarray:
    """What the model answers in-process on the files decoded with its preprocessing."""
    prep = runtime.inputs.prep  # type: ignore[attr-defined]
    x = np.stack([prep.decode(b) for b in blobs])
    with torch.inference_mode():
        return torch.softmax(runtime.ctx.loaded.module(torch.from_numpy(x)), -1).numpy()


def _v2_json(name: str, data: list[Any], shape: list[int] | None = None, **extra: Any) -> bytes:
    spec = {"name": name, "shape": shape or [len(data)], "datatype": "BYTES", "data": data, **extra}
    return json.dumps({"inputs": [spec]}).encode()


def _v2_binary(name: str, blobs: list[bytes]) -> tuple[bytes, int]:
    blob = codec.pack_bytes(blobs)
    spec = {
        "name": name,
        "shape": [len(blobs)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    head = json.dumps({"inputs": [spec]}).encode()
    return head + blob, len(head)


# -- the wire forms ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=12))
def test_binary_bytes_elements_come_back_as_sent(blobs: list[bytes]) -> None:
    body, head = _v2_binary("image", blobs)
    _, spec, blob = codec._v2_input(body, head, "image")
    assert media_codec.v2_files(spec, blob, "input 'image'") == tuple(blobs)
    assert codec.split_bytes(codec.pack_bytes(blobs), "x") == blobs


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.sampled_from(["standard", "urlsafe", "unpadded", "wrapped"]))
def test_base64_in_every_common_spelling_decodes(blob: bytes, spelling: str) -> None:
    text = {
        "standard": base64.b64encode(blob).decode(),
        "urlsafe": base64.urlsafe_b64encode(blob).decode(),
        "unpadded": base64.b64encode(blob).decode().rstrip("="),
        "wrapped": base64.encodebytes(blob).decode(),  # 76 characters a line, as `base64 FILE` prints
    }[spelling]
    assert media_codec.b64decode(text, "x") == blob


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_anything_else_is_a_bad_request_never_a_crash(junk: str | bytes) -> None:
    try:
        if isinstance(junk, str):
            media_codec.b64decode(junk, "x")
        else:
            codec.split_bytes(junk, "x")
    except BadRequest as exc:
        assert exc.status == 400 and "\n" not in str(exc)


@pytest.mark.parametrize(
    ("request_", "columnar", "where"),
    [
        ({"instances": [{"b64": _b64(p)} for p in PNGS]}, False, "instances"),
        ({"instances": [{"image": {"b64": _b64(p)}} for p in PNGS]}, False, "instances"),
        ({"inputs": {"image": [{"b64": _b64(p)} for p in PNGS]}}, True, "inputs.image"),
        ({"inputs": [{"b64": _b64(p)} for p in PNGS]}, True, "inputs"),
    ],
)
def test_tf_serving_b64_rows_and_columns(request_: dict[str, Any], columnar: bool, where: str) -> None:
    assert media_codec.v1_files(request_, "image") == (Files(tuple(PNGS), where + "[{i}]"), columnar)


def test_tf_serving_one_file_and_numbers() -> None:
    one = media_codec.v1_files({"inputs": {"b64": _b64(PNGS[0])}}, "image")
    assert one == (Files((PNGS[0],), "inputs[{i}]"), True)
    for numbers in ({"instances": [[0.0] * 4]}, {"instances": [{"input": [0.0] * 4}]}, {"inputs": [[1.0]]}):
        assert media_codec.v1_files(numbers, "image") is None  # the numeric codec's to read


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_v2_json("image", ["%%%"]), "input 'image' element 0 is not valid base64"),
        (_v2_json("image", [7]), "element 0 must be a base64 string, got int"),
        (_v2_json("image", [""]), "input 'image' element 0 is empty"),
        (_v2_json("image", [_b64(PNGS[0])], shape=[2]), "1 files for shape [2]"),
        (_v2_json("image", [_b64(PNGS[0])], shape=[1, 2]), "must be [files] or [files, 1]"),
        (_v2_json("image", [], shape=[0]), "needs at least one file"),
        (
            json.dumps(
                {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}
            ).encode(),
            "datatype must be BYTES (encoded files)",
        ),
        (_v2_json("pixels", ["x"]), "unknown input 'pixels': the model's input is 'image' or 'input'"),
    ],
)
def test_bad_v2_files_name_what_is_wrong(tmp_path: Path, body: bytes, says: str) -> None:
    runtime = _runtime(tmp_path)
    with pytest.raises(BadRequest) as err:
        runtime.decode_v2(body, None)
    assert says in str(err.value) and err.value.status == 400


def test_a_file_sent_as_json_gets_a_hint(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    for decode in (lambda: runtime.decode_v2(PNGS[0], None), lambda: runtime.decode_v1(PNGS[0])):
        with pytest.raises(BadRequest, match="looks like a PNG image: send it with Content-Type: image/png"):
            decode()
    with pytest.raises(BadRequest, match=r"instances\[1\] must be \{\"b64\""):
        runtime.decode_v1(json.dumps({"instances": [{"b64": _b64(PNGS[0])}, _b64(PNGS[1])]}).encode())


def test_content_types_route_a_file_or_are_refused() -> None:
    def scope(kind: bytes) -> dict[str, Any]:
        return {"headers": [(b"content-type", kind)]}

    images = media_codec.MEDIA_TYPES["image"]
    assert _content_type(scope(b"Image/PNG; charset=x"), False, images) == b"image/png"
    assert _content_type(scope(b"application/json"), False, images) is None
    assert _content_type({"headers": []}, False, images) is None
    with pytest.raises(BadRequest, match="takes JSON, or one file as image/png, image/jpeg") as err:
        _content_type(scope(b"audio/wav"), False, images)
    assert err.value.status == 415
    with pytest.raises(BadRequest, match=r"'image/png' is not supported here$"):
        _content_type(scope(b"image/png"), False, ())  # a numeric model
    with pytest.raises(BadRequest, match="not supported"):
        _content_type(scope(b"image/png"), True, images)  # V2 binary tensors: the header says JSON


# -- the media runtime -------------------------------------------------------------------------


def test_every_form_answers_as_the_model_does_in_process(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    want = _local(runtime, PNGS)
    meta = runtime.inputs.metadata()
    assert meta == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
    ]
    decoded = np.stack([IMAGE_PREP.decode(p) for p in PNGS])
    binary, head = _v2_binary("image", PNGS)
    forms = [
        runtime.decode_v2(_v2_json("image", [_b64(p) for p in PNGS]), None).x,
        runtime.decode_v2(_v2_json("image", [[_b64(p)] for p in PNGS], shape=[3, 1]), None).x,
        runtime.decode_v2(binary, head).x,
        runtime.decode_v1(json.dumps({"instances": [{"b64": _b64(p)} for p in PNGS]}).encode())[0],
        runtime.decode_v1(json.dumps({"instances": decoded.tolist()}).encode())[0],
        runtime.decode_v2(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [3, 1, 28, 28],
                            "datatype": "FP32",
                            "data": decoded.ravel().tolist(),
                        }
                    ]
                }
            ).encode(),
            None,
        ).x,
    ]

    async def go() -> list[np.ndarray]:
        outs = [await runtime.infer(x, time.monotonic() + 30) for x in forms]
        one = runtime.inputs.decode_file(PNGS[1], b"image/png")
        return [*outs, await runtime.infer(one, time.monotonic() + 30)]

    outs = _run(runtime, go)
    for out in outs[:-1]:
        np.testing.assert_allclose(out, want, atol=1e-6)
    np.testing.assert_allclose(outs[-1], want[1:2], atol=1e-6)
    assert isinstance(forms[0], Files) and isinstance(forms[4], np.ndarray)
    assert runtime.inputs.cache_input(forms[0]) == runtime.inputs.cache_input(forms[2])


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"GIF89a" + bytes(40), "input 'image' element 1: not a PNG, JPEG or WebP image"),
        (PNGS[0][: len(PNGS[0]) // 2], "input 'image' element 1: cannot decode the image"),
        (
            bomb_png(),
            "input 'image' element 1: the image is more than 40,000,000 pixels (a decompression bomb",
        ),
        (wav(0), "input 'image' element 1: not a PNG, JPEG or WebP image"),
    ],
    ids=["gif", "truncated", "bomb", "wav"],
)
def test_a_bad_file_fails_its_request_alone(tmp_path: Path, blob: bytes, says: str) -> None:
    runtime = _runtime(tmp_path)
    bad = runtime.decode_v2(_v2_json("image", [_b64(PNGS[0]), _b64(blob)]), None).x
    good = runtime.decode_v2(_v2_json("image", [_b64(p) for p in PNGS]), None).x

    async def go() -> tuple[BaseException | np.ndarray, ...]:
        deadline = time.monotonic() + 30
        return tuple(
            await asyncio.gather(
                runtime.infer(bad, deadline), runtime.infer(good, deadline), return_exceptions=True
            )
        )

    failed, answered = _run(runtime, go)
    assert isinstance(failed, BadRequest) and failed.status == 400 and says in str(failed)
    assert "\n" not in str(failed)
    np.testing.assert_allclose(answered, _local(runtime, PNGS), atol=1e-6)
    assert runtime.inputs.decoding == 0 and runtime.inputs.queued_rows == 0  # type: ignore[attr-defined]


def test_files_waiting_to_decode_count_against_the_queue_and_the_deadline_holds(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, max_queue_rows=8)
    files = Files(tuple(PNGS[:1] * 5), "input 'image' element {i}")

    async def go() -> None:
        first = asyncio.ensure_future(runtime.infer(files, time.monotonic() + 30))
        await asyncio.sleep(0)  # the first request's 5 files are being decoded
        with pytest.raises(Overloaded, match="queue full"):
            await runtime.infer(files, time.monotonic() + 30)
        assert (await first).shape == (5, len(CLASSES))
        with pytest.raises(DeadlineExceeded):
            await runtime.infer(files, time.monotonic() - 1)

    _run(runtime, go)


def test_audio_files_and_refusals(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, AUDIO_PREP)
    clips = [wav(0), wav(1, rate=44100), wav(2, fmt="FLAC", subtype="PCM_24")]
    assert runtime.inputs.metadata()[0] == {"name": "audio", "datatype": "BYTES", "shape": [-1]}
    assert b"audio/flac" in runtime.inputs.media_types and b"image/png" not in runtime.inputs.media_types
    x = runtime.decode_v2(_v2_json("audio", [_b64(c) for c in clips]), None).x
    bad = runtime.decode_v1(json.dumps({"instances": [{"b64": _b64(unsupported_wav())}]}).encode())[0]

    async def go() -> tuple[np.ndarray, BaseException]:
        out = await runtime.infer(x, time.monotonic() + 30)
        try:
            await runtime.infer(bad, time.monotonic() + 30)
        except BadRequest as exc:
            return out, exc
        raise AssertionError("an unsupported WAV was accepted")

    out, refused = _run(runtime, go)
    np.testing.assert_allclose(out, _local(runtime, clips), atol=1e-5)
    assert str(refused).startswith("instances[0]: not a readable WAV or FLAC file")


def test_a_model_whose_preprocessing_does_not_fit_its_input_is_refused_at_load(tmp_path: Path) -> None:
    cfg = ServeConfig(models=("m",), home=tmp_path, state_dir=tmp_path)
    loaded = _loaded(IMAGE_PREP, shape=(1, 14, 14))
    with pytest.raises(
        ValueError, match=r"preprocessing makes \[1, 28, 28\] but the model takes \[1, 14, 14\]"
    ):
        MediaRows(Context("m", 1, loaded, cfg, Metrics(0, None)), lambda x: x, IMAGE_PREP)


def test_the_body_file_names_itself(tmp_path: Path) -> None:
    files = media_codec.body_file(PNGS[0], b"image/png")
    assert files.name(0) == "body (image/png)" and len(files) == 1
    with pytest.raises(BadRequest, match=r"body \(image/png\) is empty"):
        media_codec.body_file(b"", b"image/png")
    assert Files((b"a", b"b"), "instances[{i}]").name(1) == "instances[1]"
    assert struct.unpack_from("<I", files.cache_input())[0] == len(PNGS[0])


def test_files_are_decoded_on_the_pool_never_on_the_event_loop(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    inputs: Any = runtime.inputs
    threads: list[int] = []

    class Recording:
        kind, shape = IMAGE_PREP.kind, IMAGE_PREP.shape

        def decode(self, blob: bytes, where: str) -> np.ndarray:
            threads.append(threading.get_ident())
            return IMAGE_PREP.decode(blob, where)

    inputs.prep = Recording()

    async def go() -> int:
        await runtime.infer(Files(tuple(PNGS), "input 'image' element {i}"), time.monotonic() + 30)
        return threading.get_ident()

    loop_thread = _run(runtime, go)
    assert len(threads) == 3 and loop_thread not in threads
