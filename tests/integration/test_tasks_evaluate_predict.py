"""`evaluate` and `predict` follow the model's task: a regressor, a text classifier and a tiny language
model, each trained here in seconds on small files the tests write, through the CLI and the Python
API, from a run and from the registry (encrypted too), checked against a direct computation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch

from skylift.cli import main
from skylift.data._regression import read_targets
from skylift.data._tokenizer import TextTokenizer
from skylift.registry import Registry
from skylift.security import master_key_from_env
from skylift.spec import parse_spec
from skylift.tasks import TASKS
from skylift.tasks._text import encode
from skylift.train import evaluate, fit
from skylift.train.checkpoint import load
from tests.conftest import finish
from tests.integration.task_texts import PROSE, TEXTS, text_classifier

BLOCK = 16
_QUICK = {"optimizer": {"name": "adamw", "lr": 0.01}, "threads": 1, "batch_size": 8}


@dataclass(frozen=True)
class Trained:
    home: Path
    files: Path
    key_file: Path


def _fit(home: Path, spec: dict[str, object], run_id: str) -> None:
    fit(parse_spec({**spec, "distributed": {"workers": 1}}), home=home, run_id=run_id)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Three runs (registered as diabetes:1, topics:1, tiny-lm:1) and sealed copies of the text models."""
    root = tmp_path_factory.mktemp("tasks")
    home, files = root / "home", root / "files"
    files.mkdir()
    rows = [(t, label) for label, texts in TEXTS.items() for t in texts] * 3
    (files / "texts.csv").write_text("text,topic\n" + "".join(f"{t},{label}\n" for t, label in rows))
    (files / "corpus.txt").write_text(PROSE * 3)
    _fit(
        home,
        {
            "name": "diabetes",
            "task": "regression",
            "data": {"train": "builtin:diabetes", "validation_split": 0.2},
            "model": {"layers": [{"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1}}]},
            "train": {**_QUICK, "epochs": 2, "batch_size": 32},
        },
        "reg",
    )
    _fit(
        home,
        text_classifier(str(files / "texts.csv"), **{**_QUICK, "epochs": 6}),
        "text",
    )
    _fit(
        home,
        {
            "name": "tiny-lm",
            "task": "language_modeling",
            "data": {
                "train": str(files / "corpus.txt"),
                "tokenizer": {"train": "bpe", "vocab_size": 300},
                "block_size": BLOCK,
                "validation_split": 0.1,
            },
            "model": {
                "layers": [
                    {"token_embedding": {"dim": 16}},
                    {"decoder_block": {"heads": 2, "positions": "rope"}},
                    {"norm": {}},
                    {"lm_head": {"tie_embedding": True}},
                ]
            },
            "train": {**_QUICK, "epochs": 2},
        },
        "lm",
    )
    key_file = root / "master.key"
    assert main(["keys", "master-create", str(key_file)]) == 0
    key = master_key_from_env(key_file)
    for run, name in (("text", "topics-sealed"), ("lm", "tiny-lm-sealed")):
        best = load(home / "runs" / run / "checkpoints" / "best.pt")
        Registry(home, key).register(name, best["model"], best["meta"])
    return Trained(home, files, key_file)


@pytest.fixture
def ready(trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trained:
    """A private copy of the trained home (tests write outputs and caches into it)."""
    home = tmp_path / "home"
    shutil.copytree(trained.home, home)
    monkeypatch.setenv("SKYLIFT_HOME", str(home))
    monkeypatch.delenv("SKYLIFT_MASTER_KEY", raising=False)
    return Trained(home, trained.files, trained.key_file)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _tokens_of(home: Path, ref: str) -> tuple[torch.nn.Module, TextTokenizer]:
    loaded = Registry(home).load(ref)
    return loaded.module, TextTokenizer.from_json(loaded.tokenizer or "")


# --- regression ---------------------------------------------------------------------------------


def test_a_regressor_evaluates_with_its_metrics_and_a_scatter_plot(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = read_targets("builtin:diabetes", None)
    module = Registry(ready.home).load("diabetes:1").module
    with torch.no_grad():
        pred = module(torch.from_numpy(table.x)).double().numpy()
    e = pred - table.y
    result = evaluate("diabetes:1", "builtin:diabetes", home=ready.home)
    assert result.task == "regression" and result.report is None and result.n == len(table)
    assert result.metrics["mae"] == pytest.approx(np.abs(e).mean(), rel=1e-6)
    assert result.metrics["rmse"] == pytest.approx(np.sqrt((e**2).mean()), rel=1e-6)
    ss = ((table.y - table.y.mean()) ** 2).sum()
    assert result.metrics["r2"] == pytest.approx(1 - (e**2).sum() / ss, rel=1e-5)

    code, out, err = run(capsys, "evaluate", "reg", "--data", "builtin:diabetes", "--output", str(tmp_path))
    assert code == 0, err
    assert "442 samples" in out and "regression metrics" in out and "r2" in out
    assert (tmp_path / "scatter.png").stat().st_size > 0 and not (tmp_path / "confusion.png").exists()


def test_a_regressor_predicts_one_column_per_target_equal_to_the_model(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = read_targets("builtin:diabetes", None)
    names = table.features
    (tmp_path / "x.csv").write_text(
        ",".join(names) + "\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in table.x)
    )
    module = Registry(ready.home).load("diabetes:1").module
    with torch.no_grad():
        want = module(torch.from_numpy(table.x)).numpy()[:, 0]
    code, _, err = run(
        capsys,
        "predict",
        "diabetes:1",
        "--input",
        str(tmp_path / "x.csv"),
        "--output",
        str(tmp_path / "p.csv"),
    )
    assert code == 0, err
    got = pa_csv.read_csv(tmp_path / "p.csv")
    assert got.column_names == ["progression"]
    np.testing.assert_allclose(got.column("progression").to_numpy(), want, rtol=1e-6)
    (tmp_path / "xy.csv").write_text(  # the target column left in: skipped when named
        ",".join([*names, "progression"])
        + "\n"
        + "".join(
            ",".join(repr(float(v)) for v in [*row, t]) + "\n"
            for row, t in zip(table.x, table.y[:, 0], strict=True)
        )
    )
    args = (
        "--input",
        str(tmp_path / "xy.csv"),
        "--label-column",
        "progression",
        "--output",
        str(tmp_path / "q.csv"),
    )
    assert run(capsys, "predict", "diabetes:1", *args)[0] == 0
    assert (tmp_path / "q.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
    np.save(tmp_path / "x.npy", table.x)
    for suffix in ("npy", "npz", "jsonl", "parquet"):
        args = ("--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / f"p.{suffix}"))
        assert run(capsys, "predict", "diabetes:1", *args)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npz")["progression"], want)
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["progression"] for r in lines], want, rtol=1e-6)
    np.testing.assert_array_equal(
        pq.read_table(tmp_path / "p.parquet").column("progression").to_numpy(), want
    )


# --- text classification -----------------------------------------------------------------------


def test_a_text_classifier_evaluates_and_predicts_from_a_text_column(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = ready.files / "texts.csv"
    module, tok = _tokens_of(ready.home, "topics:1")
    texts = [t for ts in TEXTS.values() for t in ts]
    with torch.no_grad():
        logits = module(torch.from_numpy(encode(tok, texts, 12)))
    classes = ["food", "weather"]
    truth = [classes.index(label) for label, ts in TEXTS.items() for _ in ts]
    accuracy = float((logits.argmax(1).numpy() == np.array(truth)).mean())

    result = evaluate("topics:1", str(csv), label_column="topic", home=ready.home)
    assert result.classes == ("food", "weather") and result.report is not None and result.n == 36
    assert result.metrics["accuracy"] == pytest.approx(accuracy)  # the file holds each text 3 times
    code, out, err = run(
        capsys, "evaluate", "text", "--data", str(csv), "--label-column", "topic", "--output", str(tmp_path)
    )
    assert code == 0, err
    assert "36 samples" in out and (tmp_path / "confusion.png").is_file()

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    code, _, err = run(
        capsys, "predict", "topics:1", "--input", str(tmp_path / "in.jsonl"), "--text-column", "body",
        "--output", str(tmp_path / "p.csv"), "--proba",
    )  # fmt: skip
    assert code == 0, err
    got = pa_csv.read_csv(tmp_path / "p.csv")
    assert got.column("class").to_pylist() == [classes[i] for i in logits.argmax(1).tolist()]
    np.testing.assert_allclose(
        np.stack([got.column(f"proba_{c}").to_numpy() for c in classes], 1),
        torch.softmax(logits, 1),
        atol=1e-6,
    )


def test_an_encrypted_text_classifier_needs_its_key(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = str(ready.files / "texts.csv")
    out = tmp_path / "p.parquet"
    code, _, err = run(capsys, "predict", "topics-sealed:1", "--input", csv, "--output", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists()
    args = ("--input", csv, "--output", str(out), "--key-file", str(ready.key_file))
    assert run(capsys, "predict", "topics-sealed:1", *args)[0] == 0
    plain = tmp_path / "plain.parquet"
    assert run(capsys, "predict", "topics:1", "--input", csv, "--output", str(plain))[0] == 0
    assert pq.read_table(out).equals(pq.read_table(plain))
    code, text, err = run(
        capsys, "evaluate", "topics-sealed", "--data", csv, "--label-column", "topic",
        "--key-file", str(ready.key_file), "--output", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "model topics-sealed:1" in text


# --- language modelling --------------------------------------------------------------------------


def test_a_language_model_evaluates_on_a_corpus_with_the_tasks_metrics(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skylift.data._corpus import read_corpus
    from skylift.data._tokens import TokenBlocks, tokenize_corpus

    corpus = tmp_path / "held.txt"
    corpus.write_text(PROSE.upper() + PROSE)
    module, tok = _tokens_of(ready.home, "tiny-lm:1")
    tokens = tokenize_corpus(read_corpus(str(corpus)), tok, tmp_path / "cache")
    blocks = TokenBlocks(tokens, BLOCK)
    nats = 0.0
    with torch.no_grad():
        for i in range(len(blocks)):
            x, y = blocks.take(np.array([i]))
            out = module(torch.from_numpy(x))
            nats += float(
                torch.nn.functional.cross_entropy(out[0].double(), torch.from_numpy(y[0]), reduction="sum")
            )
    n_tokens = len(blocks) * BLOCK
    result = evaluate("tiny-lm:1", str(corpus), home=ready.home)
    assert result.task == "language_modeling" and (result.n, result.tokens) == (len(blocks), n_tokens)
    assert result.loss == pytest.approx(nats / n_tokens, rel=1e-6)  # float32 per token, float64 sums
    assert result.metrics["perplexity"] == pytest.approx(np.exp(result.loss), rel=1e-9)
    assert result.metrics["bits_per_byte"] == pytest.approx(
        result.loss / np.log(2) / tokens.bytes_per_token, rel=1e-9
    )
    assert list((ready.home / "cache" / "tokens").glob("*.tokens"))  # tokenized into the token cache

    code, out, err = run(capsys, "evaluate", "lm", "--data", str(corpus), "--output", str(tmp_path / "o"))
    assert code == 0, err
    assert f"{n_tokens:,} tokens" in out and "perplexity" in out and "bits_per_byte" in out
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def _direct_log_likelihood(module: torch.nn.Module, tok: TextTokenizer, text: str) -> tuple[float, int]:
    """-(the task's loss sum) over the text's windows of BLOCK tokens after an end-of-text token."""
    flat, _ = tok.encode_pieces([text])
    assert tok.eos_id is not None
    seq = torch.tensor([tok.eos_id, *flat.tolist()])
    total = 0.0
    lm = TASKS["language_modeling"]
    with torch.no_grad():
        for lo in range(0, len(flat), BLOCK):
            x, y = seq[lo : lo + BLOCK], seq[lo + 1 : lo + 1 + BLOCK]
            out = module(x[None, : len(y)]).double()
            total -= float(lm.loss_sum(out, y[None], None, None))  # type: ignore[arg-type]
    return total, len(flat)


def test_a_language_model_predicts_log_likelihoods_of_texts_and_lines(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module, tok = _tokens_of(ready.home, "tiny-lm:1")
    texts = ["We were sitting in my room.", "", "George said that he had fits of giddiness too. " * 3]
    (tmp_path / "lines.txt").write_text("\n".join(texts) + "\n")
    code, _, err = run(
        capsys,
        "predict",
        "tiny-lm",
        "--input",
        str(tmp_path / "lines.txt"),
        "--output",
        str(tmp_path / "p.jsonl"),
    )
    assert code == 0, err
    got = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    for row, text in zip(got, texts, strict=True):
        ll, n = _direct_log_likelihood(module, tok, text)
        assert row["tokens"] == n and row["log_likelihood"] == pytest.approx(ll, rel=1e-6, abs=1e-9)
    assert got[1] == {"log_likelihood": 0.0, "tokens": 0} and got[2]["tokens"] > BLOCK

    (tmp_path / "t.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts) if t))
    args = ("--input", str(tmp_path / "t.csv"), "--output", str(tmp_path / "p.parquet"))
    assert run(capsys, "predict", "tiny-lm-sealed", *args, "--key-file", str(ready.key_file))[0] == 0
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["log_likelihood", "tokens"]
    assert table.column("log_likelihood").to_pylist() == [got[0]["log_likelihood"], got[2]["log_likelihood"]]


def test_two_workers_score_texts_in_input_order(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"{w} was out of order, line {i}." for i, w in enumerate(PROSE.split()[:40])]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    base = ("--input", str(tmp_path / "lines.txt"), "--chunk-rows", "7", "--batch-rows", "3")
    assert run(capsys, "predict", "tiny-lm", *base, "--output", str(tmp_path / "one.csv"))[0] == 0
    two = ("--workers", "2", "--output", str(tmp_path / "two.csv"))
    proc = subprocess.Popen(  # a subprocess: workers need real stdio (capsys has no file descriptor)
        [sys.executable, "-m", "skylift", "predict", "tiny-lm", *base, *two],
        env={**os.environ, "SKYLIFT_HOME": str(ready.home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    code, _, err = finish(proc, 120)
    assert code == 0, err
    assert "Disabling parallelism" not in err  # no tokenizer pool was used before the fork
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


# --- bad input ------------------------------------------------------------------------------------


def _refused(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


def test_bad_inputs_are_one_line_and_write_nothing(
    ready: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    np.save(tmp_path / "x.npy", np.zeros((4, 10), dtype=np.float32))
    (tmp_path / "nums.csv").write_text("a,b\n1,2\n")
    (tmp_path / "t.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "bad.csv").write_bytes(b"text,topic\nfine,food\nbad \xff here,food\n")
    (tmp_path / "bad.txt").write_bytes(b"ok\nok\nnot \xfe ok\n")

    def predict(ref: str, src: str, *more: str) -> str:
        return _refused(
            capsys, out, "predict", ref, "--input", str(tmp_path / src), "--output", str(out), *more
        )

    assert "reads text" in predict("topics:1", "x.npy") and ".npy" in predict("topics:1", "x.npy")
    line = predict("topics:1", "nums.csv")
    assert "text column 'text' not found; columns present: a, b" in line and "--text-column" in line
    assert "numeric features" in predict("diabetes:1", "t.jsonl")
    assert "not UTF-8" in predict("topics:1", "bad.csv")
    assert "line 3" in predict("tiny-lm:1", "bad.txt")
    assert "--proba applies to classifiers" in predict("tiny-lm:1", "t.jsonl", "--proba")
    assert "--top-k applies to classifiers" in predict("diabetes:1", "x.npy", "--top-k", "1")
    npy = tmp_path / "out" / "p.npy"
    code, _, err = run(
        capsys, "predict", "tiny-lm:1", "--input", str(tmp_path / "t.jsonl"), "--output", str(npy)
    )
    assert code == 2 and ".npy" in err and not npy.exists()

    def evaluate_(ref: str, src: str, *more: str) -> str:
        code, _, err = run(
            capsys, "evaluate", ref, "--data", str(tmp_path / src), "--output", str(tmp_path), *more
        )
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "reads text" in evaluate_("text", "x.npy")
    assert "numeric features" in evaluate_("reg", "t.jsonl")
    assert "evaluate it on a .txt corpus" in evaluate_("lm", "bad.csv")
    assert "not UTF-8" in evaluate_("lm", "bad.txt")
    assert "not UTF-8" in evaluate_("text", "bad.csv", "--label-column", "topic")
    (tmp_path / "other.csv").write_text("text,topic\nhot soup,drinks\n")
    assert "'drinks' is not a class" in evaluate_("topics:1", "other.csv", "--label-column", "topic")
    assert not list(tmp_path.glob("*.png"))
