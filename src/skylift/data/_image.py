"""Image bytes -> the model's input array: one decoder shared by training, `evaluate`, `predict` and `serve`.

The settings (`ImagePrep`) are recorded with a registered model, so every stage that decodes an
image for it applies exactly what training applied. Hostile input is refused before it costs
memory: only PNG, JPEG and WebP are opened, the pixel count is read from the header and checked
against `MAX_PIXELS` before any pixel is decoded, and a truncated file is an error, not a
partially grey image.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from skylift.errors import DataError

FORMATS = ("PNG", "JPEG", "WEBP")
# 40 megapixels: a large camera photo. A 20000x20000 PNG of a few kB would need 1.2 GB as RGB.
MAX_PIXELS = 40_000_000

Fit = Literal["resize", "crop"]


@dataclass(frozen=True)
class ImagePrep:
    """How an encoded image becomes a float32 `(channels, height, width)` array.

    `fit`: "resize" scales the whole image to `size` (the aspect ratio may change); "crop" scales
    the shorter side to fit and cuts the centre. Pixels are scaled to [0, 1], then
    `(x - mean) / std` per channel.
    """

    size: tuple[int, int]  # (height, width), pixels
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    fit: Fit = "resize"

    kind = "image"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": list(self.size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "fit": self.fit,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImagePrep:
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            channels=int(d["channels"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            fit=d["fit"],
        )

    def decode(self, blob: bytes, where: str = "image") -> np.ndarray:
        """Decodes one PNG/JPEG/WebP file's bytes; a `DataError` naming `where` if it is not one."""
        return self.normalize(self.pixels(blob, where))

    def pixels(self, blob: bytes, where: str = "image") -> np.ndarray:
        """The decoded, fitted uint8 pixels `(height, width, channels)`, before normalisation."""
        from PIL import Image, UnidentifiedImageError

        mode = "L" if self.channels == 1 else "RGB"
        height, width = self.size
        try:
            with warnings.catch_warnings():
                # Pillow warns (and under -W error raises) past its own bomb threshold; ours is lower.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                encoded = Image.open(io.BytesIO(blob), formats=FORMATS)
                w, h = encoded.size
                if w * h > MAX_PIXELS:
                    raise DataError(_too_large(where, f"{w}x{h} pixels"))
                # JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the target: much faster.
                encoded.draft(mode, (width, height))
                img = encoded.convert(mode)
        except DataError:
            raise
        except Image.DecompressionBombError:  # Pillow's own check, met first in some formats
            raise DataError(_too_large(where, "the image")) from None
        except UnidentifiedImageError:
            raise DataError(f"{where}: not a PNG, JPEG or WebP image") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{where}: cannot decode the image ({exc})") from None
        return np.asarray(_fit(img, width, height, self.fit), dtype=np.uint8).reshape(
            height, width, self.channels
        )

    def normalize(self, pixels_HWC: np.ndarray) -> np.ndarray:
        """uint8 `(H, W, C)`, or a batch `(N, H, W, C)` -> normalised float32 `(C, H, W)` / `(N, C, H, W)`."""
        x = pixels_HWC.astype(np.float32) * np.float32(1 / 255)
        x_norm = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(x_norm, -1, -3), dtype=np.float32)


def _too_large(where: str, what: str) -> str:
    return (
        f"{where}: {what} is more than {MAX_PIXELS:,} pixels "
        "(a decompression bomb, or far larger than any model needs)"
    )


def _fit(img: Any, width: int, height: int, fit: Fit) -> Any:
    from PIL import Image

    if img.size == (width, height):
        return img
    if fit == "resize":
        return img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    w, h = img.size
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    left, top = (sw - width) // 2, (sh - height) // 2
    return img.resize((sw, sh), Image.Resampling.BILINEAR, reducing_gap=3.0).crop(
        (left, top, left + width, top + height)
    )
