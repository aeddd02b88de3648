"""Sharded training (FSDP2 on gloo) with real processes: same losses as DDP and one process, half the
state per rank, sharded checkpoints that resume exactly and on another worker count, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from skylift.dist import DistInfo
from skylift.models import build_model
from skylift.spec import ModelSpec, load_spec
from skylift.train import sharded
from skylift.train.checkpoint import load
from skylift.train.fsdp import checkpoint_blocks, choose_strategy, ddp_bytes
from skylift.train.loop import fit
from skylift.train.run import RunDir
from tests.conftest import finish
from tests.conftest import skylift_process as _skylift
from tests.integration.task_texts import PROSE

pytestmark = pytest.mark.slow

TOL = 1e-5  # fp32: FSDP(2), DDP(2) and one process agree this closely (~1e-8 measured)


def _layers(dim: int = 32, repeat: int = 2) -> list[dict[str, Any]]:
    block = {"heads": 2, "mlp": "swiglu", "norm": "rms", "positions": "rope", "repeat": repeat}
    return [
        {"token_embedding": {"dim": dim}},
        {"decoder_block": block},
        {"norm": {"kind": "rms"}},
        {"lm_head": {"tie_embedding": True}},
    ]


def _spec(tmp: Path, name: str = "lm", dim: int = 32, **train: Any) -> Path:
    """A tiny language model on real prose: ~100 training blocks, ~10 optimizer steps per epoch."""
    corpus = tmp / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(PROSE * 12)
    spec = {
        "name": name,
        "task": "language_modeling",
        "data": {
            "train": str(corpus),
            "tokenizer": {"train": "bpe", "vocab_size": 300},
            "block_size": 32,
            "validation_split": 0.1,
        },
        "model": {"layers": _layers(dim)},
        "train": {
            "epochs": 2,
            "batch_size": 10,
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.1},
            "clip_grad_norm": 1.0,
            "threads": 1,
            "register_best": False,
            **train,
        },
        "distributed": {"workers": 2, "strategy": "fsdp"},
    }
    path = tmp / f"{name}-{dim}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _train(home: Path, *args: str) -> str:
    code, out, err = finish(_skylift(home, "train", *args), 400)
    assert code == 0, err
    return out


def _rows(home: Path, run: str) -> list[dict[str, Any]]:
    text = (home / "runs" / run / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def _best(home: Path, run: str) -> dict[str, torch.Tensor]:
    model: dict[str, torch.Tensor] = load(home / "runs" / run / "checkpoints" / "best.pt")["model"]
    return model


def _close(a: list[dict[str, Any]], b: list[dict[str, Any]], tol: float = TOL) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=tol) and x["val_loss"] == pytest.approx(
            y["val_loss"], abs=tol
        )


def _state_mb(row: dict[str, Any]) -> list[float]:
    return [r["params_mb"] + r["grads_mb"] + r["optimizer_mb"] for r in row["memory"]]


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def _wait(proc: subprocess.Popen[str], done: Any, timeout: float = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if done():
            return
        time.sleep(0.02)
    raise AssertionError(f"the run did not get there (exit code {proc.poll()})")


def _epochs_done(home: Path, run: str, n: int) -> Any:
    path = home / "runs" / run / "metrics.jsonl"
    return lambda: path.exists() and len(path.read_text().splitlines()) >= n


def test_fsdp_ddp_and_one_process_agree_and_fsdp_halves_each_ranks_state(home: Path, tmp_path: Path) -> None:
    spec = str(_spec(tmp_path))
    # auto with a tiny budget: DDP "does not fit", so auto picks FSDP, says why and records it
    out = _train(
        home, spec, "--set", "distributed.strategy=auto", "--set", "distributed.memory_budget_gb=0.0001",
        "--run-id", "fsdp",
    )  # fmt: skip
    assert "strategy auto: fsdp (DDP needs ~" in out and "2 transformer blocks" in out, out
    placement = json.loads((home / "runs" / "fsdp" / "placement.json").read_text())
    assert placement["strategy"] == "fsdp" and placement["strategy_reason"].startswith("strategy auto: fsdp")
    _train(home, spec, "--set", "distributed.strategy=ddp", "--run-id", "ddp")
    _train(home, spec, "--workers", "1", "--run-id", "one")
    fsdp, ddp, one = (_rows(home, r) for r in ("fsdp", "ddp", "one"))
    assert len(fsdp) == 2  # 2 epochs of >= 10 optimizer steps: 20+ steps compared
    _close(fsdp, ddp)
    _close(fsdp, one)
    for key, tensor in _best(home, "one").items():  # consolidated best.pt: a plain state dict
        torch.testing.assert_close(_best(home, "fsdp")[key], tensor, atol=TOL, rtol=0)
        torch.testing.assert_close(_best(home, "ddp")[key], tensor, atol=TOL, rtol=0)
    summary = json.loads((home / "runs" / "fsdp" / "summary.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["workers"] == 2
    # parameters + gradients + optimizer state per rank: FSDP holds about half of DDP's
    for f, d in zip(_state_mb(fsdp[-1]), _state_mb(ddp[-1]), strict=True):
        assert f == pytest.approx(d / 2, rel=0.15), (f, d)
    assert all(r["peak_mb"] > 0 for r in fsdp[-1]["memory"]) and fsdp[-1]["peak_mb"] > 0


def test_a_killed_rank_restarts_exactly_and_sharded_checkpoints_reshard_2_to_1_and_1_to_2(
    home: Path, tmp_path: Path
) -> None:
    spec = str(_spec(tmp_path, epochs=5, checkpoint={"every_steps": 3}))
    _train(home, spec, "--run-id", "calm")
    calm = _rows(home, "calm")

    # kill -9 of one rank mid-run: the elastic agent restarts both from the sharded last checkpoint
    proc = _skylift(home, "train", spec, "--run-id", "kill")
    _wait(proc, _epochs_done(home, "kill", 1))
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    code, _, err = finish(proc, 400)
    assert code == 0 and "restarting the workers from the last checkpoint" in err, err
    kill = _rows(home, "kill")
    assert [r["epoch"] for r in kill] == [1, 2, 3, 4, 5]  # each epoch exactly once
    assert [(r["loss"], r["val_loss"]) for r in kill] == [
        (r["loss"], r["val_loss"]) for r in calm
    ]  # bit-exact
    best = _best(home, "calm")
    assert all(torch.equal(t, best[k]) for k, t in _best(home, "kill").items())

    # the whole job killed, then resumed on another worker count: the checkpoint is resharded
    for run, first, then in (("two-to-one", "2", "1"), ("one-to-two", "1", "2")):
        proc = _skylift(home, "train", spec, "--workers", first, "--run-id", run)
        _wait(proc, _epochs_done(home, run, 2))
        for pid in [*_children(proc.pid), proc.pid]:  # the workers and their launcher, as a lost machine
            os.kill(pid, signal.SIGKILL)
        proc.communicate()
        done = len(_rows(home, run))
        assert 2 <= done < 5, "the run must be cut mid-way"
        out = _train(home, "--resume", run, "--workers", then)
        assert f"was started with {first}" in out
        rows = _rows(home, run)
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
        assert [len(r["memory"]) for r in rows][-1] == int(then)
        _close(rows, calm, tol=1e-4)  # batches split differently over ranks: equal up to rounding


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    script = f"""
import torch
from pathlib import Path
from skylift.dist import DistInfo
from skylift.train import sharded
net = torch.nn.Linear(1500, 1500)
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
net(torch.ones(1, 1500)).sum().backward()
opt.step()
for i in range(10**6):
    with torch.no_grad():
        net.weight.fill_(i)
    sharded.save(Path({str(folder)!r}), "last", net, opt, {{"i": i}}, DistInfo())
