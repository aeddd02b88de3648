"""Image and audio inputs for classifiers: files decoded once into tensors, the preprocessing recorded.

What the model records (checkpoint meta, then the registry's model.json "data" block) is the
contract with every stage that decodes a file for it (`evaluate`, `predict`, `serve`):
`"input"` ("image" or "audio"), `"preprocessing"` (`ImagePrep` / `AudioPrep` as JSON) and an
`input_shape` equal to the preprocessing's shape. Augmentation is training-only and not recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.data._rows import TensorRows
from skylift.errors import SpecError
from skylift.tasks._base import TaskData

if TYPE_CHECKING:
    from skylift.data._media import Preprocessing
    from skylift.spec import JobSpec


def media_meta(prep: Preprocessing, path_column: str | None) -> dict[str, Any]:
    """What a media model records beside its classes: the input kind, the preprocessing settings,
    and the table column its file paths came from (evaluate reads the same column by default)."""
    return {
        "input": prep.kind,
        "preprocessing": prep.to_json(),
        **({"path_column": path_column} if path_column else {}),
    }


def load_media_classification(spec: JobSpec, cache: Path | None) -> TaskData:
    from skylift.data._augment import augment_for
    from skylift.data._media_source import load_media_splits
    from skylift.tasks.classification import as_input

    d = spec.data
    splits, prep = load_media_splits(d, spec.train.seed, cache)
    shape = tuple(prep.shape)
    given = spec.model.input_shape
    if given is not None and tuple(given) != shape:  # the spec checked all but inferred channels
        raise SpecError(
            f"model.input_shape {list(given)} does not fit the images, which data.image makes "
            f"{list(shape)} (channels taken from the files): leave model.input_shape out or set "
            "data.image.channels"
        )
    train, val, test = (
        TensorRows(*as_input(ds, shape)) if ds is not None else None
        for ds in (splits.train, splits.val, splits.test)
    )
    assert train is not None and val is not None
    image, audio = (d.image.augment if d.image else None), (d.audio.augment if d.audio else None)
    augment = augment_for(image, audio, prep, len(train), spec.train.seed)
    return TaskData(
        train=train,
        val=val,
        test=test,
        input_shape=shape,
        n_outputs=len(splits.classes),
        terms_per_row=1,
        meta={"task": "classification", "classes": list(splits.classes), **media_meta(prep, d.path_column)},
        fingerprint=splits.train.fingerprint(),
        augment=augment,
    )
