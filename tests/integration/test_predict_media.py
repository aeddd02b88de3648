"""`skylift predict` over image and audio files for real: a folder, a .txt and a .csv list of
paths; rows in input order keyed by path, equal to the registered model in-process on the files
decoded with its recorded preprocessing; 2 workers write the bytes 1 writes; a bad file is one
line and exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from skylift.cli import main
from skylift.registry import Registry
from tests.conftest import finish, skylift_process
from tests.integration.media_files import (
    AUDIO_PREP,
    CLASSES,
    IMAGE_PREP,
    bomb_png,
    expected,
    image,
    register_audio_model,
    register_image_model,
    register_image_regressor,
    unsupported_wav,
    wav,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with `pets` and `calls`, and photos/ (nested, with a non-image) and clips/ to predict."""
    place = tmp_path_factory.mktemp("predict-media")
    register_image_model(place / "home", "pets")
    register_audio_model(place / "home", "calls")
    register_image_regressor(place / "home", "sizes")
    photos = place / "photos"
    (photos / "b").mkdir(parents=True)
    for i in range(7):
        (photos / f"{i:02d}.png").write_bytes(image(i))
    (photos / "b" / "a.jpg").write_bytes(image(20, "JPEG", size=(50, 30)))
    (photos / "b" / "c.webp").write_bytes(image(21, "WEBP"))
    (photos / "notes.txt").write_text("not an image\n")
    clips = place / "clips"
    clips.mkdir()
    for i in range(3):
        (clips / f"call-{i}.wav").write_bytes(wav(i, rate=(8000, 16000, 44100)[i]))
    (clips / "call-3.flac").write_bytes(wav(3, fmt="FLAC", subtype="PCM_24"))
    return place


def _predict(place: Path, model: str, source: str, output: str, *args: str) -> tuple[int, str, str]:
    """`skylift predict` in a process of its own (what several workers need)."""
    where = ["--input", str(place / source), "--output", str(place / output)]
    return finish(skylift_process(place / "home", "predict", model, *where, *args), timeout=180)


