"""Built-in data sets (`builtin:NAME`), made in memory from scikit-learn's bundled digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from skylift.data._dataset import Dataset
from skylift.errors import DataError

# Legend: N samples, H/W image height/width in pixels.

_DIGIT_CLASSES = tuple(str(i) for i in range(10))
_DIGITS_MAX = 16.0  # load_digits pixels are counts 0..16 of a 4x4 block
_MNIST_BOX = 20  # MNIST centres each digit in a 20x20 box ...
_MNIST_PAD = 4  # ... padded by 4 zero pixels on every side to 28x28


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(images_NHW float32 in [0, 1], labels_N int64) of the 1797 8x8 digits.

    Read from the file scikit-learn ships, without importing scikit-learn (1.5 s of scipy imports,
    paid by every training process and tuning trial otherwise).
    """
    import gzip
    import importlib.util

    found = importlib.util.find_spec("sklearn")  # finds the package without importing it
    folders = found.submodule_search_locations if found else None
    csv = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if csv is None or not csv.is_file():
        raise DataError("builtin digits: digits.csv.gz is missing from scikit-learn; reinstall it")
    with gzip.open(csv, "rt") as f:
        rows_N65 = np.loadtxt(f, delimiter=",", dtype=np.float32)  # 64 pixels, then the label
    images_NHW = rows_N65[:, :-1].reshape(-1, 8, 8) / np.float32(_DIGITS_MAX)
    return images_NHW, rows_N65[:, -1].astype(np.int64)


def _digits() -> Dataset:
    images_NHW, labels_N = _digit_images()
    return Dataset(images_NHW.reshape(len(images_NHW), -1), labels_N, _DIGIT_CLASSES)


def _digits28() -> Dataset:
    """The digits in MNIST's format: each resized to 20x20 (bilinear) and zero-padded to 28x28."""
    import torch
    import torch.nn.functional as F

    images_NHW, labels_N = _digit_images()
    images_N1HW = torch.from_numpy(images_NHW).unsqueeze(1)
    box_N1HW = F.interpolate(
        images_N1HW, size=(_MNIST_BOX, _MNIST_BOX), mode="bilinear", align_corners=False, antialias=False
    )
    padded_N1HW = F.pad(box_N1HW, (_MNIST_PAD,) * 4)
    # Bilinear weights sum to 1, but float rounding can step a hair past 1.0.
    x_ND = padded_N1HW.clamp_(0.0, 1.0).reshape(len(labels_N), -1).numpy()
    return Dataset(x_ND, labels_N, _DIGIT_CLASSES)


_BUILTINS: dict[str, Callable[[], Dataset]] = {"digits": _digits, "digits28": _digits28}


def builtin_names() -> tuple[str, ...]:
    """Names accepted after `builtin:`."""
    return tuple(_BUILTINS)


def read_builtin(name: str) -> Dataset:
    """The built-in data set `name`; unknown names raise DataError listing the known ones."""
    make = _BUILTINS.get(name)
    if make is None:
        raise DataError(f"builtin:{name}: unknown built-in data set; known: {', '.join(_BUILTINS)}")
    return make()
