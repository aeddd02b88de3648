"""Training-time augmentation: what each setting does; a row's change depends on (seed, epoch, row) only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skylift._spec_media import AudioAugmentSpec, ImageAugmentSpec
from skylift.data._audio import AudioPrep
from skylift.data._augment import AudioAugment, ImageAugment, augment_for
from skylift.data._image import ImagePrep

PREP = ImagePrep(size=(6, 8), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))


def _images(n: int = 8) -> torch.Tensor:
    return torch.from_numpy(
        PREP.normalize(np.random.default_rng(0).integers(0, 256, (n, 6, 8, 3), dtype=np.uint8))
    )


def test_nothing_on_means_no_augmentation() -> None:
    assert augment_for(ImageAugmentSpec(), None, PREP, 10, 0) is None
    assert augment_for(None, AudioAugmentSpec(), AudioPrep(), 10, 0) is None
    assert isinstance(augment_for(ImageAugmentSpec(flip=True), None, PREP, 10, 0), ImageAugment)


def test_a_rows_change_depends_on_seed_epoch_and_row_not_on_its_batch() -> None:
    spec = ImageAugmentSpec(flip=True, crop_padding=2, scale=0.1, rotate_degrees=15)
    x, idx = _images(), torch.arange(8)
    aug = ImageAugment(spec, PREP, 8, seed=1)
    whole = aug(x, idx, 1)
    perm = torch.tensor([5, 2, 7, 0])
    rest = torch.tensor([1, 3, 4, 6])
    split = torch.empty_like(whole)
    split[perm] = ImageAugment(spec, PREP, 8, seed=1)(x[perm], perm, 1)  # another object, other batches
    split[rest] = aug(x[rest], rest, 1)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    assert not torch.allclose(aug(x, idx, 2), whole)  # another epoch
    assert not torch.allclose(ImageAugment(spec, PREP, 8, seed=2)(x, idx, 1), whole)  # another seed
    assert whole.shape == x.shape and whole.dtype == x.dtype


def test_flip_mirrors_about_half_the_rows_exactly() -> None:
    x = _images(32)
    out = ImageAugment(ImageAugmentSpec(flip=True), PREP, 32, seed=0)(x, torch.arange(32), 1)
    same = [torch.allclose(o, r, atol=1e-5) for o, r in zip(out, x, strict=True)]
    mirrored = [torch.allclose(o, r.flip(-1), atol=1e-5) for o, r in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 8 <= sum(mirrored) <= 24


def _shifted(r: torch.Tensor, dx: int, dy: int, fill: torch.Tensor) -> torch.Tensor:
    """`r` (C, H, W) moved by (dx, dy) pixels, the uncovered border `fill`."""
    out = fill.expand_as(r).clone()
    h, w = r.shape[-2:]
    out[:, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)] = r[
        :, max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)
    ]
    return out


def test_a_shift_moves_whole_pixels_and_brings_in_black() -> None:
    x = _images(16)
    out = ImageAugment(ImageAugmentSpec(crop_padding=2), PREP, 16, seed=0)(x, torch.arange(16), 1)
    black = torch.tensor([(0 - m) / s for m, s in zip(PREP.mean, PREP.std, strict=True)]).view(3, 1, 1)
    found = []
    for o, r in zip(out, x, strict=True):
        match = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.allclose(o, _shifted(r, dx, dy, black), atol=1e-4)
        ]
        assert match, "every row is its image moved by whole pixels"
        found.append(match[0])
    assert len(set(found)) >= 5  # the shifts vary


def test_rotation_keeps_the_centre_pixel_of_an_odd_image() -> None:
    prep = ImagePrep(size=(7, 7), channels=1)
    x = torch.rand(4, 1, 7, 7)
    out = ImageAugment(ImageAugmentSpec(rotate_degrees=90), prep, 4, seed=0)(x, torch.arange(4), 1)
    torch.testing.assert_close(out[:, :, 3, 3], x[:, :, 3, 3], rtol=0, atol=1e-5)
    assert not torch.allclose(out, x)


def test_audio_shift_fills_with_silence_and_masks_with_the_clip_mean() -> None:
    prep = AudioPrep(sample_rate=8000, duration_s=0.5, n_mels=16, n_fft=200, hop_length=80)
    mels, frames = prep.shape
    x = torch.randn(6, mels, frames)
    shift = AudioAugment(AudioAugmentSpec(time_shift_s=0.05), prep, 6, seed=0)
    assert shift.max_shift == 5  # 0.05 s * 8000 Hz / 80 samples per frame
    out = shift(x, torch.arange(6), 1)
    silence = math.log(1e-6)
    for o, r in zip(out, x, strict=True):
        k = next(
            s
            for s in range(-5, 6)
            if torch.equal(o[:, max(s, 0) : frames + min(s, 0)], r[:, max(-s, 0) : frames - max(s, 0)])
        )
        gap = o[:, :k] if k > 0 else o[:, frames + k :]
        assert (gap == silence).all()
    masked = AudioAugment(AudioAugmentSpec(freq_mask=4, time_mask=10), prep, 6, seed=0)(x, torch.arange(6), 1)
    changed = masked != x
    assert changed.any()
    for o, c in zip(masked, changed, strict=True):
        if c.any():
            assert torch.unique(o[c]).numel() == 1  # one fill value per clip


@pytest.mark.parametrize("epoch", [1, 7])
def test_augmentation_runs_on_the_batchs_device_and_dtype(epoch: int) -> None:
    x = _images(4).double()
    out = ImageAugment(ImageAugmentSpec(rotate_degrees=5, scale=0.2), PREP, 4, 0)(x, torch.arange(4), epoch)
    assert out.dtype == torch.float64 and out.device == x.device