"""
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
        _wait(proc, lambda: (folder / "last.json").exists(), timeout=120)
        # kill while a save is half written: its temp folder exists, the pointer names the one before
        _wait(proc, lambda: any(folder.glob(".last-*.tmp/*.distcp")), timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if any(folder.glob(".last-*.tmp")):
            break
    else:
        pytest.fail("never caught a save in progress")
    path = sharded.latest(folder, "last")
    assert path is not None and not path.name.startswith(".")
    i = sharded.read_extras(path)["i"]
    net = torch.nn.Linear(1500, 1500)
    sharded.load(path, net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), DistInfo())
    assert torch.equal(net.weight, torch.full_like(net.weight, float(i)))
    RunDir(tmp_path / "run").remove_partial_writes()  # what reopening the run does
    assert not any(folder.glob(".*.tmp")) and sharded.latest(folder, "last") == path


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    spec = ModelSpec(layers=_layers(repeat=3))
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        net = build_model(spec, (16,), 300, vocab_size=300)
        for m in net.modules():  # dropout on, so recomputation must replay the same masks
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.2
        if recompute:
            assert checkpoint_blocks(net) == 3
        torch.manual_seed(1)
        x = torch.randint(0, 300, (4, 16))
        loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, 300), x.reshape(-1))
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert grads[0][0] == grads[1][0]
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_activation_checkpointing_trains_to_the_same_losses(home: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, epochs=1)
    rows = []
    for ac in ("false", "true"):
        s = load_spec(spec, [f"train.activation_checkpointing={ac}", "distributed.workers=1"])
        rows.append(fit(s, home=home, run_id=f"ac-{ac}").history)
    _close(rows[0], rows[1], tol=1e-6)


def test_strategy_auto_is_a_decision_on_memory() -> None:
    need = ddp_bytes(10_000_000, "adamw", 0.0, activations=1e6)
    assert need["optimizer"] == 8e7 and sum(need.values()) == 1.61e8
    assert choose_strategy(need, 2, budget=2e8, blocks=4)[0] == "ddp"
    strategy, why = choose_strategy(need, 2, budget=1e8, blocks=4)
    assert strategy == "fsdp" and "4 transformer blocks" in why and "~77 MB" in why  # sharded estimate
    assert choose_strategy(need, 2, budget=1e8, blocks=0)[1].endswith("no repeatable block)")
    assert choose_strategy(need, 1, budget=1.0, blocks=4)[0] == "ddp"  # one worker: nothing to shard
    assert ddp_bytes(10, "sgd", 0.0, 0)["optimizer"] == 0 and ddp_bytes(10, "sgd", 0.9, 0)["optimizer"] == 40


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("train.precision=bf16",), "train.precision bf16: this CPU has no fast bf16 kernels"),
        (("train.precision=fp61",), "train.precision: input should be 'fp32', 'bf16' or 'fp16'"),
        (("distributed.strategy=fdsp",), "distributed.strategy: input should be 'ddp', 'fsdp' or 'auto'"),
    ],
)
def test_bad_precision_or_strategy_is_one_line_exit_2_and_writes_nothing(
    home: Path, tmp_path: Path, sets: tuple[str, ...], message: str
) -> None:
    from skylift.train.precision import FAST_CPU_FLAGS, cpu_flags

    if "bf16" in sets[0] and cpu_flags() & set(FAST_CPU_FLAGS["bf16"]):
        pytest.skip("this CPU computes bf16 fast: nothing to refuse")
    args = [x for s in sets for x in ("--set", s)]
    code, out, err = finish(_skylift(home, "train", str(_spec(tmp_path)), *args, "--run-id", "bad"), 120)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    assert not (home / "runs").exists()


def test_fsdp_on_a_model_without_blocks_wraps_the_root_and_says_so(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "mlp.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "mlp",
                "data": {"train": "builtin:digits28"},
                "model": {
                    "layers": [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10}}]
                },
                "train": {"epochs": 1, "threads": 1, "register_best": False},
                "distributed": {"workers": 2, "strategy": "fsdp"},
            }
        )
    )
    out = _train(home, str(spec), "--run-id", "root")
    assert (
        "strategy fsdp: the model has no repeatable block (decoder_block), so FSDP wraps the root only" in out
    )
    assert (home / "runs" / "root" / "checkpoints" / "best.pt").is_file()
    assert json.loads((home / "runs" / "root" / "summary.json").read_text())["strategy"] == "fsdp"


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_a_checkpoint_from_another_model_is_refused_naming_the_mismatch(
    home: Path, tmp_path: Path, strategy: str
) -> None:
    sets = ("--set", f"distributed.strategy={strategy}", "--set", "train.epochs=1", "--workers", "1")
    for dim in (32, 48):
        _train(home, str(_spec(tmp_path, dim=dim)), *sets, "--run-id", f"d{dim}")
    run, other = home / "runs" / "d32", home / "runs" / "d48"
    (run / "summary.json").unlink()  # unfinished again: a resume reads its last checkpoint
    for name in ("last.json", "last.pt"):
        (run / "checkpoints" / name).unlink(missing_ok=True)
    for src in other.joinpath("checkpoints").glob("last*"):  # another model's last checkpoint
        if src.is_dir():
            (run / "checkpoints" / src.name).mkdir()
            for f in src.iterdir():
                (run / "checkpoints" / src.name / f.name).write_bytes(f.read_bytes())
        else:
            (run / "checkpoints" / src.name).write_bytes(src.read_bytes())
    before = _snapshot(run)
    code, _, err = finish(_skylift(home, "train", "--resume", "d32"), 120)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (
        "was written by another model: token_embedding_0.weight is [300, 48] there, [300, 32] in this model"
        in err
    )
    assert _snapshot(run) == before


def test_forced_16_bit_precision_trains_close_to_fp32(home: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, epochs=1)
    fp32 = fit(load_spec(spec, ["distributed.workers=1"]), home=home, run_id="fp32").history
    # fp16 under FSDP: 16-bit gathered parameters, fp32 gradient reduction, the sharded scaler
    _train(
        home,
        str(spec),
        "--set",
        "train.precision=fp16",
        "--set",
        "train.force_precision=true",
        "--run-id",
        "fp16",
    )
    bf16 = load_spec(spec, ["distributed.workers=1", "train.precision=bf16", "train.force_precision=true"])
    for rows in (_rows(home, "fp16"), fit(bf16, home=home, run_id="bf16").history):
        _close(rows, fp32, tol=0.05)
        assert rows[0]["loss"] != fp32[0]["loss"]  # it did compute in 16 bits
