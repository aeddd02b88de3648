"""Image and audio files -> in-memory datasets: list, hash, decode once (cached by content), split.

The entry points are `load_media_splits` (training: the spec's settings; image channels left out
are taken from the training images) and `read_media` (evaluation: a registered model's recorded
`ImagePrep` / `AudioPrep`, so it decodes exactly as training did). Rows come out as a plain
`Dataset`: images normalised float32 (N, C, H, W), audio log-mel float32 (N, M, F).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.data._audio import AudioPrep
from skylift.data._build import encode_labels
from skylift.data._dataset import Dataset, Splits
from skylift.data._image import FORMATS, MAX_PIXELS, ImagePrep
from skylift.data._image import _too_large as too_large
from skylift.data._media import Preprocessing
from skylift.data._media_cache import MediaCache, cache_key, file_digest
from skylift.data._media_decode import Progress, decode_files, item_layout
from skylift.data._media_files import MediaFiles, MediaKind, label_order, list_media
from skylift.errors import DataError

if TYPE_CHECKING:
    from skylift.spec import DataSpec

CACHE_FOLDER = "media"  # under SKYLIFT_HOME/cache


def media_kind(d: DataSpec) -> MediaKind | None:
    """ "image" or "audio" when the spec reads media files; None otherwise."""
    return "image" if d.image is not None else "audio" if d.audio is not None else None


def load_media_splits(d: DataSpec, seed: int, cache: Path | None) -> tuple[Splits, Preprocessing]:
    """The train/val/test sets of a media data spec and the preprocessing they were decoded with.

    As `load_splits`: test = `d.test` (class folders or a table), else a stratified `test_split`
    of train; val = a stratified `validation_split` of the rest; both seeded. `cache`: the folder
    (SKYLIFT_HOME/cache) whose `media/` keeps decoded arrays between runs; None: no cache.
    """
    from skylift.data._split import non_empty, stratified_split

    kind = media_kind(d)
    assert kind is not None  # only called for media specs
    files = list_media(d.train, kind, path_column=d.path_column, label_column=d.label_column)
    prep = spec_prep(d, files)
    data = read_media(files, prep, None, cache)
    test: Dataset | None = None
    if d.test is not None:
        held = list_media(d.test, kind, path_column=d.path_column, label_column=d.label_column)
        test = read_media(held, prep, data.classes, cache)
    elif d.test_split > 0:
        data, test = stratified_split(data, d.test_split, seed)
        non_empty(d.train, test, "test_split")
    train, val = stratified_split(data, d.validation_split, seed)
    non_empty(d.train, val, "validation_split")
    return Splits(train=train, val=val, test=test), prep


def spec_prep(d: DataSpec, files: MediaFiles) -> Preprocessing:
    """The spec's media settings as the preprocessing recorded with the model."""
    if d.audio is not None:
        a = d.audio
        return AudioPrep(a.sample_rate, a.duration_s, a.n_mels, a.n_fft, a.hop_length)
    image = d.image
    assert image is not None
    channels = image.channels or image_channels(files)
    for name in ("mean", "std"):
        values = getattr(image, name)
        if len(values) not in (1, channels):
            raise DataError(
                f"{files.source}: data.image.{name} has {len(values)} values but the images have "
                f"{channels} channel(s): give 1 or {channels} values, or set data.image.channels"
            )
    return ImagePrep(
        size=(image.size[0], image.size[1]),
        channels=channels,  # type: ignore[arg-type]  # 1 or 3, as image_channels returns
        mean=tuple(image.mean),
        std=tuple(image.std),
        fit=image.fit,
    )


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def image_channels(files: MediaFiles) -> int:
    """1 when every image is grey, 3 when every one is colour; mixed is a DataError with the fix.

    Reads each file's header only (Pillow opens lazily): no pixel is decoded here.
    """
    from PIL import Image, UnidentifiedImageError

    first: dict[int, str] = {}
    for path in files.paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sized in the decode
                with Image.open(path, formats=FORMATS) as img:
                    mode, (w, h) = img.mode, img.size
        except UnidentifiedImageError:
            raise DataError(f"{path}: not a PNG, JPEG or WebP image") from None
        except Image.DecompressionBombError:  # Pillow's own limit, above ours
            raise DataError(too_large(str(path), "the image")) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot read the image header ({exc})") from None
        if w * h > MAX_PIXELS:  # refused here as the decode would: before any pixel is read
            raise DataError(too_large(str(path), f"{w}x{h} pixels"))
        first.setdefault(1 if mode in _GREY_MODES else 3, str(path))
        if len(first) == 2:
            raise DataError(
                f"{files.source}: images have mixed channel counts ({first[1]} is grey, {first[3]} is "
                "colour): set data.image.channels to 1 or 3 to convert every image to it"
            )
    return next(iter(first))


def read_media(
    files: MediaFiles, prep: Preprocessing, classes: tuple[str, ...] | None, cache: Path | None
) -> Dataset:
    """The files decoded with `prep` (from the cache when an intact entry is there), as a Dataset.

    `classes`: the model's class names, onto which the labels are mapped (a label outside them is
    a DataError); None: the files' own classes, in numeric-then-alphabetical order.
    """
    digests = _digests(files)
    settings = prep.to_json()
    if isinstance(prep, ImagePrep):  # pixels are stored before normalisation
        settings = {k: v for k, v in settings.items() if k not in ("mean", "std")}
    shape, dtype = item_layout(prep)
    store = MediaCache(cache / CACHE_FOLDER) if cache is not None else None
    key = cache_key(digests, settings)
    decoded = store.get(key, (len(files), *shape), dtype) if store is not None else None
    if decoded is None:
        with _bar(len(files), f"decoding {len(files)} {prep.kind} files") as advance:
            decoded = decode_files([str(p) for p in files.paths], digests, prep, progress=advance)
        if store is not None:
            store.put(key, decoded)
    x = prep.normalize(decoded) if isinstance(prep, ImagePrep) else decoded
    names = tuple(sorted(set(files.labels), key=label_order)) if classes is None else classes
    ids, names = encode_labels(files.source, np.asarray(files.labels), names)
    try:
        return Dataset(x, ids, names)
    except DataError as exc:
        raise DataError(f"{files.source}: {exc}") from None


def _digests(files: MediaFiles) -> list[str]:
    try:
        return [file_digest(p) for p in files.paths]
    except OSError as exc:
        raise DataError(f"{exc.filename or files.source}: cannot read ({exc.strerror})") from None


@contextlib.contextmanager
def _bar(total: int, what: str) -> Iterator[Progress | None]:
    """A progress bar on the terminal's stderr (nothing when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task: Any = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
