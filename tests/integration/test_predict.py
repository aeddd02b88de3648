"""`skylift predict` end to end: real workers, a killed run resumed, two nodes on loopback, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from tests.conftest import finish, free_port
from tests.unit.batch.conftest import features, reference, register_mlp

ROWS = 20000
# 200 chunks of 100 rows, 2 forward passes each: a run long enough to be killed half way.
SMALL = ("--chunk-rows", "100", "--batch-rows", "50")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A folder holding a home with the MLP registered (no training needed) and x.npy of 20,000 rows."""
    folder = tmp_path_factory.mktemp("predict")
    module = register_mlp(folder / "home")
    x = features(ROWS)
    x[ROWS - 1, 0] = 0.5  # a known value: one test turns it into NaN in a copy
    np.save(folder / "x.npy", x)
    return folder, module


@pytest.fixture(scope="module")
def whole(env: tuple[Path, nn.Module]) -> Path:
    """An uninterrupted two-worker run: the bytes every other run must reproduce."""
    folder, _ = env
    out = folder / "whole.npz"
    code, stdout, err = _finish(_skylift(folder, "--workers", "2", "--output", str(out), "--proba", *SMALL))
    assert code == 0, err
    assert f"predicted {ROWS:,} rows in" in stdout and "2 worker(s) x 1 node(s)" in stdout, stdout
    return out


