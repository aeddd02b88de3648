"""Audio bytes -> log-mel spectrogram: one feature extractor shared by training, `predict` and `serve`.

WAV and FLAC (and anything else libsndfile decodes) through `soundfile`; channels are averaged to
mono, resampled to `sample_rate` with `soxr`, cut or zero-padded to `duration_s`, then turned into
a `(n_mels, frames)` float32 log-mel spectrogram (Hann window, power spectrum, triangular mel
filters on the HTK mel scale, natural log of power + 1e-6). Only the samples the clip needs are
read, so a long or hostile file costs no more memory than a short one. The settings (`AudioPrep`)
are recorded with a registered model so that serving extracts exactly what training extracted.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from skylift.errors import DataError

_LOG_FLOOR = 1e-6  # added to mel power before the log: silence maps to -13.8, not -inf


@dataclass(frozen=True)
class AudioPrep:
    """How an encoded clip becomes a float32 `(n_mels, frames)` log-mel spectrogram."""

    sample_rate: int = 16000  # Hz, after resampling
    duration_s: float = 1.0  # clips are cut or zero-padded to this
    n_mels: int = 40
    n_fft: int = 400  # samples per frame: 25 ms at 16 kHz
    hop_length: int = 160  # samples between frames: 10 ms at 16 kHz

    kind = "audio"

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.duration_s)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_mels, 1 + (self.samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sample_rate": self.sample_rate,
            "duration_s": self.duration_s,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AudioPrep:
        return cls(
            sample_rate=int(d["sample_rate"]),
            duration_s=float(d["duration_s"]),
            n_mels=int(d["n_mels"]),
            n_fft=int(d["n_fft"]),
            hop_length=int(d["hop_length"]),
        )

    def decode(self, blob: bytes, where: str = "audio") -> np.ndarray:
        """Decodes one audio file's bytes into features; a `DataError` naming `where` if it cannot."""
        return self.features(self.waveform(blob, where))

    def waveform(self, blob: bytes, where: str = "audio") -> np.ndarray:
        """Mono float32 samples at `sample_rate`, exactly `samples` long."""
        import soundfile as sf

        try:
            with sf.SoundFile(io.BytesIO(blob)) as f:
                rate = f.samplerate
                # Read only what the clip needs (+1 frame of resampling margin), never the whole file.
                wave = f.read(math.ceil(self.duration_s * rate) + 1, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: not a readable WAV or FLAC file ({_reason(exc)})") from None
        if wave.size and not np.isfinite(wave).all():
            raise DataError(f"{where}: the samples hold NaN or infinite values")
        mono = wave.mean(axis=1, dtype=np.float32)
        if rate != self.sample_rate and mono.size:
            import soxr

            mono = soxr.resample(mono, rate, self.sample_rate).astype(np.float32, copy=False)
        out = np.zeros(self.samples, np.float32)
        n = min(out.size, mono.size)
        out[:n] = mono[:n]
        return out

    def features(self, wave: np.ndarray) -> np.ndarray:
        """`(samples,)` or a batch `(N, samples)` -> log-mel `(n_mels, frames)` / `(N, n_mels, frames)`."""
        pad = self.n_fft // 2  # centred frames, as torch.stft(center=True) and librosa do
        x = np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, pad)], mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=-1)[..., :: self.hop_length, :]
        power = np.abs(np.fft.rfft(frames * _hann(self.n_fft), axis=-1)) ** 2  # (..., frames, bins)
        mel = power.astype(np.float32) @ _mel_filters(self.sample_rate, self.n_fft, self.n_mels).T
        return np.ascontiguousarray(np.swapaxes(np.log(mel + _LOG_FLOOR), -1, -2), dtype=np.float32)


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0].removeprefix("Error opening <_io.BytesIO object at ").split(">: ")[-1]


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 1)[:-1].astype(np.float32)  # periodic, as in spectral analysis


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters `(n_mels, n_fft // 2 + 1)`, centres evenly spaced on the HTK mel scale."""

    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(0.0, mel(np.array(sample_rate / 2)), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins_hz - lo) / (mid - lo)
    down = (hi - bins_hz) / (hi - mid)
    filters: np.ndarray = np.maximum(0.0, np.minimum(up, down)).astype(np.float32)
    return filters
