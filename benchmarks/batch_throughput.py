"""Batch inference rows/s and peak memory: `skylift.batch.predict` vs an in-memory torch loop, same run.

Workload: the MNIST MLP of examples/mnist_mlp.yaml (784-256-128-10, eval mode) over N rows of
784 float32 features (MNIST-shaped: the built-in digits at 28x28, shifted by up to 2 pixels),
written to a temp folder as .npy (~3.1 GB at N=1,000,000) and as .parquet (row groups of
65,536 rows, pyarrow's default snappy + dictionary), deleted afterwards.

Baseline: one process, torch's default threads, `torch.no_grad()` over the same rows held in
memory as one tensor, batches of 4096, measured right before each predict run (the machine is
shared, so each ratio compares neighbours in time). Ceiling: model FLOPs per row / measured
matmul FLOP/s.

Each predict run is a fresh process (`python -c`, torch imported before the clock starts, like
the baseline), timed for the whole `predict` call (checks, model load, workers' start,
prediction, writing the output) and for the prediction alone, from the first chunk claimed to
the last result recorded ("while predicting"). Its peak memory is the sum over its process tree
(launcher + workers): RSS sampled every 20 ms (counts pages shared after fork in every process:
an upper bound) and PSS sampled every second (shared pages split between the processes mapping
them; reading it walks page tables, which sampled faster steals a core from the run). Also
timed: the whole `skylift predict` CLI command, interpreter start included.

Run: `python benchmarks/batch_throughput.py [--rows 1000000] [--repeat 2] [--folder /big/disk]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp.yaml"
FEATURES = 784
BLOCK = 65536  # rows generated and written at a time: the benchmark itself stays small too


def register_model(home: Path) -> None:
    import torch

    from skylift.models import build_model
    from skylift.registry import Registry
    from skylift.spec import load_spec

    spec = load_spec(EXAMPLE)
    torch.manual_seed(0)
    model = build_model(spec.model, (FEATURES,), 10).eval()
    meta = {
        "model": spec.model.model_dump(mode="json"),
        "input_shape": [FEATURES],
        "classes": list("0123456789"),
    }
    Registry(home).register("mnist-mlp", model.state_dict(), meta)


def make_inputs(folder: Path, rows: int) -> tuple[Path, Path]:
    """x.npy (memory-map friendly) and x.parquet of `rows` MNIST-shaped rows, written block by block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skylift.data import read_source

    digits, _ = read_source("builtin:digits28")
    rng = np.random.default_rng(0)
    npy, parquet = folder / "x.npy", folder / "x.parquet"
    x_ND = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    schema = pa.schema([pa.field(f"p{j}", pa.float32()) for j in range(FEATURES)])
    with pq.ParquetWriter(parquet, schema) as writer:
        for lo in range(0, rows, BLOCK):
            n = min(BLOCK, rows - lo)
            images = digits.x[rng.integers(0, len(digits), n)].reshape(n, 28, 28)
            shift = rng.integers(-2, 3, size=2)
            block = np.roll(images, tuple(shift), axis=(1, 2)).reshape(n, FEATURES)
            x_ND[lo : lo + n] = block
            writer.write_table(pa.Table.from_arrays(list(block.T), schema=schema), row_group_size=BLOCK)
    x_ND.flush()
    del x_ND
    return npy, parquet


def flops_per_row() -> int:
    return 2 * (FEATURES * 256 + 256 * 128 + 128 * 10)


def matmul_flops() -> float:
    """Best measured FLOP/s of the model's biggest matmul (4096x784 @ 784x256), default threads."""
    import torch

    a, b = torch.rand(4096, FEATURES), torch.rand(FEATURES, 256)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(7):  # best of 7 short trials: the machine is shared
        reps, tick = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, reps * 2 * 4096 * FEATURES * 256 / (time.perf_counter() - tick))
    return best


