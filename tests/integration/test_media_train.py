"""Images and audio as files through `skylift train`, the registry, `evaluate` and `tune`.

The files are real PNG/JPEG/WebP images (scikit-learn's bundled handwritten digits, written out)
and real WAV/FLAC clips (tones in noise at several sample rates, mono and stereo), written by the
tests; training runs in real processes. The no-skew check: `evaluate` on the held-out folder,
decoding afresh with the model's recorded preprocessing, reproduces the test metrics training
reported, to the last bit.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from skylift.data._media_source import CACHE_FOLDER
from tests.conftest import finish, skylift_process

DIGITS = (0, 1, 7)


def _write_digits(root: Path, start: int, count: int) -> Path:
    """`count` handwritten digits per class from `start` on, as 16x16 grey images in class folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for cls in DIGITS:
        folder = root / f"digit{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(d.target == cls)[start : start + count]):
            img = Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).resize((16, 16))
            fmt = ("PNG", "JPEG")[k % 2]  # (WebP has no grey mode: it would read as colour)
            img.save(folder / f"{i}.{fmt.lower()}", fmt, **({"quality": 95} if fmt != "PNG" else {}))
    return root


def _write_tones(root: Path, count: int, seed: int) -> Path:
    """`count` clips per class: a tone in noise, its pitch band the class; rates, channels, formats mixed."""
    rng = np.random.default_rng(seed)
    bands = {"low": (150, 300), "mid": (700, 1000), "high": (2200, 3500)}
    for cls, (lo, hi) in bands.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rate = (8000, 11025, 16000, 22050)[i % 4]
            t = np.arange(int(rate * rng.uniform(0.25, 0.8))) / rate
            wave = 0.4 * np.sin(2 * np.pi * rng.uniform(lo, hi) * t) + 0.05 * rng.standard_normal(t.size)
            if i % 3 == 0:
                wave = np.stack([wave, 0.5 * wave], 1)  # stereo: averaged to mono
            fmt, subtype = (("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("WAV", "FLOAT"))[i % 3]
            sf.write(root / cls / f"{i}.{fmt.lower()}", wave.astype(np.float32), rate, subtype, format=fmt)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("digits")
    return _write_digits(base / "train", 0, 36), _write_digits(base / "test", 100, 10)


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tones")
    return _write_tones(base / "train", 16, 0), _write_tones(base / "test", 6, 1)


IMAGE_MODEL = [
    {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same"}},
    {"residual": {"filters": 8}},
    {"residual": {"filters": 16, "stride": 2}},
    {"global_avgpool": {}},
    {"dense": {"units": 3}},
]
AUDIO_MODEL = [
    {"conv1d": {"filters": 16, "kernel_size": 3, "padding": "same"}},
    {"residual": {"filters": 16, "kernel_size": 5, "stride": 2}},
    {"global_avgpool": {}},
    {"dense": {"units": 3}},
]


def _spec(
    folder: Path, name: str, data: dict[str, Any], layers: list[dict[str, Any]], epochs: int = 4
) -> Path:
    spec = {
        "name": name,
        "data": data,
        "model": {"layers": layers},
        "train": {"epochs": epochs, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}, "seed": 3},
        "distributed": {"workers": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _skylift(home: Path, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    return finish(skylift_process(home, *args), timeout)


def _model_json(home: Path, name: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((home / "registry" / name / "1" / "model.json").read_text())
    return info


def _evaluation_matches_training(home: Path, name: str, test: Path, summary: dict[str, Any]) -> None:
    """Evaluate in this process, decoding afresh (cache emptied): training's test metrics exactly."""
    from skylift.train import evaluate

    shutil.rmtree(home / "cache" / CACHE_FOLDER)
    result = evaluate(name, str(test), home=home)
    assert result.loss == summary["test"]["loss"]
    assert result.metrics["accuracy"] == summary["test"]["accuracy"]
    assert result.report is not None and result.report.confusion.tolist() == summary["test"]["confusion"]
    assert len(list((home / "cache" / CACHE_FOLDER).glob("*.media"))) == 1  # the evaluation cached it


def test_an_image_folder_trains_registers_its_preprocessing_and_evaluates_without_skew(
    home: Path, tmp_path: Path, digits: tuple[Path, Path]
) -> None:
    train, test = digits
    data = {
        "train": str(train),
        "test": str(test),
        "image": {
            "size": [16, 16],
            "mean": [0.2],
            "std": [0.3],
            "augment": {"crop_padding": 1, "rotate_degrees": 8},
        },
    }
    code, out, err = _skylift(
        home, "train", str(_spec(tmp_path, "digits", data, IMAGE_MODEL)), "--run-id", "img"
    )
    assert code == 0, err
    assert "registered model: digits:1" in out and "test (30 samples): accuracy=" in out
    summary = json.loads((home / "runs" / "img" / "summary.json").read_text())
    assert summary["input_shape"] == [1, 16, 16]  # channels taken from the (grey) files
    assert summary["test"]["accuracy"] > 0.6
    info = _model_json(home, "digits")
    assert info["data"]["input"] == "image"
    assert info["data"]["preprocessing"] == {
        "kind": "image",
        "size": [16, 16],
        "channels": 1,
        "mean": [0.2],
        "std": [0.3],
        "fit": "resize",
    }
    assert info["signature"]["inputs"][0]["shape"] == [-1, 1, 16, 16]
    assert len(list((home / "cache" / CACHE_FOLDER).glob("*.media"))) == 2  # train and test folders
    _evaluation_matches_training(home, "digits", test, summary)
    code, out, err = _skylift(home, "evaluate", "digits", "--data", str(test), "--output", str(tmp_path))
    assert code == 0, err
    assert "model digits:1 on " in out and "30 samples" in out and (tmp_path / "confusion.png").is_file()


def test_audio_clips_from_a_table_train_and_evaluate_without_skew(
    home: Path, tmp_path: Path, tones: tuple[Path, Path]
) -> None:
    train, test = tones

    def table(folder: Path, name: str) -> Path:
        rows = [f"{p.relative_to(folder)},{p.parent.name}" for p in sorted(folder.rglob("*.*"))]
        path = folder / name
        path.write_text("file,pitch\n" + "\n".join(rows) + "\n")
        return path

    data = {
        "train": str(table(train, "clips.csv")),
        "test": str(table(test, "held.csv")),
        "path_column": "file",
        "label_column": "pitch",
        "audio": {"sample_rate": 8000, "duration_s": 0.5, "n_mels": 20, "n_fft": 200, "hop_length": 80},
    }
    data["audio"]["augment"] = {"time_shift_s": 0.05, "freq_mask": 2, "time_mask": 5}
    code, _, err = _skylift(
        home, "train", str(_spec(tmp_path, "tones", data, AUDIO_MODEL)), "--run-id", "aud"
    )
    assert code == 0, err
    summary = json.loads((home / "runs" / "aud" / "summary.json").read_text())
    assert summary["input_shape"] == [20, 51] and summary["classes"] == ["high", "low", "mid"]
    info = _model_json(home, "tones")
    assert info["data"]["input"] == "audio" and info["data"]["path_column"] == "file"
    assert info["data"]["preprocessing"] == {
        "kind": "audio",
        "sample_rate": 8000,
        "duration_s": 0.5,
        "n_mels": 20,
        "n_fft": 200,
        "hop_length": 80,
    }
    # evaluate reads the table by the recorded path column; the label column is evaluate's to name
    from skylift.train import evaluate

    shutil.rmtree(home / "cache" / CACHE_FOLDER)
    result = evaluate("tones", str(test / "held.csv"), label_column="pitch", home=home)
    assert (result.loss, result.metrics["accuracy"]) == (summary["test"]["loss"], summary["test"]["accuracy"])
    assert result.n == 18
    _evaluation_matches_training(home, "tones", test, summary)  # the same clips as class folders


def test_the_same_spec_and_seed_train_the_same_model_and_a_crashed_run_resumes_exactly(
    home: Path, tmp_path: Path, digits: tuple[Path, Path]
) -> None:
    """Augmentation included: a row's random change is a function of (seed, epoch, row)."""
    import torch

    from skylift.spec import load_spec
    from skylift.train import fit
    from skylift.train.checkpoint import load

    train, _ = digits
    data = {
        "train": str(train),
        "image": {"size": 12, "augment": {"flip": True, "scale": 0.1, "crop_padding": 2}},
    }
    spec = load_spec(_spec(tmp_path, "same", data, IMAGE_MODEL, epochs=3), ["train.register_best=false"])
    fit(spec, home=home, run_id="a")
    fit(spec, home=home, run_id="b")

    class Crash(Exception):
        pass

    def crash_after_epoch_2(row: dict[str, Any]) -> bool:
        if row["epoch"] == 2:
            raise Crash  # after best.pt, before last.pt: last.pt holds epoch 1, as after a kill
        return False

    with pytest.raises(Crash):
        fit(spec, home=home, run_id="c", on_epoch=crash_after_epoch_2)
    fit(spec, home=home, run_id="c")  # resumes from last.pt at epoch 2
    weights = [load(home / "runs" / r / "checkpoints" / "last.pt")["model"] for r in "abc"]
    for name, a in weights[0].items():
        assert torch.equal(a, weights[1][name]) and torch.equal(a, weights[2][name]), name
    history = [json.loads((home / "runs" / r / "summary.json").read_text())["final"] for r in "abc"]
    assert history[0] == history[1] == history[2]


def _bomb(path: Path) -> None:
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path, "PNG")
    png = path.read_bytes()
    ihdr = bytearray(png[8:33])
    ihdr[8:16] = struct.pack(">II", 20000, 20000)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    path.write_bytes(png[:8] + bytes(ihdr) + png[33:])


def test_bad_media_input_is_one_line_and_exit_2(
    home: Path, tmp_path: Path, digits: tuple[Path, Path]
) -> None:
    train, _ = digits
    cases: list[tuple[str, dict[str, Any], str]] = []
    empty = Path(shutil.copytree(train, tmp_path / "empty"))
    (empty / "nothing-here").mkdir()
    cases.append(
        ("empty", {"train": str(empty), "image": {"size": 16}}, "class folder 'nothing-here' holds no")
    )
    bomb = Path(shutil.copytree(train, tmp_path / "bomb"))
    _bomb(bomb / "digit7" / "huge.png")
    cases.append(
        (
            "bomb",
            {"train": str(bomb), "image": {"size": 16}},
            "huge.png: the image is more than 40,000,000 pixels (a decompression bomb",
        )
    )
    mixed = Path(shutil.copytree(train, tmp_path / "mixed"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "digit1" / "colour.webp")
    cases.append(("mixed", {"train": str(mixed), "image": {"size": 16}}, "mixed channel counts"))
    cases.append(("small", {"train": str(train), "image": {"size": 2}}, "cannot run on input"))
    for name, data, message in cases:
        layers = [{"conv2d": {"filters": 4, "kernel_size": 3}}, *IMAGE_MODEL[3:]]
        code, out, err = _skylift(home, "train", str(_spec(tmp_path, name, data, layers)))
        assert code == 2, (name, out, err)
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)


def test_tune_trials_reuse_the_decoded_images(home: Path, tmp_path: Path, digits: tuple[Path, Path]) -> None:
    train, _ = digits
    data = {"train": str(train), "image": {"size": 16}}
    spec = _spec(tmp_path, "tuned", data, IMAGE_MODEL, epochs=1)
    code, _, err = _skylift(home, "train", str(spec), "--set", "train.register_best=false")
    assert code == 0, err
    (entry,) = (home / "cache" / CACHE_FOLDER).glob("*.media")
    made = entry.stat().st_mtime_ns
    space = (
        "tune.space={data.image.augment.rotate_degrees: {uniform: [0, 10]}, "
        "train.optimizer.lr: {choice: [0.01, 0.003]}}"
    )
    code, out, err = _skylift(
        home, "tune", str(spec), "--trials", "2", "--parallel", "1", "--sampler", "random", "--set", space
    )
    assert code == 0, out + err
    assert "best trial" in out
    # every trial (and the study's own check) read the one entry; none decoded again
    assert [p.stat().st_mtime_ns for p in (home / "cache" / CACHE_FOLDER).glob("*.media")] == [made]
