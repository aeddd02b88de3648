"""Image and audio decoding: shapes, values, the recorded settings, and hostile files refused in one line."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from skylift.data._audio import AudioPrep, _mel_filters
from skylift.data._image import MAX_PIXELS, ImagePrep
from skylift.data._media import preprocessing_from_json
from skylift.errors import DataError


def _encode(pixels: np.ndarray, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **kw)
    return out.getvalue()


def _wav(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_every_format_decodes_to_the_model_shape(fmt: str) -> None:
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[:, :, 0] = 255  # pure red survives lossy codecs closely
    x = ImagePrep(size=(20, 16), channels=3).decode(_encode(rgb, fmt, quality=95))
    assert x.shape == (3, 20, 16) and x.dtype == np.float32
    assert x[0].mean() > 0.95 and x[1].mean() < 0.05


def test_png_values_normalise_per_channel_exactly() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    prep = ImagePrep(size=(8, 8), channels=1, mean=(0.5,), std=(0.25,))
    x = prep.decode(_encode(grey, "PNG"))
    np.testing.assert_allclose(x[0], (grey / 255 - 0.5) / 0.25, atol=1e-6)


def test_colour_becomes_grey_and_grey_becomes_colour() -> None:
    rgb = np.full((4, 4, 3), 200, np.uint8)
    assert ImagePrep(size=(4, 4), channels=1).decode(_encode(rgb, "PNG")).shape == (1, 4, 4)
    grey = np.full((4, 4), 100, np.uint8)
    x = ImagePrep(size=(4, 4), channels=3).decode(_encode(grey, "PNG"))
    np.testing.assert_allclose(x, 100 / 255, rtol=1e-6)


def test_crop_keeps_the_centre_and_resize_keeps_everything() -> None:
    wide = np.zeros((10, 30), np.uint8)
    wide[:, 10:20] = 255  # a white centre third between black sides
    crop = ImagePrep(size=(10, 10), channels=1, fit="crop").decode(_encode(wide, "PNG"))
    squash = ImagePrep(size=(10, 10), channels=1, fit="resize").decode(_encode(wide, "PNG"))
    assert crop.min() > 0.9  # only the white centre is left
    assert squash[:, :, 0].max() < 0.1 and squash[:, :, 5].min() > 0.9


def test_batch_normalisation_matches_one_at_a_time() -> None:
    prep = ImagePrep(size=(6, 5), channels=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    rng = np.random.default_rng(0)
    blobs = [_encode(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "PNG") for _ in range(3)]
    batch = prep.normalize(np.stack([prep.pixels(b) for b in blobs]))
    assert batch.shape == (3, 3, 6, 5)
    for row, blob in zip(batch, blobs, strict=True):
        np.testing.assert_array_equal(row, prep.decode(blob))


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"hello, not an image", "not a PNG, JPEG or WebP"),
        (
            _encode(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8), "PNG")[:900],
            "cannot decode",
        ),
        (_encode(np.zeros((8, 8), np.uint8), "GIF"), "not a PNG, JPEG or WebP"),
        (b"", "not a PNG, JPEG or WebP"),
    ],
)
def test_hostile_images_are_one_line_data_errors(blob: bytes, says: str) -> None:
    with pytest.raises(DataError, match=says) as err:
        ImagePrep(size=(8, 8), channels=1).decode(blob, "upload.png")
    assert "\n" not in str(err.value) and str(err.value).startswith("upload.png: ")


@pytest.mark.parametrize("side", [7000, 20000])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(side: int) -> None:
    bomb = _encode(np.zeros((1, 1), np.uint8), "PNG")
    # Rewrite the IHDR size fields (and CRC) so the header claims side x side pixels.
    ihdr = bytearray(bomb[8:33])
    ihdr[8:16] = struct.pack(">II", side, side)
    import zlib

    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    assert side * side > MAX_PIXELS
    with pytest.raises(DataError, match="decompression bomb"):
        ImagePrep(size=(8, 8), channels=1).decode(bomb[:8] + bytes(ihdr) + bomb[33:])


def test_audio_is_mono_resampled_cut_and_padded() -> None:
    prep = AudioPrep(sample_rate=8000, duration_s=0.5)
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32)
    long = prep.waveform(_wav(stereo, 44100))
    assert long.shape == (4000,)
    # The resampler's filter needs a few samples to settle at the very start.
    np.testing.assert_allclose(long[20:400], np.sin(2 * np.pi * 440 * np.arange(20, 400) / 8000), atol=0.02)
    short = prep.waveform(_wav(np.ones(800, np.float32) * 0.5, 8000))
    assert short.shape == (4000,) and short[:800].min() > 0.49 and not short[800:].any()


def test_log_mel_puts_a_tone_in_its_band() -> None:
    prep = AudioPrep()
    low = prep.decode(_wav(np.sin(2 * np.pi * 300 * np.arange(16000) / 16000).astype(np.float32), 16000))
    high = prep.decode(_wav(np.sin(2 * np.pi * 5000 * np.arange(16000) / 16000).astype(np.float32), 16000))
    assert low.shape == high.shape == prep.shape == (40, 101)
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()


def test_mel_filters_are_triangles_covering_the_band() -> None:
    fb = _mel_filters(16000, 400, 40)
    assert fb.shape == (40, 201) and fb.max() <= 1.0 and fb.min() >= 0.0
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[-1] > 150  # centres rise to near Nyquist


def test_flac_decodes_like_wav() -> None:
    wave = (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32)
    prep = AudioPrep()
    np.testing.assert_allclose(
        prep.decode(_wav(wave, 16000, "FLAC", "PCM_24")),
        prep.decode(_wav(wave, 16000, "WAV", "PCM_24")),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (b"RIFF\x00\x00", "not a readable WAV or FLAC"),
        (_wav(np.zeros(100, np.float32), 16000)[:30], "not a readable WAV or FLAC"),
        (
            _wav(np.zeros(100, np.float32), 16000).replace(b"\x01\x00\x01\x00", b"\x34\x12\x01\x00", 1),
            "readable",
        ),
        (_wav(np.array([0.0, np.nan], np.float32), 16000, subtype="FLOAT"), "NaN"),
    ],
)
def test_hostile_audio_is_a_one_line_data_error(blob: bytes, says: str) -> None:
    with pytest.raises(DataError, match=says) as err:
        AudioPrep().decode(blob, "clip.wav")
    assert "\n" not in str(err.value) and str(err.value).startswith("clip.wav: ")


def test_settings_round_trip_through_json() -> None:
    for prep in (
        ImagePrep(size=(3, 4), channels=1, mean=(0.1,), std=(0.2,), fit="crop"),
        AudioPrep(n_mels=64),
    ):
        assert preprocessing_from_json(prep.to_json()) == prep
    assert preprocessing_from_json(None) is None
    with pytest.raises(DataError, match="preprocessing is invalid"):
        preprocessing_from_json({"kind": "video"})