def _skylift(folder: Path, *args: str, source: str = "x.npy") -> subprocess.Popen[str]:
    env = {**os.environ, "SKYLIFT_HOME": str(folder / "home"), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "skylift", "predict", "mnist-mlp", "--input", str(folder / source), *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    return finish(proc, timeout)


def _work_folder(out: Path) -> Path | None:
    found = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.predict-")]
    return found[0] if found else None


def _parts(out: Path) -> int:
    work = _work_folder(out)
    return len(list(work.glob("chunk-*.bin"))) if work else 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _wait_for_parts(out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _parts(out) >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"no {n} finished chunks (exit code {proc.poll()})")


def test_two_workers_equal_single_process_model_x(env: tuple[Path, nn.Module], whole: Path) -> None:
    folder, module = env
    classes, proba = reference(module, np.load(folder / "x.npy"))
    z = np.load(whole)
    np.testing.assert_array_equal(z["class"], classes)
    np.testing.assert_allclose(z["proba"], proba, rtol=0, atol=1e-6)
    assert _work_folder(whole) is None
    assert not [p for p in folder.iterdir() if p.name.startswith(".whole.npz")]


def test_a_killed_run_resumes_and_writes_identical_bytes(env: tuple[Path, nn.Module], whole: Path) -> None:
    folder, _ = env
    out = folder / "killed.npz"
    proc = _skylift(folder, "--workers", "2", "--output", str(out), "--proba", *SMALL)
    _wait_for_parts(out, 6, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # launcher and both workers, mid-run
    proc.communicate()
    done = _parts(out)
    assert 6 <= done < 200, f"{done} chunks finished before the kill"
    assert not out.exists()
    code, stdout, err = _finish(_skylift(folder, "--workers", "2", "--output", str(out), "--proba", *SMALL))
    assert code == 0, err
    assert f"resumed: {done} of 200 chunks were already done" in stdout, stdout
    assert out.read_bytes() == whole.read_bytes()
    assert _work_folder(out) is None


def test_a_killed_worker_is_restarted_and_the_run_completes(env: tuple[Path, nn.Module], whole: Path) -> None:
    folder, _ = env
    out = folder / "restarted.npz"
    proc = _skylift(folder, "--workers", "2", "--output", str(out), "--proba", *SMALL)
    _wait_for_parts(out, 6, proc)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    code, stdout, err = _finish(proc)
    assert code == 0, err
    assert "resumed:" in stdout  # the restarted workers skipped what was already done
    assert out.read_bytes() == whole.read_bytes()


def test_two_nodes_on_loopback(env: tuple[Path, nn.Module], monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the user's environment says, the workers must share the agent's store: with sharing
    # off, rank 0's worker hosts it and may take it away while another node still reads (a hang).
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    folder, module = env
    out = folder / "nodes.parquet"
    common = (
        "--workers",
        "1",
        "--nnodes",
        "2",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "--top-k",
        "3",
    )
    nodes = [
        _skylift(folder, "--output", str(out), *common, "--node-rank", str(rank), "--chunk-rows", "1000")
        for rank in (0, 1)
    ]
    (code0, out0, err0), (code1, out1, err1) = (_finish(p) for p in nodes)
    assert (code0, code1) == (0, 0), err0 + err1
    assert f"predicted {ROWS:,} rows" in out0 and "1 worker(s) x 2 node(s)" in out0, out0
    share0 = re.search(r"^node 0 computed ([\d,]+) rows$", out0, re.M)
    share1 = re.search(r"^done: node 1 computed ([\d,]+) rows \(node 0 writes the output\)$", out1, re.M)
    assert share0 and share1, out0 + out1
    rows0, rows1 = (int(m[1].replace(",", "")) for m in (share0, share1))
    assert rows1 > 0 and rows0 + rows1 == ROWS, (rows0, rows1)  # node 1 did its share of the work
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    classes, proba = reference(module, np.load(folder / "x.npy"))
    np.testing.assert_array_equal(table.column("class").to_numpy(), classes)
    np.testing.assert_array_equal(table.column("top1_class").to_numpy(), classes)
    np.testing.assert_allclose(table.column("top1_proba").to_numpy(), proba.max(1), rtol=0, atol=1e-6)


def test_workers_split_the_cores_between_their_torch_threads(
    env: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    """`skylift.predict` in a fresh interpreter (as a user's script runs it), two real workers."""
    folder, module = env
    x = np.load(folder / "x.npy")[:2000]
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, json, skylift\n"
        "r = skylift.predict('mnist-mlp', *sys.argv[1:3], workers=2, chunk_rows=100, home=sys.argv[3])\n"
        "print(json.dumps({'threads': r.threads, 'node_rows': r.node_rows, 'rows': r.computed_rows}))\n"
    )
    args = [str(tmp_path / "x.npy"), str(tmp_path / "p.npz"), str(folder / "home")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cores = len(os.sched_getaffinity(0))
    want = max(1, cores // 2)  # each worker's share of the cores (not torch's default: all of them)
    assert json.loads(done.stdout) == {"threads": [want, want], "node_rows": 2000, "rows": 2000}
    np.testing.assert_array_equal(np.load(tmp_path / "p.npz")["class"], reference(module, x)[0])


def test_readme_command_on_parquet_with_an_alias(env: tuple[Path, nn.Module]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skylift.registry import Registry

    folder, module = env
    Registry(folder / "home").promote("mnist-mlp", 1, "production")
    x = np.load(folder / "x.npy")[:3000]
    table = pa.table({"label": np.zeros(3000, dtype=np.int64), **{f"p{j}": x[:, j] for j in range(784)}})
    pq.write_table(table, folder / "big.parquet", row_group_size=1000)
    cmd = ("--output", str(folder / "preds.parquet"), "--workers", "2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylift",
            "predict",
            "mnist-mlp@production",
            "--input",
            str(folder / "big.parquet"),
            *cmd,
        ],
        env={**os.environ, "SKYLIFT_HOME": str(folder / "home")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, out, err = _finish(proc)
    assert code == 0, err
    assert "predicted 3,000 rows" in out
    classes, _ = reference(module, x)
    assert pq.read_table(folder / "preds.parquet").column("class").to_pylist() == classes.tolist()


def test_bad_rows_in_one_worker_stop_every_worker_in_one_line(env: tuple[Path, nn.Module]) -> None:
    folder, _ = env
    x = np.load(folder / "x.npy")
    x[ROWS - 1, 0] = np.nan  # the last chunk: the second worker's
    np.save(folder / "nan.npy", x)
    out = folder / "nan.csv"
    code, _, err = _finish(_skylift(folder, "--workers", "2", "--output", str(out), *SMALL, source="nan.npy"))
    assert code == 2
    assert err.strip() == f"error: {folder / 'nan.npy'}: row {ROWS - 1} contains NaN", err
    assert not out.exists() and _work_folder(out) is None
