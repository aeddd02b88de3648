"""Label encoding: which labels keep their ids, which are ranked, and mapping onto train classes."""

from __future__ import annotations

import numpy as np
import pytest

from skylift.data._build import encode_labels
from skylift.errors import DataError


def test_contiguous_integers_keep_their_ids() -> None:
    ids, classes = encode_labels("s", np.array([2, 0, 1, 2], dtype=np.uint8))
    np.testing.assert_array_equal(ids, [2, 0, 1, 2])
    assert ids.dtype == np.int64 and classes == ("0", "1", "2")


def test_whole_floats_and_bools_are_integers() -> None:
    ids, classes = encode_labels("s", np.array([1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(ids, [1, 0, 1])
    assert classes == ("0", "1")
    assert encode_labels("s", np.array([True, False]))[1] == ("0", "1")


@pytest.mark.parametrize(
    ("labels", "ids", "classes"),
    [
        ([5, 7, 5, 9], [0, 1, 0, 2], ("5", "7", "9")),
        ([-1, 1, -1], [0, 1, 0], ("-1", "1")),
        ([0, 2, 2], [0, 1, 1], ("0", "2")),
        (["dog", "cat", "emu", "cat"], [1, 0, 2, 0], ("cat", "dog", "emu")),
        (np.array([b"n", b"m"]), [1, 0], ("m", "n")),
        (np.array(["y", "x"], dtype=object), [1, 0], ("x", "y")),
    ],
)
def test_other_labels_are_ranked_by_sorted_value(
    labels: object, ids: list[int], classes: tuple[str, ...]
) -> None:
    got_ids, got_classes = encode_labels("s", np.asarray(labels))
    np.testing.assert_array_equal(got_ids, ids)
    assert got_classes == classes


def test_mapping_onto_given_classes_by_name() -> None:
    ids, classes = encode_labels("s", np.array([3, 1]), classes=("1", "2", "3"))
    np.testing.assert_array_equal(ids, [2, 0])
    assert classes == ("1", "2", "3")
    ids, _ = encode_labels("s", np.array(["b", "b", "a"]), classes=("b", "a"))
    np.testing.assert_array_equal(ids, [0, 0, 1])


def test_unknown_label_names_label_and_row() -> None:
    with pytest.raises(
        DataError, match=r"^t.csv: label 'zebra' \(row 2\) is not one of the train classes \(a, b\)$"
    ):
        encode_labels("t.csv", np.array(["a", "b", "zebra"]), classes=("a", "b"))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([0.0, 0.5]), "label 0.5 at row 1 is not a class"),
        (np.array([0.0, np.nan]), "at row 1 is not a class"),
        (np.array(["a", None], dtype=object), "label at row 1 is missing"),
        (np.array([1 + 2j]), "labels must be integers or names"),
    ],
)
def test_bad_labels(labels: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        encode_labels("s", labels)