def _here(
    capsys: pytest.CaptureFixture[str], place: Path, model: str, source: str, output: str, *args: str
) -> tuple[int, str, str]:
    """`skylift predict` in this process, with one worker (quicker: no interpreter to start)."""
    where = ["--home", str(place / "home"), "--input", str(place / source), "--output", str(place / output)]
    code = main(["predict", model, *where, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _local(place: Path, model: str, keys: list[str], folder: str) -> np.ndarray:
    """The registered model's probabilities, in-process, for the files at `folder/key`."""
    loaded = Registry(place / "home").load(model)
    prep = IMAGE_PREP if model == "pets" else AUDIO_PREP
    x = np.stack([prep.decode((place / folder / k).read_bytes()) for k in keys])
    return expected(loaded.module, x)


def test_a_folder_in_path_order_keyed_by_relative_path(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _here(capsys, place, "pets", "photos", "photos.csv", "--proba")
    assert code == 0, err
    assert "skipped 1 file(s) that are not .png, .jpg, .jpeg, .webp" in out and "predicted 9 rows" in out
    with open(place / "photos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [f"{i:02d}.png" for i in range(7)] + ["b/a.jpg", "b/c.webp"]
    assert [r["path"] for r in rows] == keys
    want = _local(place, "pets", keys, "photos")
    got = np.array([[float(r[f"proba_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [r["class"] for r in rows] == [CLASSES[i] for i in want.argmax(1)]


def test_lists_keep_their_order_and_their_paths(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = ["photos/b/c.webp", "photos/03.png", "photos/00.png", "photos/03.png"]
    (place / "some.txt").write_text("\n".join(listed[:2]) + "\n\n" + "\n".join(listed[2:]) + "\n")
    code, _, err = _here(capsys, place, "pets", "some.txt", "some.jsonl", "--proba")
    assert code == 0, err
    lines = [json.loads(line) for line in (place / "some.jsonl").read_text().splitlines()]
    assert [line["path"] for line in lines] == listed
    want = _local(place, "pets", listed, ".")
    np.testing.assert_allclose([[line["proba"][c] for c in CLASSES] for line in lines], want, atol=1e-6)
    (place / "some.csv").write_text("id,path\n1,photos/05.png\n2,photos/b/a.jpg\n")
    code, _, err = _here(capsys, place, "pets", "some.csv", "some.parquet")
    assert code == 0, err
    table = pq.read_table(place / "some.parquet").to_pydict()
    assert table["path"] == ["photos/05.png", "photos/b/a.jpg"] and list(table) == ["path", "class"]


def test_a_regressor_writes_its_targets_after_the_path(
    place: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [f"{i:02d}.png" for i in range(7)] + ["b/a.jpg", "b/c.webp"]
    x = np.stack([IMAGE_PREP.decode((place / "photos" / k).read_bytes()) for k in keys])
    with torch.inference_mode():
        want = Registry(place / "home").load("sizes").module(torch.from_numpy(x)).numpy()
    for output in ("sizes.csv", "sizes.jsonl", "sizes.npz"):
        code, _, err = _here(capsys, place, "sizes", "photos", output)
        assert code == 0, err
    with open(place / "sizes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "width", "height"] and [r["path"] for r in rows] == keys
    np.testing.assert_allclose([[float(r["width"]), float(r["height"])] for r in rows], want, rtol=1e-5)
    lines = [json.loads(line) for line in (place / "sizes.jsonl").read_text().splitlines()]
    assert list(lines[0]) == ["path", "width", "height"] and [line["path"] for line in lines] == keys
    z = np.load(place / "sizes.npz")
    assert z["path"].tolist() == keys and np.allclose(z["height"], want[:, 1], rtol=1e-5)


def test_two_workers_write_the_bytes_one_writes(place: Path) -> None:
    small = ("--chunk-rows", "2", "--batch-rows", "2")
    code, _, err = _predict(place, "pets", "photos", "one.npz", "--top-k", "2", *small)
    assert code == 0, err
    code, out, err = _predict(place, "pets", "photos", "two.npz", "--top-k", "2", "--workers", "2", *small)
    assert code == 0, err
    assert "2 worker(s)" in out
    assert (place / "one.npz").read_bytes() == (place / "two.npz").read_bytes()
    z = np.load(place / "two.npz")
    assert z["path"].tolist()[-2:] == ["b/a.jpg", "b/c.webp"] and z["top_k_class"].shape == (9, 2)


def test_audio_clips_at_any_rate(place: Path) -> None:
    code, _, err = _predict(
        place, "calls", "clips", "clips.csv", "--proba", "--workers", "2", "--chunk-rows", "2"
    )
    assert code == 0, err
    with open(place / "clips.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ["call-0.wav", "call-1.wav", "call-2.wav", "call-3.flac"]
    assert [r["path"] for r in rows] == keys
    got = np.array([[float(r[f"proba_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, _local(place, "calls", keys, "clips"), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "blob", "workers", "says"),
    [
        ("bad.png", image(1)[:150], "2", "bad/bad.png: cannot decode the image"),
        ("bomb.png", bomb_png(), "1", "bad/bomb.png: the image is more than 40,000,000 pixels"),
        ("fake.jpg", b"GIF89a" + bytes(64), "1", "bad/fake.jpg: not a PNG, JPEG or WebP image"),
    ],
    ids=["truncated-2-workers", "bomb", "not-an-image"],
)
def test_a_bad_file_is_one_line_and_exit_2(
    place: Path, name: str, blob: bytes, workers: str, says: str
) -> None:
    folder = place / "bad"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / "ok.png").write_bytes(image(1))
    (folder / name).write_bytes(blob)
    (place / "bad.txt").write_text(f"bad/ok.png\nbad/{name}\n")
    code, out, err = _predict(
        place, "pets", "bad.txt", f"bad-{name}.csv", "--workers", workers, "--chunk-rows", "1"
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and says in lines[0], (out, err)
    assert "Traceback" not in err and not (place / f"bad-{name}.csv").exists()


def test_refusals_name_the_fix(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (place / "clips" / "bad.wav").write_bytes(unsupported_wav())
    try:
        code, _, err = _here(capsys, place, "calls", "clips", "c.csv")
        assert code == 2 and "bad.wav: not a readable WAV or FLAC file" in err, err
    finally:
        (place / "clips" / "bad.wav").unlink()
    code, _, err = _here(capsys, place, "pets", "photos", "p.npy")
    assert code == 2 and "one .npy array cannot hold" in err and "use .csv, .parquet, .jsonl or .npz" in err
    (place / "missing.txt").write_text("photos/00.png\nphotos/nope.png\n")
    code, _, err = _here(capsys, place, "pets", "missing.txt", "m.csv")
    assert code == 2 and "missing.txt line 2: photos/nope.png: file not found" in err, err
    code, _, err = _here(capsys, place, "pets", "clips", "none.csv")
    assert code == 2 and "no image files (.png, .jpg, .jpeg, .webp) found" in err, err
