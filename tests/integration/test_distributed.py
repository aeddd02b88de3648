"""Data-parallel training with real processes: gloo, elastic agent, multi-node on loopback, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skylift.data import load_splits
from skylift.errors import DataError
from skylift.registry import Registry
from skylift.spec import load_spec
from skylift.train.checkpoint import load
from skylift.train.evaluation import evaluate_checkpoint_on
from skylift.train.launch import Placement, launch
from tests.conftest import EXAMPLE, finish, free_port
from tests.conftest import skylift_process as _skylift

SHORT = ("--set", "train.epochs=4", "--set", "train.threads=1")


def _finish(proc: subprocess.Popen[str], timeout: float = 400) -> tuple[int, str, str]:
    return finish(proc, timeout)


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for_epochs(run: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(_epochs(run)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"run did not reach epoch {n} (exit code {proc.poll()})")


def test_two_workers_train_and_only_rank0_writes(home: Path) -> None:
    code, out, err = _finish(
        _skylift(home, "train", str(EXAMPLE), *SHORT, "--workers", "2", "--run-id", "ddp")
    )
    assert code == 0 and err == "", err
    assert "training with 2 worker(s)" in out and "val_accuracy" in out
    assert "gradient sync: compression none; bucket_mb auto: " in out  # placement.json's, printed
    run = home / "runs" / "ddp"
    assert _epochs(run) == [1, 2, 3, 4]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["test"]["accuracy"] > 0.8
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    # Registration is rank 0's alone: one version, not one per rank.
    assert [(e.name, e.versions) for e in Registry(home).list()] == [("mnist-mlp", (1,))]


def test_two_worker_metrics_describe_the_checkpoint_they_saved(home: Path) -> None:
    """Validation under DDP scores the model rank 0 saves (batch-norm statistics averaged first)."""
    code, _, err = _finish(_skylift(home, "train", str(EXAMPLE), *SHORT, "--workers", "2", "--run-id", "bn"))
    assert code == 0, err
    run = home / "runs" / "bn"
    spec = load_spec(run / "spec.yaml")
    best = load(run / "checkpoints" / "best.pt")
    loss, rep = evaluate_checkpoint_on(best, load_splits(spec.data, seed=spec.train.seed).val)
    row = next(
        h for h in load(run / "checkpoints" / "last.pt")["history"] if h["epoch"] == best["meta"]["epoch"]
    )
    assert row["val_loss"] == pytest.approx(loss, rel=1e-9)
    assert row["val_accuracy"] == rep.accuracy


def test_two_nodes_over_loopback_match_one_node_with_two_workers(home: Path) -> None:
    port = free_port()
    common = ("train", str(EXAMPLE), *SHORT, "--workers", "1", "--nnodes", "2")
    rdzv = ("--rdzv-endpoint", f"127.0.0.1:{port}", "--run-id", "nodes")
    node0 = _skylift(home, *common, "--node-rank", "0", *rdzv)
    node1 = _skylift(home, *common, "--node-rank", "1", *rdzv)
    for proc in (node0, node1):
        code, _, err = _finish(proc)
        assert code == 0, err
    code, _, err = _finish(_skylift(home, "train", str(EXAMPLE), *SHORT, "--workers", "2", "--run-id", "one"))
    assert code == 0, err
    a = load(home / "runs" / "nodes" / "checkpoints" / "last.pt")
    b = load(home / "runs" / "one" / "checkpoints" / "last.pt")
    for key, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][key], rtol=1e-4, atol=1e-5, msg=key)
    assert [h["val_accuracy"] for h in a["history"]] == pytest.approx(
        [h["val_accuracy"] for h in b["history"]]
    )


def test_a_killed_worker_is_restarted_and_the_run_completes(home: Path) -> None:
    epochs = 12
    proc = _skylift(
        home, "train", str(EXAMPLE), "--set", f"train.epochs={epochs}", "--workers", "2", "--run-id", "kill"
    )
    run = home / "runs" / "kill"
    _wait_for_epochs(run, 2, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    before = _rows(run)
    code, _out, err = _finish(proc)
    assert code == 0, err
    assert err.splitlines() == [
        "a worker was killed by signal 9: restarting the workers from the last checkpoint (restart 1 of 3)"
    ]
    assert _epochs(run) == list(range(1, epochs + 1))  # each epoch exactly once
    assert _rows(run)[: len(before)] == before  # resumed: the epochs before the kill were not re-run
    undisturbed = _skylift(
        home, "train", str(EXAMPLE), "--set", f"train.epochs={epochs}", "--workers", "2", "--run-id", "calm"
    )
    assert _finish(undisturbed)[0] == 0
    accuracy = [
        json.loads((home / "runs" / r / "summary.json").read_text())["test"]["accuracy"]
        for r in ("kill", "calm")
    ]
    assert accuracy[0] == pytest.approx(accuracy[1], abs=0.03), accuracy


def _rows(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_exhausted_restarts_fail_in_one_line_and_keep_the_checkpoint(home: Path) -> None:
    proc = _skylift(
        home,
        "train",
        str(EXAMPLE),
        "--set",
        "train.epochs=40",
        "--set",
        "distributed.max_restarts=0",
        "--workers",
        "2",
        "--run-id",
        "dead",
    )
    run = home / "runs" / "dead"
    _wait_for_epochs(run, 1, proc)
    os.kill(_children(proc.pid)[0], signal.SIGKILL)
    code, _, err = _finish(proc)
    assert code == 1
    assert err.count("\n") == 1, err  # the workers' tracebacks and the agent's log are in logs/
    assert err.startswith("error: training failed: worker rank") and "killed by signal 9" in err
    assert "last good checkpoint" in err and f"worker logs: {run / 'logs'}" in err
    assert list((run / "logs").rglob("stderr.log")) and (run / "logs" / "agent.log").is_file()
    state = load(run / "checkpoints" / "last.pt")
    assert len(state["history"]) >= 1


HOOKS = """
from pathlib import Path
from skylift.errors import DataError

