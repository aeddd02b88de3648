"""`skylift models ...`, `keys master-create` and `keys create` end to end on a really trained model."""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch

from skylift.cli import main
from skylift.registry import _manifest as manifest_mod
from skylift.registry import load_model
from tests.conftest import EXAMPLE
from tests.unit.registry.conftest import snapshot

RUN = "reg-run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding one finished 1-epoch run of the example spec (trained once for this module)."""
    from skylift.spec import load_spec
    from skylift.train import fit

    home = tmp_path_factory.mktemp("trained") / "home"
    fit(load_spec(EXAMPLE, ["train.epochs=1", "train.register_best=false"]), home=home, run_id=RUN)
    return home


@pytest.fixture
def cli_home(trained: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the trained home, exported as SKYLIFT_HOME, with no master key set."""
    shutil.copytree(trained, home)
    monkeypatch.delenv("SKYLIFT_MASTER_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_register_list_show_promote_verify_export_delete(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "models", "register", RUN)
    assert (
        code == 0
        and f"registered mnist-mlp:1 from {cli_home / 'runs' / RUN / 'checkpoints' / 'best.pt'}" in out
    )
    checkpoint = cli_home / "runs" / RUN / "checkpoints" / "last.pt"
    code, out, _ = run(capsys, "models", "register", str(checkpoint), "--name", "other")
    assert code == 0 and "registered other:1" in out
    assert run(capsys, "models", "register", RUN)[0] == 0  # mnist-mlp:2

    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "mnist-mlp" in out and "1, 2" in out and "other" in out

    code, out, _ = run(capsys, "models", "show", "mnist-mlp:1")
    assert code == 0
    for text in (
        "input FP32 [-1, 784]",
        "logits FP32 [-1, 10]",
        "val_accuracy",
        "test_accuracy",
        RUN,
        "spec_hash",
    ):
        assert text in out, text
    sha = __import__("hashlib").sha256((cli_home / "registry/mnist-mlp/1/model.safetensors").read_bytes())
    assert sha.hexdigest() in out
    code, out, _ = run(capsys, "models", "show", "other")
    assert code == 0 and "val_accuracy" not in out  # last.pt is not the run's best: no summary metrics

    code, out, _ = run(capsys, "models", "promote", "mnist-mlp:1", "production")
    assert (code, out.strip()) == (0, "mnist-mlp@production -> mnist-mlp:1")
    code, out, _ = run(capsys, "models", "promote", "mnist-mlp:2", "production")
    assert (code, out.strip()) == (0, "mnist-mlp@production -> mnist-mlp:2 (was mnist-mlp:1)")
    code, out, _ = run(capsys, "models", "verify", "mnist-mlp@production")
    assert (code, out.strip()) == (0, "OK mnist-mlp:2")

    # the registered model is the run's best checkpoint, loaded without unpickling anything
    from skylift.train.checkpoint import load
    from skylift.train.evaluation import model_from_checkpoint

    reference = model_from_checkpoint(load(cli_home / "runs" / RUN / "checkpoints" / "best.pt"))
    loaded = load_model("mnist-mlp@production")
    x = torch.rand(16, 784)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))

    onnx_path, ts_dir = tmp_path / "m.onnx", tmp_path / "ts"
    ts_dir.mkdir()
    code, out, _ = run(
        capsys, "models", "export", "mnist-mlp@production", "--format", "onnx", "--output", str(onnx_path)
    )
    assert code == 0 and f"wrote {onnx_path} (onnx" in out and onnx_path.stat().st_size > 900_000
    code, out, _ = run(
        capsys, "models", "export", "mnist-mlp:1", "--format", "torchscript", "--output", str(ts_dir)
    )
    assert code == 0 and (ts_dir / "mnist-mlp-1.pt").is_file()

    code, _, err = run(capsys, "models", "delete", "mnist-mlp:2")
    assert code == 2 and "target of alias production" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "models", "delete", "mnist-mlp:1")
    assert (code, out.strip()) == (0, "deleted mnist-mlp:1")
    code, out, _ = run(capsys, "models", "delete", "mnist-mlp:2", "--force")
    assert code == 0 and "dropped alias mnist-mlp@production" in out
    code, out, _ = run(capsys, "models", "list", "--home", str(cli_home))
    assert code == 0 and "mnist-mlp" not in out and "other" in out


def test_encrypted_models_through_the_cli(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file, other_key = tmp_path / "master.key", tmp_path / "other.key"
    code, out, _ = run(capsys, "keys", "master-create", str(key_file))
    assert code == 0 and "mode 0600" in out and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in out
    assert run(capsys, "keys", "master-create", str(other_key))[0] == 0

    code, out, _ = run(capsys, "models", "register", RUN, "--key-file", str(key_file))
    assert code == 0 and "registered mnist-mlp:1 (encrypted)" in out
    assert (cli_home / "registry/mnist-mlp/1/model.safetensors.enc").is_file()
    code, out, _ = run(capsys, "models", "show", "mnist-mlp")
    assert code == 0 and "yes (AES-256-GCM)" in out
    code, out, _ = run(capsys, "models", "verify", "mnist-mlp")  # no key: hashes only, and it says so
    assert code == 0 and out.startswith("hashes OK mnist-mlp:1; not authenticated: ")
    assert "needs the master key (--key-file or SKYLIFT_MASTER_KEY)" in out and out.count("\n") == 1
    assert run(capsys, "models", "verify", "mnist-mlp", "--key-file", str(key_file))[:2] == (
        0,
        "OK mnist-mlp:1\n",
    )
    code, out, _ = run(capsys, "models", "show", "mnist-mlp")
    assert code == 0 and "not authenticated (needs the master key)" in out
    code, out, _ = run(capsys, "models", "show", "mnist-mlp", "--key-file", str(key_file))
    assert code == 0 and "manifest authenticated with the master key" in out

    before = snapshot(cli_home)
    out_file = tmp_path / "m.onnx"
    code, _, err = run(capsys, "models", "export", "mnist-mlp", "--format", "onnx", "--output", str(out_file))
    # No key at all is a missing input (exit 2, as README's exit codes say); a wrong key is exit 1.
    assert code == 2 and "error: mnist-mlp:1 is encrypted: set SKYLIFT_MASTER_KEY" in err
    assert err.count("\n") == 1
    code, _, err = run(
        capsys,
        "models",
        "export",
        "mnist-mlp",
        "--format",
        "onnx",
        "--output",
        str(out_file),
        "--key-file",
        str(other_key),
    )
    assert code == 1 and "is encrypted with master key" in err and err.count("\n") == 1
    assert not out_file.exists() and snapshot(cli_home) == before

    monkeypatch.setenv("SKYLIFT_MASTER_KEY", key_file.read_text().strip())
    code, out, _ = run(capsys, "models", "export", "mnist-mlp", "--format", "onnx", "--output", str(out_file))
    assert code == 0 and out_file.is_file()
    monkeypatch.setenv("SKYLIFT_MASTER_KEY", base64.b64encode(b"short").decode())
    code, _, err = run(capsys, "models", "list")
    assert code == 2 and "SKYLIFT_MASTER_KEY decodes to 5 bytes, expected 32" in err


def test_verify_names_the_changed_file_and_exits_1(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "models", "register", RUN)[0] == 0
    weights = cli_home / "registry" / "mnist-mlp" / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40
    weights.write_bytes(bytes(data))
    (weights.parent / "stray.txt").write_text("x")
    before = snapshot(cli_home)
    code, out, _ = run(capsys, "models", "verify", "mnist-mlp:1")
    lines = out.strip().splitlines()
    assert code == 1 and lines[0] == "mnist-mlp:1: 2 problems"
    assert lines[1].strip().startswith("model.safetensors: SHA-256") and "stray.txt: extra file" in lines[2]
    code, _, err = run(
        capsys, "models", "export", "mnist-mlp:1", "--format", "onnx", "--output", str(cli_home / "x.onnx")
    )
    assert (
        code == 1
        and err.startswith("error: mnist-mlp:1: model.safetensors: SHA-256")
        and err.count("\n") == 1
    )
    assert snapshot(cli_home) == before


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["models", "show", "a:b:c"], "is malformed"),
        (["models", "show", "name@"], "empty alias"),
        (["models", "show", "../x"], "not allowed"),
        (["models", "show", "x:0"], "positive integer"),
        (["models", "show", "nope"], "no model named 'nope'"),
        (["models", "show", "mnist-mlp:7"], "mnist-mlp has no version 7"),
        (["models", "verify", "mnist-mlp@production"], "has no alias 'production'"),
        (["models", "promote", "mnist-mlp:1", "Bad Alias"], "alias 'Bad Alias' is not allowed"),
        (["models", "promote", "mnist-mlp:3", "production"], "has no version 3"),
        (["models", "delete", "mnist-mlp"], "delete needs an explicit version"),
        (["models", "delete", "mnist-mlp:9"], "has no version 9"),
        (["models", "register", "no-such-run"], "no checkpoint file, run folder or run id"),
        (["models", "register", RUN, "--name", "../evil"], "not allowed"),
        (["models", "export", "mnist-mlp", "--format", "tflite", "--output", "x"], "invalid choice"),
        (["models", "list", "--key-file", "/nonexistent/key"], "key file /nonexistent/key not found"),
        (["models"], "required"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli_home: Path, capsys: pytest.CaptureFixture[str], args: list[str], part: str
) -> None:
    assert run(capsys, "models", "register", RUN)[0] == 0
    before = snapshot(cli_home)
    try:
        code, _, err = run(capsys, *args)
    except SystemExit as exc:  # argparse errors exit from parse_args
        code, err = int(str(exc.code)), capsys.readouterr().err
    assert code == 2, err
    assert part in err and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(cli_home) == before


def test_master_create_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "k"
    path.write_text("precious\n")
    code, _, err = run(capsys, "keys", "master-create", str(path))
    assert code == 2 and "refusing to overwrite" in err and path.read_text() == "precious\n"


def _edit_metric(folder: Path) -> None:
    info = json.loads((folder / "model.json").read_text())
    info["metrics"]["val_accuracy"] = 0.9999
    (folder / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def test_show_verifies_what_it_shows(cli_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "models", "register", RUN)[0] == 0
    folder = cli_home / "registry" / "mnist-mlp" / "1"
    code, out, _ = run(capsys, "models", "show", "mnist-mlp")
    assert code == 0 and "every file's SHA-256 verified" in out and "0.9999" not in out
    _edit_metric(folder)  # a better-looking val_accuracy, by hand
    before = snapshot(cli_home)
    code, out, err = run(capsys, "models", "show", "mnist-mlp")
    assert code == 1 and out == "" and "0.9999" not in err
    assert err.startswith("error: mnist-mlp:1: model.json: ") and err.count("\n") == 1, err
    assert "run `skylift models verify mnist-mlp:1`" in err
    assert snapshot(cli_home) == before


def test_a_plain_version_swapped_in_for_an_encrypted_one_is_refused_with_the_key(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "master.key"
    assert run(capsys, "keys", "master-create", str(key_file))[0] == 0
    assert run(capsys, "models", "register", RUN, "--key-file", str(key_file))[0] == 0
    # The attacker registers a model of their own, plainly, as mnist-mlp:1 elsewhere, and puts its
    # whole folder (weights, model.json, MANIFEST.json: all consistent) in place of the encrypted one.
    attacker = tmp_path / "attacker"
    checkpoint = cli_home / "runs" / RUN / "checkpoints" / "last.pt"
    assert run(capsys, "models", "register", str(checkpoint), "--home", str(attacker))[0] == 0
    forged = attacker / "registry" / "mnist-mlp" / "1"
    _edit_metric(forged)
    (forged / "MANIFEST.json").unlink()
    blobs = {p.name: p.read_bytes() for p in forged.iterdir()}
    (forged / "MANIFEST.json").write_text(json.dumps(manifest_mod.build(blobs)))
    target = cli_home / "registry" / "mnist-mlp" / "1"
    shutil.rmtree(target)
    shutil.copytree(forged, target)
    before = snapshot(cli_home)
    refused = "mnist-mlp:1 is not encrypted although a master key is set (a plain version could have been"
    for command in (["show"], ["export", "--format", "onnx", "--output", str(tmp_path / "m.onnx")]):
        code, out, err = run(
            capsys, "models", command[0], "mnist-mlp", *command[1:], "--key-file", str(key_file)
        )
        assert code == 1 and err.startswith(f"error: {refused}") and err.count("\n") == 1, err
        assert "re-register it with the key, or use it without the key" in err and "0.9999" not in out
    code, out, _ = run(capsys, "models", "verify", "mnist-mlp", "--key-file", str(key_file))
    assert code == 1 and out.splitlines()[0] == "mnist-mlp:1: 1 problem"
    assert out.splitlines()[1].strip().startswith("not encrypted although a master key is set")
    code, _, err = run(
        capsys, "evaluate", "mnist-mlp:1", "--data", "builtin:digits28", "--key-file", str(key_file)
    )
    assert code == 1 and err.startswith(f"error: {refused}") and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists() and snapshot(cli_home) == before


@pytest.mark.parametrize("damage", ["missing manifest", "truncated weights"])
def test_a_damaged_version_through_verify_show_and_evaluate(
    cli_home: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    assert run(capsys, "models", "register", RUN)[0] == 0
    folder = cli_home / "registry" / "mnist-mlp" / "1"
    if damage == "missing manifest":
        (folder / "MANIFEST.json").unlink()
        line = f"MANIFEST.json is missing in {folder}"
    else:
        weights = folder / "model.safetensors"
        size = weights.stat().st_size
        weights.write_bytes(weights.read_bytes()[: size // 2])
        line = f"model.safetensors: {size // 2} bytes, the manifest says {size} (truncated or changed)"
    before = snapshot(cli_home)
    code, out, _ = run(capsys, "models", "verify", "mnist-mlp:1")
    assert (code, out.splitlines()) == (1, ["mnist-mlp:1: 1 problem", f"  {line}"]), out
    for args in (["models", "show", "mnist-mlp"], ["evaluate", "mnist-mlp:1", "--data", "builtin:digits28"]):
        code, out, err = run(capsys, *args)
        assert code == 1 and out == "", out
        assert err == f"error: mnist-mlp:1: {line}; run `skylift models verify mnist-mlp:1`\n", err
    assert snapshot(cli_home) == before


def test_keys_create_as_in_the_design_needs_no_name(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skylift.security.apikeys import KeyStore, keys_file

    monkeypatch.delenv("SKYLIFT_API_KEYS_FILE", raising=False)
    made = {}
    for _ in range(2):
        code, out, err = run(capsys, "keys", "create", "--scope", "predict")  # DESIGN.md section 1
        assert code == 0, err
        match = re.match(r"created API key '(key-[0-9a-f]{8})' \(scopes: predict\)", err)
        assert match and len(out.split()) == 1 and match[1] not in out, err
        made[match[1]] = out.strip()  # stdout holds the key alone
    assert len(made) == 2  # two generated names, distinct
    code, out, _ = run(capsys, "keys", "list")
    assert code == 0 and all(name in out for name in made)
    store = KeyStore(keys_file(home))
    assert {store.verify(key).name for key in made.values()} == set(made)


def test_export_never_overwrites_or_makes_folders_without_being_asked(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "models", "register", RUN)[0] == 0
    existing = tmp_path / "m.onnx"
    existing.write_text("precious\n")
    code, _, err = run(capsys, "models", "export", "mnist-mlp", "--format", "onnx", "--output", str(existing))
    assert code == 2 and err == f"error: {existing} already exists; pass --overwrite to replace it\n"
    assert existing.read_text() == "precious\n"
    # A folder as --output names the file NAME-VERSION.onnx: that one is protected the same way.
    (tmp_path / "mnist-mlp-1.onnx").write_text("precious\n")
    code, _, err = run(capsys, "models", "export", "mnist-mlp", "--format", "onnx", "--output", str(tmp_path))
    assert code == 2 and "mnist-mlp-1.onnx already exists; pass --overwrite" in err
    code, out, _ = run(
        capsys, "models", "export", "mnist-mlp", "--format", "onnx", "--output", str(existing), "--overwrite"
    )
    assert code == 0 and f"wrote {existing} (onnx" in out and existing.stat().st_size > 900_000

    typo = tmp_path / "exprots" / "deep" / "m.pt"  # a typo must not make folders
    for extra in ([], ["--overwrite"]):
        code, _, err = run(
            capsys, "models", "export", "mnist-mlp", "--format", "torchscript", "--output", str(typo), *extra
        )
        assert code == 2 and err.count("\n") == 1, err
        assert f"folder {typo.parent} does not exist; create it first (mkdir -p {typo.parent})" in err
        assert not (tmp_path / "exprots").exists()


def test_list_shows_metric_created_aliases_and_prune_dry_runs_first(
    cli_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(4):
        assert run(capsys, "models", "register", RUN)[0] == 0
    assert run(capsys, "models", "promote", "mnist-mlp:1", "production")[0] == 0
    val_loss = json.loads((cli_home / "runs" / RUN / "summary.json").read_text())["best"]["val_loss"]
    code, out, _ = run(capsys, "models", "list")
    (row,) = [line for line in out.splitlines() if "mnist-mlp" in line]
    assert code == 0 and "production -> 1" in row and f"val_loss={val_loss:.4f}" in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), row

    code, out, _ = run(capsys, "models", "list", "--name", "mnist-mlp", "--sort", "created")
    rows = [line.split("│") for line in out.splitlines() if re.match(r"^│ +\d", line)]
    assert code == 0 and [int(r[1]) for r in rows] == [4, 3, 2, 1], out
    assert "production" in rows[-1][4] and f"val_loss={val_loss:.4f}" in rows[0][3]

    before = snapshot(cli_home)
    code, out, _ = run(capsys, "models", "prune", "mnist-mlp", "--keep", "2")
    assert code == 0 and snapshot(cli_home) == before
    assert "would delete mnist-mlp:2" in out and "pass --yes to delete 1 version" in out, out
    assert "mnist-mlp:1" not in out.split("would delete")[1].split("\n")[0]
    code, out, _ = run(capsys, "models", "prune", "mnist-mlp", "--keep", "2", "--yes")
    assert code == 0 and "deleted mnist-mlp:2" in out
    code, out, _ = run(capsys, "models", "list", "--name", "mnist-mlp")
    assert [int(r.split("│")[1]) for r in out.splitlines() if re.match(r"^│ +\d", r)] == [1, 3, 4]

    for args, part in (
        (["--keep", "0"], "--keep: must be a whole number >= 1, got '0'"),
        (["--keep", "-2"], "--keep: must be a whole number >= 1, got '-2'"),
        (["--keep", "two"], "--keep: must be a whole number >= 1, got 'two'"),
        ([], "the following arguments are required: --keep"),
    ):
        with pytest.raises(SystemExit) as exc:
            run(capsys, "models", "prune", "mnist-mlp", *args)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and part in err and err.count("\n") == 1, err
    code, _, err = run(capsys, "models", "list", "--name", "mnist-mpl")
    assert code == 2 and "did you mean 'mnist-mlp'?" in err


# A few sentences of public-domain prose (Jerome K. Jerome, Three Men in a Boat, 1889).
PROSE = """There were four of us - George, and William Samuel Harris, and myself, and Montmorency.
We were sitting in my room, smoking, and talking about how bad we were - bad from a medical point
of view I mean, of course. We were all feeling seedy, and we were getting quite nervous about it.
"""


@pytest.fixture(scope="module")
def tasks_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with a registered regressor (builtin:diabetes) and a tiny language model, 1 epoch each."""
    from skylift.spec import parse_spec
    from skylift.train import fit

    root = tmp_path_factory.mktemp("tasks")
    home = root / "home"
    corpus = root / "corpus.txt"
    corpus.write_text(PROSE * 6)
    regression = {
        "name": "diabetes",
        "task": "regression",
        "data": {"train": "builtin:diabetes", "validation_split": 0.2},
        "model": {"layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 1}}]},
        "train": {"epochs": 1, "batch_size": 32, "threads": 1},
        "distributed": {"workers": 1},
    }
    lm = {
        "name": "tiny-lm",
        "task": "language_modeling",
        "data": {"train": str(corpus), "tokenizer": {"vocab_size": 280}, "block_size": 8},
        "model": {
            "layers": [{"token_embedding": {"dim": 16}}, {"decoder_block": {"heads": 2}}, {"lm_head": {}}]
        },
        "train": {"epochs": 1, "batch_size": 8, "threads": 1},
        "distributed": {"workers": 1},
    }
    for raw in (regression, lm):
        fit(parse_spec(raw), home=home, run_id=str(raw["name"]))
    return home


def test_show_and_list_name_the_task_signature_and_tokenizer(
    tasks_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKYLIFT_HOME", str(tasks_home))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("SKYLIFT_MASTER_KEY", raising=False)
    code, out, _ = run(capsys, "models", "list")
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert code == 0 and "regression" in rows["diabetes"] and "language_modeling" in rows["tiny-lm"], out
    code, out, _ = run(capsys, "models", "list", "--name", "tiny-lm")
    assert code == 0 and "language_modeling" in out

    code, out, _ = run(capsys, "models", "show", "diabetes")
    assert code == 0
    for text in ("regression", "regressor", "input FP32 [-1, 10]", "predictions FP32 [-1, 1]", "progression"):
        assert text in out, text
    assert "tokenizer" not in out and "val_mae" in out

    code, out, _ = run(capsys, "models", "show", "tiny-lm:1")
    info = json.loads((tasks_home / "registry" / "tiny-lm" / "1" / "model.json").read_text())
    manifest = json.loads((tasks_home / "registry" / "tiny-lm" / "1" / "MANIFEST.json").read_text())
    vocab = info["data"]["vocab_size"]
    assert code == 0
    for text in (
        "language_modeling",
        "generator",
        "input_ids INT64 [-1, -1]",
        f"logits FP32 [-1, -1, {vocab}]",
        f"vocab size │ {vocab}",
        "pad id     │ 0",
        "block size │ 8 tokens",
        "tokenizer.json (",
        manifest["files"]["tokenizer.json"]["sha256"],
        "val_perplexity",
    ):
        assert text in out, text


def test_export_refuses_a_language_model_and_writes_a_regressor(
    tasks_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKYLIFT_HOME", str(tasks_home))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for fmt in ("onnx", "torchscript"):
        code, out, err = run(capsys, "models", "export", "tiny-lm", "--format", fmt, "--output", str(out_dir))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("error: export of language models is not supported: serve them with")
    assert list(out_dir.iterdir()) == []
    code, out, _ = run(capsys, "models", "export", "diabetes", "--format", "onnx", "--output", str(out_dir))
    assert code == 0 and (out_dir / "diabetes-1.onnx").is_file(), out
