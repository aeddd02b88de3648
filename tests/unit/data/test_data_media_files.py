"""Media files as data sets: listing, the content-hash cache, parallel decoding, bad files in one line."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from skylift.data._audio import AudioPrep
from skylift.data._image import ImagePrep
from skylift.data._media_cache import MediaCache, file_digest
from skylift.data._media_decode import decode_files
from skylift.data._media_files import list_media
from skylift.data._media_source import CACHE_FOLDER, image_channels, load_media_splits, read_media
from skylift.errors import DataError
from skylift.spec import parse_spec

RNG = np.random.default_rng(0)


def _png(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


def _images(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 4, mode: str = "RGB") -> Path:
    shape = (10, 12, 3) if mode == "RGB" else (10, 12)
    for c in classes:
        for i in range(n):
            _png(root / c / f"{i}.png", RNG.integers(0, 256, shape, dtype=np.uint8))
    return root


def _wav(path: Path, seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    wave = np.stack([wave] * channels, 1) if channels > 1 else wave
    sf.write(path, wave.astype(np.float32), rate, subtype=subtype, format=path.suffix[1:].upper())
    return path


def _one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def _spec_data(train: Path, **data: object) -> object:
    raw = {"name": "m", "data": {"train": str(train), **data}, "model": {"layers": [{"dense": {"units": 2}}]}}
    return parse_spec(raw).data


# --- listing -----------------------------------------------------------------------------------


def test_class_folders_list_recursively_in_label_order_skipping_hidden_and_other_files(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    for label in ("10", "2", "b"):
        _png(root / label / "x.png", np.zeros((4, 4), np.uint8))
    _png(root / "2" / "nested" / "deeper.jpg", np.zeros((4, 4), np.uint8), "JPEG")
    (root / "2" / "notes.txt").write_text("not an image")
    _png(root / "2" / ".hidden.png", np.zeros((4, 4), np.uint8))
    (root / ".ipynb_checkpoints").mkdir()
    files = list_media(str(root), "image")
    assert files.labels == ("2", "2", "10", "b")  # numeric names in numeric order, then the rest
    assert [p.name for p in files.paths] == ["deeper.jpg", "x.png", "x.png", "x.png"]


def test_a_table_of_paths_reads_relative_paths_from_its_own_folder(tmp_path: Path) -> None:
    _images(tmp_path / "img", n=2)
    table = tmp_path / "list.csv"
    table.write_text("file,kind\nimg/cat/0.png,cat\nimg/dog/1.png,dog\n" + f"{tmp_path}/img/cat/1.png,cat\n")
    files = list_media(str(table), "image", path_column="file", label_column="kind")
    assert files.labels == ("cat", "dog", "cat")
    assert files.paths[0] == tmp_path / "img" / "cat" / "0.png" and files.paths[2].is_absolute()


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (lambda r: None, "holds no class folders"),
        (lambda r: _images(r, ("only",)), "2 or more class folders, found only 'only'"),
        (lambda r: (_images(r), (r / "empty").mkdir()), "class folder 'empty' holds no PNG, JPEG or WebP"),
        (lambda r: _png(r / "x.png", np.zeros((2, 2), np.uint8)), "move them into one sub-folder per class"),
    ],
    ids=["no-classes", "one-class", "empty-class", "loose-files"],
)
def test_bad_layouts_are_one_line(tmp_path: Path, build: object, says: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    build(root)  # type: ignore[operator]
    with pytest.raises(DataError, match=says) as err:
        list_media(str(root), "image")
    _one_line(err)


def test_bad_tables_are_one_line(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("path,label\nmissing.png,a\n")
    with pytest.raises(DataError, match=r"data row 1: 'missing.png' is not a file") as err:
        list_media(str(table), "image")
    _one_line(err)
    table.write_text("file,label\nx.png,a\n")
    with pytest.raises(DataError, match="path column 'path' not found"):
        list_media(str(table), "image")
    with pytest.raises(DataError, match="folder not found"):
        list_media(str(tmp_path / "nowhere"), "audio")


# --- decoding and the cache ---------------------------------------------------------------------


def test_rows_equal_what_serving_decodes_from_each_file(tmp_path: Path) -> None:
    """No train/serve skew: a training row is bit-identical to `prep.decode` of its file."""
    files = list_media(str(_images(tmp_path / "img")), "image")
    prep = ImagePrep(size=(8, 8), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    ds = read_media(files, prep, None, tmp_path / "cache")
    assert ds.classes == ("cat", "dog") and ds.x.shape == (8, 3, 8, 8)
    for row, path in zip(ds.x, files.paths, strict=True):
        np.testing.assert_array_equal(row, prep.decode(path.read_bytes()))
    again = read_media(files, prep, None, tmp_path / "cache")  # from the cache
    np.testing.assert_array_equal(again.x, ds.x)
    clips = tmp_path / "clips"
    for c in ("yes", "no"):
        for i, rate in enumerate((8000, 22050)):
            _wav(clips / c / f"{i}.wav", 0.3 + 0.5 * i, rate, channels=1 + i)
    _wav(clips / "no" / "2.flac", 0.4, 16000)
    audio = list_media(str(clips), "audio")
    aprep = AudioPrep(sample_rate=16000, duration_s=0.5, n_mels=20)
    ads = read_media(audio, aprep, None, tmp_path / "cache")
    assert ads.x.shape == (5, *aprep.shape)
    for row, path in zip(ads.x, audio.paths, strict=True):
        np.testing.assert_array_equal(row, aprep.decode(path.read_bytes()))


def _entry(cache: Path) -> Path:
    (entry,) = (cache / CACHE_FOLDER).glob("*.media")
    return entry


def test_the_cache_is_keyed_by_content_and_a_damaged_entry_is_remade(tmp_path: Path) -> None:
    root = _images(tmp_path / "img")
    prep = ImagePrep(size=(6, 6), channels=3)
    first = read_media(list_media(str(root), "image"), prep, None, tmp_path / "cache")
    entry = _entry(tmp_path / "cache")
    made = entry.stat().st_mtime_ns
    # moved elsewhere, same bytes: the same entry, read not rewritten
    shutil.copytree(root, tmp_path / "moved")
    read_media(list_media(str(tmp_path / "moved"), "image"), prep, None, tmp_path / "cache")
    assert _entry(tmp_path / "cache").stat().st_mtime_ns == made
    # another mean/std reuses the stored pixels; another size is a new entry
    normalised = ImagePrep(size=(6, 6), channels=3, mean=(0.5,), std=(0.5,))
    second = read_media(list_media(str(root), "image"), normalised, None, tmp_path / "cache")
    np.testing.assert_allclose(second.x, (first.x - 0.5) / 0.5, rtol=1e-6, atol=1e-6)
    assert len(list((tmp_path / "cache" / CACHE_FOLDER).glob("*.media"))) == 1
    # damaged in three ways: each time decoded again, replaced, and the rows are the same
    for damage in ("flip", "truncate", "garbage"):
        blob = bytearray(entry.read_bytes())
        if damage == "flip":
            blob[-1] ^= 0xFF
        elif damage == "truncate":
            blob = blob[: len(blob) // 2]
        else:
            blob = bytearray(b"not a cache file")
        entry.write_bytes(bytes(blob))
        again = read_media(list_media(str(root), "image"), prep, None, tmp_path / "cache")
        np.testing.assert_array_equal(again.x, first.x)
        assert (
            MediaCache(tmp_path / "cache" / CACHE_FOLDER).get(entry.stem, (8, 6, 6, 3), "uint8") is not None
        )
    # one byte of one file changed: a new entry
    img = root / "cat" / "0.png"
    _png(img, RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    read_media(list_media(str(root), "image"), prep, None, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / CACHE_FOLDER).glob("*.media"))) == 2


def test_worker_processes_decode_exactly_what_one_process_does(tmp_path: Path) -> None:
    root = _images(tmp_path / "img", n=40)
    files = list_media(str(root), "image")
    paths = [str(p) for p in files.paths]
    digests = [file_digest(p) for p in files.paths]
    prep = ImagePrep(size=(7, 9), channels=1)
    serial = decode_files(paths, digests, prep, workers=1)
    parallel = decode_files(paths, digests, prep, workers=2, parallel_after_s=0.0)
    np.testing.assert_array_equal(parallel, serial)
    (root / "dog" / "39.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # a worker's file
    digests[-1] = file_digest(root / "dog" / "39.png")
    with pytest.raises(DataError, match=r"39\.png: ") as err:
        decode_files(paths, digests, prep, workers=2, parallel_after_s=0.0)
    _one_line(err)


# --- bad files ----------------------------------------------------------------------------------


def _bomb(path: Path, side: int = 20000) -> None:
    """A valid-looking PNG whose header claims side x side pixels (a few hundred bytes on disk)."""
    _png(path, np.zeros((1, 1), np.uint8))
    png = path.read_bytes()
    ihdr = bytearray(png[8:33])
    ihdr[8:16] = struct.pack(">II", side, side)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    path.write_bytes(png[:8] + bytes(ihdr) + png[33:])


def _truncated(path: Path) -> None:
    _png(path, RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:500])


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda p: p.write_text("hello, I am text"), "not a PNG, JPEG or WebP image"),
        (_truncated, "cannot decode the image"),
        (_bomb, "decompression bomb"),
    ],
    ids=["not-an-image", "truncated", "bomb"],
)
def test_a_bad_image_names_its_file_in_one_line(tmp_path: Path, spoil: object, says: str) -> None:
    root = _images(tmp_path / "img")
    bad = root / "dog" / "2.png"
    spoil(bad)  # type: ignore[operator]
    d = _spec_data(root, image={"size": [8, 8], "channels": 3})
    with pytest.raises(DataError, match=says) as err:
        load_media_splits(d, 0, tmp_path / "cache")  # type: ignore[arg-type]
    assert _one_line(err).startswith(str(bad))
    assert not (tmp_path / "cache" / CACHE_FOLDER).exists() or not list((tmp_path / "cache").rglob("*.media"))


def test_a_wav_in_an_unsupported_encoding_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    for c in ("on", "off"):
        for i in range(3):
            _wav(root / c / f"{i}.wav", 0.2, 8000)
    bad = root / "off" / "1.wav"
    blob = bad.read_bytes()
    fmt = blob.index(b"fmt ") + 8  # the format tag: 1 is PCM; 0x0161 is Windows Media Audio
    bad.write_bytes(blob[:fmt] + struct.pack("<H", 0x0161) + blob[fmt + 2 :])
    d = _spec_data(root, audio={"sample_rate": 8000, "duration_s": 0.25, "n_fft": 200, "hop_length": 80})
    with pytest.raises(DataError, match="not a readable WAV or FLAC file") as err:
        load_media_splits(d, 0, None)  # type: ignore[arg-type]
    assert _one_line(err).startswith(str(bad))


def test_mixed_channel_counts_are_refused_unless_channels_is_set(tmp_path: Path) -> None:
    root = _images(tmp_path / "img")
    _png(root / "dog" / "grey.png", np.zeros((10, 12), np.uint8))
    files = list_media(str(root), "image")
    with pytest.raises(
        DataError, match=r"mixed channel counts .*grey.png is grey.* set data.image.channels"
    ) as err:
        image_channels(files)
    _one_line(err)
    for channels in (1, 3):
        d = _spec_data(root, image={"size": [8, 8], "channels": channels}, validation_split=0.25)
        splits, prep = load_media_splits(d, 0, None)  # type: ignore[arg-type]
        assert splits.train.sample_shape == (channels, 8, 8) and prep.shape == (channels, 8, 8)
    grey = _images(tmp_path / "grey", mode="L")
    assert image_channels(list_media(str(grey), "image")) == 1
    with pytest.raises(DataError, match=r"data.image.mean has 3 values but the images have 1 channel"):
        load_media_splits(_spec_data(grey, image={"size": 8, "mean": [0.1, 0.2, 0.3]}), 0, None)  # type: ignore[arg-type]


def test_splits_are_stratified_seeded_and_test_folders_map_onto_train_classes(tmp_path: Path) -> None:
    train = _images(tmp_path / "train", ("a", "b", "c"), n=6)
    held = _images(tmp_path / "held", ("a", "c"), n=2)
    d = _spec_data(train, image={"size": [5, 5]}, test=str(held), validation_split=0.34)
    splits, prep = load_media_splits(d, 3, tmp_path / "cache")  # type: ignore[arg-type]
    assert isinstance(prep, ImagePrep) and prep.channels == 3
    assert splits.classes == ("a", "b", "c") and len(splits.val) == 6 and len(splits.train) == 12
    assert splits.test is not None and splits.test.classes == ("a", "b", "c")
    assert sorted(np.bincount(splits.test.y, minlength=3).tolist()) == [0, 2, 2]
    again, _ = load_media_splits(d, 3, tmp_path / "cache")  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.val.x, splits.val.x)
    stray = _images(tmp_path / "stray", ("a", "zebra"), n=1)
    d = _spec_data(train, image={"size": [5, 5]}, test=str(stray))
    with pytest.raises(DataError, match="'zebra'"):
        load_media_splits(d, 3, None)  # type: ignore[arg-type]