def crash_once(marker):
    def hook(row):
        if row["epoch"] == 2 and not Path(marker).exists():
            Path(marker).touch()
            raise RuntimeError("boom")
        return False
    return hook

def bad_input(arg):
    def hook(row):
        raise DataError("the hook found bad input")
    return hook
"""


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of epoch hooks that the spawned workers can import."""
    (tmp_path / "ddp_hooks.py").write_text(HOOKS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(tmp_path))
    return str(tmp_path / "crashed")


def test_an_exception_on_one_rank_restarts_the_workers_and_the_run_completes(home: Path, hooks: str) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=4", "train.threads=1"])
    result = launch(
        spec, Placement(workers=2), home=home, run_id="exc", epoch_hook=("ddp_hooks:crash_once", hooks)
    )
    assert Path(hooks).exists()  # rank 0 did raise at epoch 2
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in os.environ  # the launch's setting did not leak
    assert result is not None and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert _epochs(home / "runs" / "exc") == [1, 2, 3, 4]


def test_bad_input_met_inside_a_worker_is_raised_once_with_its_own_error(
    home: Path, hooks: str, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=4", "train.threads=1"])
    with pytest.raises(DataError, match=r"^the hook found bad input$"):
        launch(spec, Placement(workers=2), home=home, run_id="bad", epoch_hook=("ddp_hooks:bad_input", ""))
    assert capfd.readouterr().err == ""  # no restart notices: the restarts ended at once
    # Only the first attempt trained; the restarted workers saw the recorded error and exited at once.
    logs = home / "runs" / "bad" / "logs"
    assert len(list(logs.glob("*/attempt_*"))) == 4
    assert [p.parent.parent.name for p in logs.rglob("stderr.log")] == ["attempt_0", "attempt_0"]
    assert (
        "error (rank 0): the hook found bad input"
        in (next(logs.glob("*/attempt_0")) / "0" / "stderr.log").read_text()
    )


def test_a_run_id_taken_by_another_spec_fails_before_any_worker_starts(home: Path) -> None:
    code, _, err = _finish(
        _skylift(home, "train", str(EXAMPLE), *SHORT, "--workers", "2", "--run-id", "taken")
    )
    assert code == 0, err
    code, _, err = _finish(
        _skylift(
            home,
            "train",
            str(EXAMPLE),
            *SHORT,
            "--set",
            "train.seed=1",
            "--workers",
            "2",
            "--run-id",
            "taken",
        )
    )
    assert code == 2
    assert (
        err == "error: run taken already exists with a different spec: use a new --run-id, "
        "or `skylift train --resume taken` to continue it unchanged\n"
    )
    assert len(list((home / "runs" / "taken" / "logs").glob("taken_*"))) == 1  # the second started no agent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_worker(home: Path, sig: signal.Signals) -> None:
    proc = _skylift(
        home, "train", str(EXAMPLE), "--set", "train.epochs=40", "--workers", "2", "--run-id", "term"
    )
    _wait_for_epochs(home / "runs" / "term", 1, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches the whole process group
    else:
        proc.send_signal(sig)
    code, _, err = _finish(proc, timeout=60)
    assert code == 130
    assert err == "interrupted\n"
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "orphan workers"


def _same_weights(a: Path, b: Path) -> bool:
    ma, mb = load(a / "checkpoints" / "last.pt")["model"], load(b / "checkpoints" / "last.pt")["model"]
    return ma.keys() == mb.keys() and all(torch.equal(t, mb[k]) for k, t in ma.items())


def test_workers_auto_gives_the_same_model_on_an_idle_and_a_busy_machine(home: Path) -> None:
    args = ("train", str(EXAMPLE), "--set", "train.epochs=2", "--workers", "auto", "--run-id")
    code, idle, err = _finish(_skylift(home, *args, "idle"))
    assert code == 0, err
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:  # both cores busy: a timed decision would see other steps than on the idle machine
        code, busy, err = _finish(_skylift(home, *args, "busy"))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert code == 0, err
    for out in (idle, busy):
        assert "workers auto: 1 (a step is ~0.0645 GFLOP: split over 2 workers" in out
        assert "training with" not in out
    assert _same_weights(home / "runs" / "idle", home / "runs" / "busy")
    recorded = json.loads((home / "runs" / "busy" / "placement.json").read_text())
    assert recorded["workers"] == 1 and recorded["reason"].startswith("workers auto: 1 (a step is")


def test_resume_keeps_the_worker_count_the_run_started_with_and_a_finished_run_is_left_alone(
    home: Path,
) -> None:
    args = ("train", str(EXAMPLE), "--set", "train.epochs=3", "--set", "train.threads=1", "--workers", "2")
    run = home / "runs" / "cut"
    proc = _skylift(home, *args, "--run-id", "cut")
    _wait_for_epochs(run, 1, proc)
    for pid in [*_children(proc.pid), proc.pid]:  # the workers and their launcher, as a lost machine
        os.kill(pid, signal.SIGKILL)
    _finish(proc, timeout=30)
    assert len(_epochs(run)) < 3, "the run must be cut mid-way"

    code, out, err = _finish(_skylift(home, "train", "--resume", "cut"))
    assert code == 0, err
    assert "workers: 2, as run cut was started" in out and "training with 2 worker(s)" in out
    code, _, err = _finish(_skylift(home, *args, "--run-id", "calm"))
    assert code == 0, err
    assert _same_weights(run, home / "runs" / "calm")  # exactly as the uninterrupted run
    assert [r["val_loss"] for r in _rows(run)] == [r["val_loss"] for r in _rows(home / "runs" / "calm")]

    metrics = (run / "metrics.jsonl").read_bytes()
    code, out, err = _finish(_skylift(home, "train", "--resume", "cut", "--workers", "1"))
    assert (code, err) == (0, "")
    assert out.startswith("run cut is complete: nothing to train")
    assert "workers" not in out and "registered model: mnist-mlp:1" in out
    assert (run / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "0"), "--workers: must be a whole number >= 1, got '0'"),
        (("--nnodes", "2"), "multi-node training needs --rdzv-endpoint HOST:PORT"),
        (
            ("--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:1", "--node-rank", "2"),
            "--node-rank must be in [0, 1]",
        ),
        (
            ("--workers", "2", "--set", "train.batch_size=3"),
            "train.batch_size 3 gives fewer than 2 rows per worker",
        ),
        (
            ("--workers", "2", "--set", "distributed.sync_batchnorm=true"),
            "distributed.sync_batchnorm needs CUDA",
        ),
        (
            ("--set", "distributed.backend=nccl"),
            "distributed.backend nccl needs GPUs and this machine has none",
        ),
    ],
)
def test_bad_placement_is_one_line_exit_2(home: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = _finish(_skylift(home, "train", str(EXAMPLE), *args))
    assert code == 2
    assert message in err and err.count("\n") == 1, err
    assert not (home / "runs").exists()


def _evaluate_sharded(rank: int, world: int, init: str, out: str) -> None:
    """One rank of a real gloo group: score this rank's slice, all-reduce the sums."""
    import torch.distributed as dist

    from skylift.data._rows import TensorRows
    from skylift.dist import DistInfo
    from skylift.train import parallel
    from skylift.train.evaluation import eval_sums, sums_to_report

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    info = DistInfo(rank=rank, world_size=world)
    model, x, y = _eval_fixture()
    part = parallel.my_slice(len(y), info)
    sums = parallel.all_reduce_sum(eval_sums(model, TensorRows(x[part], y[part]), 7), info)
    if rank == 0:
        loss, rep = sums_to_report(sums, 7)
        Path(out).write_text(json.dumps({"loss": loss, "cm": rep.confusion.tolist()}))
    dist.destroy_process_group()


def _eval_fixture() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 7))
    x = torch.randn(101, 5)  # 101 rows: does not divide by the world size
    y = torch.randint(0, 6, (101,))  # class 6 never occurs
    return model, x, y


def test_validation_metrics_are_exact_across_ranks(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from skylift.train.evaluation import evaluate_tensors

    out = tmp_path / "two.json"
    init = f"file://{tmp_path / 'store'}"
    mp.start_processes(_evaluate_sharded, args=(2, init, str(out)), nprocs=2, start_method="spawn")
    two = json.loads(out.read_text())
    model, x, y = _eval_fixture()
    loss, rep = evaluate_tensors(model, x, y, 7)
    assert two["cm"] == rep.confusion.tolist()
    assert sum(map(sum, two["cm"])) == 101
    assert two["loss"] == pytest.approx(loss, rel=1e-12)
