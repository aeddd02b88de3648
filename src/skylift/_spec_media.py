"""The media sections of a job spec: `data.image` and `data.audio`, how files become model inputs.

Each section holds what every stage must apply alike (recorded with the model: size, channels,
normalisation; sample rate and log-mel settings) and what only training applies (`augment`).
The per-sample shape computed here is the one the data layer's `ImagePrep` / `AudioPrep` yield
(a unit test keeps them equal); the spec cannot import the data layer, which sits above it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from skylift._spec_base import Frozen

MAX_IMAGE_SIDE = 4096  # pixels: far beyond what a model here takes; a typo like 32000 is refused early


class ImageAugmentSpec(Frozen):
    flip: bool = False
    """Mirror each training image left-right with probability 1/2 (leave off for text or digits)."""
    crop_padding: int = Field(default=0, ge=0, le=256)
    """Random crop: shift each training image by up to this many pixels each way, the uncovered
    border black (CIFAR's `padding: 4`); 0: off."""
    scale: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Random zoom in or out by up to this fraction (0.1: 0.9x to 1.1x); 0: off."""
    rotate_degrees: float = Field(default=0.0, ge=0.0, le=180.0)
    """Random rotation by up to this many degrees either way; 0: off."""

    @property
    def active(self) -> bool:
        return bool(self.flip or self.crop_padding or self.scale or self.rotate_degrees)


class ImageSpec(Frozen):
    size: list[int]
    """[height, width] in pixels every image is brought to (one number: a square)."""
    channels: Literal[1, 3] | None = None
    """1 (grey) or 3 (RGB): every image is converted to it. Left out: the training images' own,
    which must then all agree."""
    mean: list[float] = Field(default_factory=lambda: [0.0])
    """Per-channel mean subtracted after scaling pixels to [0, 1] (one value: every channel)."""
    std: list[float] = Field(default_factory=lambda: [1.0])
    """Per-channel standard deviation divided by after the mean (one value: every channel)."""
    fit: Literal["resize", "crop"] = "resize"
    """resize: scale the whole image to `size` (the aspect ratio may change); crop: scale the
    shorter side to fit and cut the centre."""
    augment: ImageAugmentSpec = Field(default_factory=ImageAugmentSpec)
    """Training-time random changes to each image (off in validation, evaluation and serving)."""

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return [v, v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("size")
    @classmethod
    def _size(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or not all(1 <= d <= MAX_IMAGE_SIDE for d in v):
            raise ValueError(f"must be [height, width] with sizes in 1..{MAX_IMAGE_SIDE}, got {v}")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, v: list[float], info: ValidationInfo) -> list[float]:
        channels = info.data.get("channels")
        allowed = (1, channels) if channels else (1, 3)
        if len(v) not in allowed:
            want = "1 value" if channels == 1 else f"1 or {allowed[-1]} values (one per channel)"
            raise ValueError(f"needs {want}, got {v}")
        if info.field_name == "std" and any(s <= 0 for s in v):
            raise ValueError(f"must hold values > 0 (it divides), got {v}")
        return v

    def shape(self, channels: int) -> tuple[int, int, int]:
        """The model's per-sample input: (channels, height, width)."""
        return (channels, self.size[0], self.size[1])


class AudioAugmentSpec(Frozen):
    time_shift_s: float = Field(default=0.0, ge=0.0, le=10.0)
    """Shift each training clip in time by up to this many seconds either way (the gap is silence)."""
    freq_mask: int = Field(default=0, ge=0)
    """SpecAugment: blank a random band of up to this many mel bands per clip; 0: off."""
    time_mask: int = Field(default=0, ge=0)
    """SpecAugment: blank a random stretch of up to this many frames per clip; 0: off."""

    @property
    def active(self) -> bool:
        return bool(self.time_shift_s or self.freq_mask or self.time_mask)


class AudioSpec(Frozen):
    sample_rate: int = Field(default=16000, ge=1000, le=384000)
    """Hz every clip is resampled to."""
    duration_s: float = Field(default=1.0, gt=0.0, le=60.0)
    """Seconds every clip is cut or zero-padded to (from its start)."""
    n_mels: int = Field(default=40, ge=1, le=512)
    """Mel bands of the log-mel spectrogram (the model input's first dim)."""
    n_fft: int = Field(default=400, ge=16, le=16384)
    """Samples per analysis window (400: 25 ms at 16 kHz)."""
    hop_length: int = Field(default=160, ge=1, le=16384)
    """Samples between frames (160: 10 ms at 16 kHz)."""
    augment: AudioAugmentSpec = Field(default_factory=AudioAugmentSpec)
    """Training-time random changes to each clip's spectrogram (off in evaluation and serving)."""

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.duration_s)

    @property
    def shape(self) -> tuple[int, int]:
        """The model's per-sample input: (n_mels, frames) of centred frames."""
        return (self.n_mels, 1 + (self.samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length)

    @model_validator(mode="after")
    def _fits(self) -> AudioSpec:
        if self.samples < self.n_fft:
            raise ValueError(
                f"a clip of duration_s {self.duration_s} at {self.sample_rate} Hz is "
                f"{self.samples} samples, shorter than one n_fft window of {self.n_fft}: "
                "lengthen duration_s or lower n_fft"
            )
        bins = self.n_fft // 2 + 1
        if self.n_mels > bins:
            raise ValueError(
                f"n_mels {self.n_mels} is more than the {bins} frequency bins of "
                f"n_fft {self.n_fft}: lower n_mels or raise n_fft"
            )
        mels, frames = self.shape
        if self.augment.freq_mask >= mels:
            raise ValueError(
                f"augment.freq_mask {self.augment.freq_mask} would blank all {mels} mel bands; "
                f"use less than {mels}"
            )
        if self.augment.time_mask >= frames:
            raise ValueError(
                f"augment.time_mask {self.augment.time_mask} would blank all {frames} frames; "
                f"use less than {frames}"
            )
        return self


def _fmt(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def media_problem(
    task: str,
    image: ImageSpec | None,
    audio: AudioSpec | None,
    text_column: str | None,
    path_column: str | None,
    input_shape: list[int] | None,
) -> str | None:
    """What is wrong with a spec's media fields together with the rest, as one line; None if nothing."""
    if image is not None and audio is not None:
        return "data.image and data.audio exclude each other: a model reads images or audio, keep one"
    media = "image" if image is not None else "audio" if audio is not None else None
    if media is None:
        if path_column is not None:
            return "data.path_column applies to tables of image or audio files: add data.image or data.audio"
        return None
    if task != "classification":
        return f"data.{media} applies to classification, not {task}: set task: classification"
    if text_column is not None:
        return f"data.{media} and data.text_column exclude each other: a model reads {media} or text"
    if input_shape is None:
        return None
    if image is not None:
        wanted: tuple[int, ...] = image.shape(image.channels) if image.channels else tuple(image.size)
        given = tuple(input_shape) if image.channels else tuple(input_shape[1:])
        if given != wanted or (not image.channels and input_shape[0] not in (1, 3)):
            what = _fmt(wanted) if image.channels else f"[1 or 3, {image.size[0]}, {image.size[1]}]"
            return (
                f"model.input_shape {_fmt(input_shape)} does not fit data.image (size {_fmt(image.size)}, "
                f"channels {image.channels or '1 or 3'}), which gives {what}: "
                "leave model.input_shape out (it follows data.image) or make the two agree"
            )
    elif audio is not None and tuple(input_shape) != audio.shape:
        return (
            f"model.input_shape {_fmt(input_shape)} does not fit data.audio, whose log-mel spectrogram is "
            f"{_fmt(audio.shape)} (n_mels, frames): leave model.input_shape out (it follows data.audio) "
            "or make the two agree"
        )
    return None
