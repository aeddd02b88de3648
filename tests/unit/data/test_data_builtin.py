"""builtin:digits and builtin:digits28."""

from __future__ import annotations

import numpy as np
import pytest

from skylift.data import Dataset, read_source
from skylift.errors import DataError

DIGIT_CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    data, test = read_source("builtin:digits")
    assert test is None
    return data


@pytest.fixture(scope="module")
def digits28() -> Dataset:
    data, test = read_source("builtin:digits28")
    assert test is None
    return data


def test_digits_shape_range_classes(digits: Dataset) -> None:
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert digits.classes == DIGIT_CLASSES
    assert set(np.unique(digits.y)) == set(range(10))


def test_digits28_is_each_digit_resized_to_20x20_and_padded(digits: Dataset, digits28: Dataset) -> None:
    import torch
    import torch.nn.functional as F

    assert digits28.x.shape == (1797, 784) and digits28.x.dtype == np.float32
    assert digits28.classes == DIGIT_CLASSES
    np.testing.assert_array_equal(digits28.y, digits.y)
    assert digits28.x.min() >= 0.0 and digits28.x.max() <= 1.0
    images = digits28.x.reshape(-1, 28, 28)
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert not images[:, border].any()  # 4 zero pixels on every side
    small = torch.from_numpy(digits.x[:5].reshape(5, 1, 8, 8))
    box = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False, antialias=False)
    np.testing.assert_allclose(images[:5, 4:24, 4:24], box[:, 0].numpy(), atol=1e-6)


def test_builtins_are_deterministic(digits28: Dataset) -> None:
    again, _ = read_source("builtin:digits28")
    assert again.fingerprint() == digits28.fingerprint()


def test_unknown_builtin_lists_known_names() -> None:
    with pytest.raises(
        DataError, match=r"^builtin:mnist: unknown built-in data set; known: digits, digits28$"
    ):
        read_source("builtin:mnist")


def test_builtin_labels_map_onto_given_classes() -> None:
    classes = tuple(str(i) for i in range(9, -1, -1))  # the same names in reverse order
    data, _ = read_source("builtin:digits", classes=classes)
    plain, _ = read_source("builtin:digits")
    np.testing.assert_array_equal(data.y, 9 - plain.y)
    with pytest.raises(DataError, match=r"label '9' .* is not one of the train classes"):
        read_source("builtin:digits", classes=tuple(str(i) for i in range(9)))