def in_memory_loop(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Rows/s of model(x) in batches of 4096 over the whole tensor held in memory, default threads."""
    import torch

    with torch.no_grad():
        model(x[:4096])
        tick = time.perf_counter()
        for lo in range(0, len(x), 4096):
            model(x[lo : lo + 4096])
        return len(x) / (time.perf_counter() - tick)


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _rss(pid: int) -> int:
    """Summed VmRSS of the tree: a kernel counter, cheap to read every 20 ms."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _pss(pid: int) -> int:
    """Summed PSS of the tree. smaps_rollup walks page tables (~20 ms for a worker mapping 3 GB),
    so it is read once a second: sampled every 20 ms it would take most of a core from the run."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, float, int, int]:
    """(stdout, wall seconds, peak tree RSS (20 ms samples), peak tree PSS (1 s samples)) of a command."""
    tick = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample() -> None:
        n = 0
        while proc.poll() is None:
            peak[0] = max(peak[0], _rss(proc.pid))
            if n % 50 == 25:
                peak[1] = max(peak[1], _pss(proc.pid))
            n += 1
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return out, time.perf_counter() - tick, peak[0], peak[1]


DRIVER = """
import json, sys, time, torch
from skylift.batch import predict
tick = time.perf_counter()
r = predict("mnist-mlp", sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), home=sys.argv[4], overwrite=True)
print(json.dumps({"seconds": time.perf_counter() - tick, "rows": r.rows, "predicting": r.predict_seconds}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--folder", help="where to write the temp inputs (default: the system temp folder)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration; the best is reported")
    args = ap.parse_args()
    import torch

    folder = Path(tempfile.mkdtemp(prefix="skylift-bench-", dir=args.folder))
    try:
        home = folder / "home"
        register_model(home)
        tick = time.perf_counter()
        npy, parquet = make_inputs(folder, args.rows)
        print(
            f"inputs: {args.rows:,} rows: x.npy {npy.stat().st_size / 2**30:.2f} GiB, x.parquet "
            f"{parquet.stat().st_size / 2**30:.2f} GiB (written in {time.perf_counter() - tick:.0f} s)",
            flush=True,
        )
        from skylift.registry import load_model

        model = load_model("mnist-mlp", home=home).module
        x = torch.from_numpy(np.load(npy))
        flops = matmul_flops()
        env = {**os.environ, "SKYLIFT_HOME": str(home)}
        rows = []
        for source in (npy, parquet):
            for workers in (1, 2):
                cmd = [sys.executable, "-c", DRIVER, str(source), str(folder / "p.npz"), str(workers)]
                runs = []
                for _ in range(args.repeat):  # best of N, baseline included: the machine is shared
                    base = in_memory_loop(model, x)  # measured next to each run
                    out, _, rss, pss = run_measured([*cmd, str(home)], env)
                    timing = json.loads(out.strip().splitlines()[-1])
                    runs.append(
                        (base, args.rows / timing["seconds"], args.rows / timing["predicting"], rss, pss)
                    )
                base, rate, steady, rss, pss = (max(column) for column in zip(*runs, strict=True))
                rows.append((source.suffix[1:], workers, base, rate, steady, rss, pss))
                print(
                    f"{source.suffix[1:]} x{workers}: {rate:,.0f} rows/s (baseline {base:,.0f})", flush=True
                )
        del x
        cli = [sys.executable, "-m", "skylift", "predict", "mnist-mlp", "--input", str(npy), "--output"]
        cli += [str(folder / "c.npz"), "--workers", "2", "--overwrite"]
        _, cli_seconds, cli_rss, cli_pss = run_measured(cli, env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nmachine: {platform.machine()} cores={len(os.sched_getaffinity(0))}; torch {torch.__version__}, "
        f"numpy {np.__version__}; rows={args.rows:,}, features={FEATURES}, batch 4096"
    )
    print(
        f"ceiling: {flops / flops_per_row():,.0f} rows/s "
        f"({flops_per_row():,} FLOP/row at {flops / 1e9:.1f} GFLOP/s)"
    )
    print(
        "\n| input | workers | in-memory loop rows/s | predict rows/s (whole call) | ratio "
        "| while predicting | ratio | peak RSS (tree) | peak PSS (tree) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fmt, workers, base, rate, steady, rss, pss in rows:
        print(
            f"| {fmt} | {workers} | {base:,.0f} | {rate:,.0f} | {rate / base:.0%} | {steady:,.0f} "
            f"| {steady / base:.0%} | {rss / 2**30:.2f} GiB | {pss / 2**30:.2f} GiB |"
        )
    print(
        f"\n`skylift predict ... --workers 2` on x.npy, whole command: {cli_seconds:.2f} s "
        f"({args.rows / cli_seconds:,.0f} rows/s), peak RSS {cli_rss / 2**30:.2f} GiB, "
        f"PSS {cli_pss / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    main()
