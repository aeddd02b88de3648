"""Data-parallel scaling: samples/s of 1 vs 2 DDP workers (gloo, 1 thread each), same run.

Weak scaling keeps 64 rows per worker (global batch 64 x workers); efficiency is
2-worker samples/s / (2 x 1-worker samples/s). Strong scaling keeps the global batch at 64 (the
same job, split). Models: the MNIST MLP, and a small CNN whose step is compute-bound.
The "no-sync ceiling" runs two independent 1-worker jobs at the same time: what 2 processes
reach on this machine with no gradient sync at all (shared cores, caches, memory bandwidth).
Run: `python benchmarks/train_scaling.py [--epochs 4]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from skylift.spec import JobSpec, load_spec
from skylift.train.launch import Placement, launch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp.yaml"
CNN = (
    "model.layers=[{conv2d: {filters: 32, kernel_size: 3, activation: relu}},"
    " {conv2d: {filters: 64, kernel_size: 3, activation: relu}}, {maxpool: {size: 2}},"
    " {flatten: {}}, {dense: {units: 128, activation: relu}}, {dense: {units: 10}}]"
)


def samples_per_s(spec: JobSpec, workers: int, home: Path) -> float:
    result = launch(spec, Placement(workers=workers, max_restarts=0), home=home)
    assert result is not None
    rates = [h["samples_per_s"] for h in result.history[1:]]  # epoch 1 warms up
    return float(statistics.median(rates))


def side_by_side(spec: JobSpec, home: Path) -> float:
    """Summed samples/s of two independent 1-worker jobs running at the same time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(samples_per_s, [spec, spec], [1, 1], [home, home]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per setting (medians)")
    args = ap.parse_args()
    base = [f"train.epochs={args.epochs}", "train.threads=1", "data.test_split=0"]
    cases = [
        ("MLP", "weak", base, 64),
        ("MLP", "strong", base, 0),
        ("CNN", "weak", [*base, "model.input_shape=[1, 28, 28]", CNN], 64),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, kind, overrides, per_worker in cases:
            one = load_spec(EXAMPLE, [*overrides, f"train.batch_size={per_worker or 64}"])
            two = load_spec(EXAMPLE, [*overrides, f"train.batch_size={2 * per_worker or 64}"])
            runs = []
            for _ in range(args.repeat):  # interleaved: a slow minute on a shared VM hits every setting
                free = side_by_side(one, Path(tmp)) if kind == "weak" else 0.0
                runs.append((samples_per_s(one, 1, Path(tmp)), samples_per_s(two, 2, Path(tmp)), free))
            r1, r2, free = (statistics.median(r[i] for r in runs) for i in range(3))
            effs = sorted(r[1] / (2 * r[0]) for r in runs)
            rows.append((model, kind, one.train.batch_size, two.train.batch_size, r1, r2, free, effs))
    print(
        f"torch {torch.__version__}; gloo; 1 thread per worker; epochs={args.epochs}; builtin:digits28; "
        f"medians of {args.repeat} interleaved runs"
    )
    print(
        "| model | scaling | batch 1w | batch 2w | 1w samples/s | 2w samples/s | 2w / 1w | eff. "
        "| eff. per run | no-sync ceiling: 2 x 1w side by side | ceiling eff. |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model, kind, b1, b2, r1, r2, free, effs in rows:
        ratio = r2 / r1
        ceiling = f"{free:,.0f} | {free / (2 * r1):.2f}" if free else "- | -"
        cells = f"| {model} | {kind} | {b1} | {b2} | {r1:,.0f} | {r2:,.0f} | {ratio:.2f}x | {ratio / 2:.2f}"
        print(f"{cells} | {' / '.join(f'{e:.2f}' for e in effs)} | {ceiling} |")


if __name__ == "__main__":
    main()
