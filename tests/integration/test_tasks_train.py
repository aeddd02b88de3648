"""Training each task end to end: text classification, regression, language modelling; 1 and 2
workers, exact resume, the registry round trip with and without encryption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skylift.registry import Registry
from skylift.security import MasterKey
from skylift.spec import parse_spec
from skylift.tasks import TASKS
from skylift.train import fit
from skylift.train.checkpoint import load
from skylift.train.launch import Placement, launch
from tests.conftest import finish
from tests.integration.task_texts import PROSE, TEXTS, text_classifier

LM = {
    "name": "tiny-lm",
    "task": "language_modeling",
    "data": {"tokenizer": {"train": "bpe", "vocab_size": 300}, "block_size": 16, "validation_split": 0.1},
    "model": {
        "layers": [
            {"token_embedding": {"dim": 32}},
            {"decoder_block": {"heads": 2, "mlp": "swiglu", "norm": "rms", "positions": "rope", "repeat": 2}},
            {"norm": {"kind": "rms"}},
            {"lm_head": {"tie_embedding": True}},
        ]
    },
    "train": {
        "epochs": 3,
        "batch_size": 8,
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.1},
        "schedule": {"warmup_steps": 5, "decay": "cosine"},
        "clip_grad_norm": 1.0,
        "threads": 1,
    },
    "distributed": {"workers": 1},
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):  # four documents, a few KB in all
        (folder / f"part{i}.txt").write_text(PROSE * (i + 1))
    return folder


def _lm(corpus: Path, **train: object) -> dict[str, object]:
    spec = json.loads(json.dumps(LM))
    spec["data"]["train"] = str(corpus)
    spec["train"].update(train)
    return spec


def test_a_language_model_trains_reports_its_metrics_and_samples(home: Path, corpus: Path) -> None:
    result = fit(parse_spec(_lm(corpus)), home=home, run_id="lm")
    rows = result.history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    for r in rows:
        assert r["val_perplexity"] == pytest.approx(np.exp(r["val_loss"]), rel=1e-9)
        assert 0 < r["val_bits_per_byte"] < 8 and r["tokens_per_s"] == pytest.approx(
            r["samples_per_s"] * 16, rel=1e-2
        )
    samples = [json.loads(line) for line in (home / "runs" / "lm" / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["epoch"] for s in samples}) == [1, 2, 3] and all(s["prompt"] for s in samples)
    info = Registry(home).info(result.summary["registered"])
    assert info["task"] == "language_modeling" and info["signature"]["kind"] == "generator"
    assert info["data"]["vocab_size"] <= 300 and "tokenizer.json" in info["files"]
    # the token file was made once, under SKYLIFT_HOME/cache, and a second run reuses it
    cached = list((home / "cache" / "tokens").glob("*.tokens"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    fit(parse_spec(_lm(corpus, epochs=1)), home=home, run_id="again")
    assert cached[0].stat().st_mtime_ns == before


def test_the_registered_language_model_reloads_with_its_tokenizer_encrypted_or_not(
    home: Path, corpus: Path
) -> None:
    key = MasterKey.generate()
    result = fit(parse_spec(_lm(corpus, epochs=1)), home=home, run_id="lm", master_key=key)
    ref = result.summary["registered"]
    folder = home / "registry" / "tiny-lm" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MANIFEST.json",
        "model.json",
        "model.safetensors.enc",
        "tokenizer.json.enc",
    ]
    assert b"<eos>" not in (folder / "tokenizer.json.enc").read_bytes()  # sealed, not merely stored
    loaded = Registry(home, key).load(ref)
    best = load(home / "runs" / "lm" / "checkpoints" / "best.pt")
    assert loaded.tokenizer == best["meta"]["tokenizer"]
    ids = torch.randint(0, loaded.data["vocab_size"], (2, 16))
    model = TASKS["language_modeling"].build(
        parse_spec(_lm(corpus)).model, best["meta"], (16,), best["meta"]["n_outputs"]
    )
    model.load_state_dict(best["model"])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(ids), model(ids))
    plain = fit(parse_spec(_lm(corpus, epochs=1)), home=home, run_id="plain")
    assert Registry(home).load(plain.summary["registered"]).tokenizer == loaded.tokenizer


def test_two_workers_train_a_language_model_as_one_process_would(home: Path, corpus: Path) -> None:
    spec = parse_spec(_lm(corpus, epochs=2))
    one = launch(spec, Placement(workers=1), home=home, run_id="one")
    two = launch(spec, Placement(workers=2, max_restarts=0), home=home, run_id="two")
    assert one is not None and two is not None
    a = load(home / "runs" / "one" / "checkpoints" / "last.pt")["model"]
    b = load(home / "runs" / "two" / "checkpoints" / "last.pt")["model"]
    for k in a:  # the same global batches: gradients equal up to float summation order
        torch.testing.assert_close(a[k], b[k], rtol=2e-4, atol=2e-5, msg=k)
    for r1, r2 in zip(one.history, two.history, strict=True):
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], rel=1e-4)


def test_a_killed_language_model_run_resumes_to_identical_weights(home: Path, corpus: Path) -> None:
    spec_file = home.parent / "lm.yaml"
    import yaml

    spec_file.write_text(yaml.safe_dump(_lm(corpus, epochs=6)))
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    full = subprocess.run(
        [sys.executable, "-m", "skylift", "train", str(spec_file), "--run-id", "full"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr
    victim = subprocess.Popen(
        [sys.executable, "-m", "skylift", "train", str(spec_file), "--run-id", "cut"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = home / "runs" / "cut" / "metrics.jsonl"
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 2 <= len(metrics.read_text().splitlines()) < 6, "the run must be cut mid-way"
    resumed = subprocess.run(
        [sys.executable, "-m", "skylift", "train", "--resume", "cut"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    a = load(home / "runs" / "full" / "checkpoints" / "last.pt")["model"]
    b = load(home / "runs" / "cut" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_text_classifier_trains_on_a_csv_and_its_tokenizer_travels(home: Path, tmp_path: Path) -> None:
    rows = [(t, label) for label, texts in TEXTS.items() for t in texts] * 4
    csv = tmp_path / "texts.csv"
    csv.write_text("text,topic\n" + "".join(f"{t},{label}\n" for t, label in rows))
    raw = text_classifier(
        str(csv), epochs=15, batch_size=8, optimizer={"name": "adamw", "lr": 0.01}, threads=1
    )
    spec = parse_spec({**raw, "distributed": {"workers": 1}})
    result = fit(spec, home=home, run_id="text")
    assert result.summary["best"]["val_accuracy"] >= 0.9
    loaded = Registry(home).load(result.summary["registered"])
    assert (
        loaded.classes == ["food", "weather"] and loaded.info["signature"]["inputs"][0]["datatype"] == "BYTES"
    )
    from skylift.data._tokenizer import TextTokenizer
    from skylift.tasks._text import encode

    ids = torch.from_numpy(
        encode(TextTokenizer.from_json(loaded.tokenizer or ""), ["hot soup and bread"], 12)
    )
    with torch.no_grad():
        assert loaded.classes[int(loaded.module(ids).argmax())] == "food"


def test_accumulating_k_batches_steps_as_one_k_times_bigger_batch(home: Path) -> None:
    base = {
        "name": "acc",
        "task": "regression",
        "data": {"train": "builtin:diabetes", "validation_split": 0.2},
        "model": {"layers": [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1}}]},
        "train": {
            "epochs": 2,
            "optimizer": {"name": "adam", "lr": 0.01},
            "threads": 1,
            "register_best": False,
        },
        "distributed": {"workers": 1},
    }
    big = json.loads(json.dumps(base))
    big["train"]["batch_size"] = 64
    small = json.loads(json.dumps(base))
    small["train"].update(batch_size=16, accumulate=4)
    a = fit(parse_spec(big), home=home, run_id="big")
    b = fit(parse_spec(small), home=home, run_id="small")
    wa = load(a.run_dir / "checkpoints" / "last.pt")["model"]
    wb = load(b.run_dir / "checkpoints" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)
    # the shuffle is per row, so the same rows meet in the same optimizer steps; one step each
    assert a.history[-1]["loss"] == pytest.approx(b.history[-1]["loss"], rel=1e-5)


def test_bad_text_input_is_one_line(home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text("text,topic\nhello there,a\nhi again,a\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: t\ndata: {{train: {csv}, text_column: text, label_column: topic, "
        "tokenizer: {train: bpe, vocab_size: 300}}\nmodel: {layers: [{token_embedding: {dim: 8}}, "
        "{pool: {}}, {dense: {units: 2}}]}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "train", str(spec)],
        env={**os.environ, "SKYLIFT_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(proc, 60)
    assert code == 2 and err == f"error: {csv}: label column 'topic' holds a single class 'a'\n"
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


def test_serve_refuses_a_text_model_on_the_onnx_runtime_in_one_line(home: Path, tmp_path: Path) -> None:
    csv = tmp_path / "texts.csv"
    csv.write_text(
        "text,topic\n" + "".join(f"{t},{label}\n" for label, texts in TEXTS.items() for t in texts)
    )
    spec = parse_spec({**text_classifier(str(csv), epochs=1, threads=1), "distributed": {"workers": 1}})
    ref = fit(spec, home=home, run_id="text").summary["registered"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "serve", ref, "--no-auth", "--port", "0", "--runtime", "onnx"],
        env={**os.environ, "SKYLIFT_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # finish() kills the whole group if it does not stop
    )
    code, _, err = finish(proc, 60)
    assert code == 2
    assert err == (
        f"error: {ref} is a text classifier: --runtime onnx serves classifiers and regressors of "
        "numeric features\n"
    )


class _StopAfter:
    """An observer that interrupts training after `steps` batches, as Ctrl-C would."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def start(self, *args: object) -> None: ...

    def epoch(self, row: object) -> None: ...

    def note(self, line: str) -> None: ...

    def step(self, samples: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_a_run_stopped_inside_an_epoch_resumes_from_its_mid_epoch_checkpoint_exactly(home: Path) -> None:
    from skylift.spec import load_spec
    from tests.conftest import EXAMPLE

    spec = load_spec(
        EXAMPLE,
        ["train.epochs=3", "train.threads=1", "train.checkpoint.every_steps=4", "distributed.workers=1"],
    )
    full = fit(spec, home=home, run_id="full")
    with pytest.raises(KeyboardInterrupt):
        # an epoch is 21 batches (1,295 rows of 64): stopped inside the 12th step of epoch 2
        fit(spec, home=home, run_id="cut", observer=_StopAfter(21 + 12))  # type: ignore[arg-type]
    state = load(home / "runs" / "cut" / "checkpoints" / "last.pt")
    assert state["position"]["epoch"] == 2 and state["position"]["group"] == 8  # saved every 4 steps
    resumed = fit(spec, home=home, run_id="cut")
    a = load(home / "runs" / "full" / "checkpoints" / "last.pt")
    b = load(home / "runs" / "cut" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]


@pytest.mark.parametrize("kind", ["regression", "text"])
def test_two_workers_match_one_for_regression_and_text_classification(
    home: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "regression":
        raw: dict[str, object] = {
            "name": "reg",
            "task": "regression",
            "data": {"train": "builtin:diabetes", "test_split": 0.2},
            "model": {"layers": [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1}}]},
        }
    else:
        csv = tmp_path / "texts.csv"
        rows = [(t, label) for label, texts in TEXTS.items() for t in texts] * 3
        csv.write_text("text,topic\n" + "".join(f"{t},{label}\n" for t, label in rows))
        raw = {
            "name": "topics",
            "data": {
                "train": str(csv),
                "text_column": "text",
                "label_column": "topic",
                "tokenizer": {"train": "bpe", "vocab_size": 300},
                "block_size": 12,
            },
            "model": {
                "layers": [
                    {"token_embedding": {"dim": 16}},
                    {"pool": {"mode": "mean"}},
                    {"dense": {"units": 2}},
                ]
            },
        }
    raw["train"] = {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.01}, "threads": 1}
    spec = parse_spec(raw)
    one = launch(spec, Placement(workers=1), home=home, run_id="one")
    two = launch(spec, Placement(workers=2, max_restarts=0), home=home, run_id="two")
    assert one is not None and two is not None
    a = load(home / "runs" / "one" / "checkpoints" / "last.pt")["model"]
    b = load(home / "runs" / "two" / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=2e-4, atol=2e-5, msg=k)
    assert one.summary["best"] == pytest.approx(two.summary["best"], rel=1e-4)
