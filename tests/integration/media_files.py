"""Tiny media models registered without training, and real image and audio files written by the tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch import nn

from skylift.data._audio import AudioPrep
from skylift.data._image import ImagePrep
from skylift.models import build_model
from skylift.registry import Registry
from skylift.spec import ModelSpec
from skylift.tasks.regression import make_rescaled

IMAGE_PREP = ImagePrep(size=(28, 28), channels=1, mean=(0.1307,), std=(0.3081,))
AUDIO_PREP = AudioPrep(sample_rate=8000, duration_s=0.5, n_mels=16, n_fft=256, hop_length=128)
CLASSES = ["cat", "dog", "eel"]


def _register(
    home: Path,
    name: str,
    layers: list[dict[str, object]],
    prep: ImagePrep | AudioPrep,
    targets: list[str] | None = None,
) -> nn.Module:
    """A classifier of CLASSES, or a regressor of `targets`, registered as training would."""
    shape = list(prep.shape)
    spec = ModelSpec(input_shape=shape, layers=layers)
    torch.manual_seed(0)
    module = build_model(spec, tuple(shape), len(targets or CLASSES))
    task: dict[str, object] = {"classes": CLASSES}
    if targets:  # a regressor answers in its targets' units: outputs * y_std + y_mean
        scale = {"y_mean": [10.0] * len(targets), "y_std": [3.0] * len(targets)}
        module = make_rescaled(module, scale)
        task = {"task": "regression", "targets": targets, "n_outputs": len(targets), "scale": scale}
    module.eval()
    meta = {
        "model": spec.model_dump(mode="json"),
        "input_shape": shape,
        **task,
        "input": prep.kind,
        "preprocessing": prep.to_json(),
    }
    Registry(home).register(name, module.state_dict(), meta)
    return module


def register_image_model(home: Path, name: str = "pets") -> nn.Module:
    """A small conv classifier over (1, 28, 28) grey images (random weights)."""
    layers: list[dict[str, object]] = [
        {"conv2d": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
        {"maxpool": {"size": 2}},
        {"flatten": {}},
        {"dense": {"units": len(CLASSES)}},
    ]
    return _register(home, name, layers, IMAGE_PREP)


def register_image_regressor(home: Path, name: str = "sizes") -> nn.Module:
    """A linear regressor of two targets over (1, 28, 28) grey images (random weights)."""
    layers: list[dict[str, object]] = [{"flatten": {}}, {"dense": {"units": 2}}]
    return _register(home, name, layers, IMAGE_PREP, targets=["width", "height"])


def register_audio_model(home: Path, name: str = "calls") -> nn.Module:
    """A small classifier over (16, frames) log-mel spectrograms of 0.5 s at 8 kHz (random weights)."""
    layers: list[dict[str, object]] = [{"flatten": {}}, {"dense": {"units": len(CLASSES)}}]
    return _register(home, name, layers, AUDIO_PREP)


def image(seed: int, fmt: str = "PNG", size: tuple[int, int] = (40, 32), mode: str = "RGB") -> bytes:
    """A random picture (width, height), not of the model's size: the server resizes it."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buf, format=fmt)
    return buf.getvalue()


def wav(
    seed: int, rate: int = 16000, seconds: float = 0.4, subtype: str = "PCM_16", fmt: str = "WAV"
) -> bytes:
    """A tone with noise, at `rate` (the server resamples it)."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.5 * np.sin(2 * np.pi * (200 + 300 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def bomb_png(side: int = 20000) -> bytes:
    """A valid 1x1 PNG whose header claims side x side pixels: a decompression bomb's header."""
    png = image(0, size=(1, 1), mode="L")
    ihdr = bytearray(png[8:33])
    ihdr[8:16] = struct.pack(">II", side, side)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return png[:8] + bytes(ihdr) + png[33:]


def unsupported_wav() -> bytes:
    """A WAV whose format tag (0x1234) no decoder knows."""
    return wav(0).replace(b"\x01\x00\x01\x00", b"\x34\x12\x01\x00", 1)


def expected(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's probabilities for decoded inputs x (R, S...), in-process."""
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(x)), -1).numpy()
