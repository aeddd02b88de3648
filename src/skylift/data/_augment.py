"""Training-time augmentation of media batches, in torch, on the batch's device.

Each row's random change in an epoch is drawn up front for every training row from a generator
seeded by (run seed, epoch): it depends on neither the batch the row lands in nor the number of
workers, so the same spec and seed give the same model, a resumed run continues exactly, and a
row is changed alike however batches are split between ranks. Validation, evaluation and serving
never call this: they see the rows as decoded.

Shape legend: N training rows, b batch rows, C channels, H W pixels, M mel bands, F frames.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Protocol

from skylift.data._audio import _LOG_FLOOR

if TYPE_CHECKING:
    import torch

    from skylift._spec_media import AudioAugmentSpec, ImageAugmentSpec
    from skylift.data._audio import AudioPrep
    from skylift.data._image import ImagePrep


class BatchAugment(Protocol):
    """Changes a training batch: rows `idx_b` of the training set, in epoch `epoch` (1-based)."""

    def __call__(self, x_bS: torch.Tensor, idx_b: torch.Tensor, epoch: int, /) -> torch.Tensor: ...


def _generator(seed: int, epoch: int) -> torch.Generator:
    import torch

    digest = hashlib.sha256(f"skylift-augment/{seed}/{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class _PerEpoch:
    """Per-row parameters of one epoch, drawn once and kept on the batch's device."""

    def __init__(self, rows: int, seed: int) -> None:
        self.rows, self.seed = rows, seed
        self._epoch: tuple[int, str] | None = None
        self._params: torch.Tensor | None = None

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def params(self, epoch: int, device: torch.device) -> torch.Tensor:
        if self._epoch != (epoch, str(device)) or self._params is None:
            self._params = self.draw(_generator(self.seed, epoch)).to(device)
            self._epoch = (epoch, str(device))
        return self._params


class ImageAugment(_PerEpoch):
    """Random flip, shift (crop with padding), zoom and rotation: one affine resample per batch.

    Pixels the transform brings in from outside the image are black (pixel value 0, normalised
    with the model's mean and std), as torchvision's RandomCrop and RandomRotation fill them.
    """

    def __init__(self, spec: ImageAugmentSpec, prep: ImagePrep, rows: int, seed: int) -> None:
        super().__init__(rows, seed)
        self.spec, self.prep = spec, prep

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """(N, 5): flip sign, angle (radians), scale, shift x, shift y (pixels)."""
        import torch

        n, s = self.rows, self.spec
        flip_N = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if s.flip else torch.ones(n)
        angle_N = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(s.rotate_degrees)
        scale_N = 1 + (torch.rand(n, generator=gen) * 2 - 1) * s.scale
        p = s.crop_padding
        shift_N2 = torch.randint(-p, p + 1, (n, 2), generator=gen).float()
        return torch.stack([flip_N, angle_N, scale_N, shift_N2[:, 0], shift_N2[:, 1]], dim=1)

    def __call__(self, x_bCHW: torch.Tensor, idx_b: torch.Tensor, epoch: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        p_b5 = self.params(epoch, x_bCHW.device).index_select(0, idx_b).to(x_bCHW.dtype)
        h, w = x_bCHW.shape[-2:]
        flip, angle, scale, dx, dy = p_b5.unbind(1)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # Output -> input sampling positions in [-1, 1] coordinates; the rotation is done in pixel
        # units (hence the h/w factors), so a non-square image is not sheared.
        theta_b23 = torch.stack(
            [
                torch.stack([cos * flip, -sin * h / w, 2 * dx / w], dim=1),
                torch.stack([sin * w / h * flip, cos, 2 * dy / h], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta_b23, list(x_bCHW.shape), align_corners=False)
        mean = torch.tensor(self.prep.mean, dtype=x_bCHW.dtype, device=x_bCHW.device)
        std = torch.tensor(self.prep.std, dtype=x_bCHW.dtype, device=x_bCHW.device)
        black_C11 = (-mean / std).expand(x_bCHW.shape[1]).view(-1, 1, 1)
        moved = F.grid_sample(
            x_bCHW - black_C11, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return moved + black_C11


class AudioAugment(_PerEpoch):
    """Random time shift (the gap is silence) and SpecAugment's frequency and time masks (set to
    the clip's mean), on log-mel spectrograms."""

    def __init__(self, spec: AudioAugmentSpec, prep: AudioPrep, rows: int, seed: int) -> None:
        super().__init__(rows, seed)
        self.spec = spec
        self.max_shift = round(spec.time_shift_s * prep.sample_rate / prep.hop_length)  # frames
        self.mels, self.frames = prep.shape

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """(N, 5) int64: shift (frames), mask band start and width, mask stretch start and width."""
        import torch

        n, s = self.rows, self.spec

        def widths(most: int) -> torch.Tensor:
            return torch.randint(0, most + 1, (n,), generator=gen)

        def starts(width_N: torch.Tensor, size: int) -> torch.Tensor:
            return (torch.rand(n, generator=gen) * (size - width_N + 1)).long()

        shift_N = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=gen)
        band_N, stretch_N = widths(s.freq_mask), widths(s.time_mask)
        return torch.stack(
            [shift_N, starts(band_N, self.mels), band_N, starts(stretch_N, self.frames), stretch_N], dim=1
        )

    def __call__(self, x_bMF: torch.Tensor, idx_b: torch.Tensor, epoch: int) -> torch.Tensor:
        import torch

        p_b5 = self.params(epoch, x_bMF.device).index_select(0, idx_b)
        b, m, f = x_bMF.shape
        shift, band0, band, stretch0, stretch = (c.view(b, 1, 1) for c in p_b5.unbind(1))
        src_b1F = torch.arange(f, device=x_bMF.device).view(1, 1, f) - shift
        inside = (src_b1F >= 0) & (src_b1F < f)
        moved = x_bMF.gather(2, src_b1F.clamp(0, f - 1).expand(b, m, f))
        moved = torch.where(inside, moved, torch.full_like(moved, math.log(_LOG_FLOOR)))
        mel_1M1 = torch.arange(m, device=x_bMF.device).view(1, m, 1)
        frame_11F = torch.arange(f, device=x_bMF.device).view(1, 1, f)
        masked = ((mel_1M1 >= band0) & (mel_1M1 < band0 + band)) | (
            (frame_11F >= stretch0) & (frame_11F < stretch0 + stretch)
        )
        return torch.where(masked, moved.mean(dim=(1, 2), keepdim=True), moved)


def augment_for(
    image: ImageAugmentSpec | None,
    audio: AudioAugmentSpec | None,
    prep: ImagePrep | AudioPrep,
    rows: int,
    seed: int,
) -> BatchAugment | None:
    """The training batches' augmentation for a media spec; None when every setting is off."""
    from skylift.data._audio import AudioPrep
    from skylift.data._image import ImagePrep

    if image is not None and image.active and isinstance(prep, ImagePrep):
        return ImageAugment(image, prep, rows, seed)
    if audio is not None and audio.active and isinstance(prep, AudioPrep):
        return AudioAugment(audio, prep, rows, seed)
    return None
