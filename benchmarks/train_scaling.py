"""Data-parallel scaling: samples/s of 1 vs 2 DDP workers (gloo, 1 thread each), same run.

Weak scaling keeps 64 rows per worker (global batch 64 x workers); efficiency is
2-worker samples/s / (2 x 1-worker samples/s). Strong scaling keeps the global batch at 64 (the
same job, split). Models: the MNIST MLP, and a small CNN whose step is compute-bound.
The "no-sync ceiling" runs two independent 1-worker jobs at the same time: what 2 processes
reach on this machine with no gradient sync at all (shared cores, caches, memory bandwidth).
Run: `python benchmarks/train_scaling.py [--epochs 4]`.

`--sync` runs the CNN's weak scaling only, once per gradient-sync setting (`distributed.bucket_mb`,
`distributed.gradient_compression`), all against the same 1-worker baseline and no-sync ceiling,
interleaved (the order rotates each repeat), and also reports each setting's loss and accuracy
after the last epoch (compression is lossy): `python benchmarks/train_scaling.py --sync --repeat 3`.
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


# --sync settings: name -> overrides of the 2-worker CNN job. For this CNN (4.6 MiB of fp32
# gradients) "auto" is one 25 MiB bucket, so 100 MiB is the same configuration again: the spread
# between the two is the noise. 1 MiB makes two buckets (DDP rebuilds them after the first step,
# in the order gradients become ready): the dense layers' 4.5 MiB, whose all_reduce can start
# while the convolutions' backward runs, then the convolutions' 74 KiB (torch's default, 25 MiB
# with a 1 MiB first bucket, makes the same two here).
SYNC_SETTINGS = {
    "fp32": ("fp32, bucket auto (1 bucket; default)", []),
    "fp32-b100": ("fp32, bucket 100 MiB (same as auto here)", ["distributed.bucket_mb=100"]),
    "fp32-b1": ("fp32, bucket 1 MiB (2 buckets)", ["distributed.bucket_mb=1"]),
    "fp16": ("fp16 compression", ["distributed.gradient_compression=fp16"]),
    "bf16": ("bf16 compression", ["distributed.gradient_compression=bf16"]),
    "bf16-b1": (
        "bf16 compression, bucket 1 MiB",
        ["distributed.gradient_compression=bf16", "distributed.bucket_mb=1"],
    ),
}


def _run(spec: JobSpec, workers: int, home: Path) -> tuple[float, dict[str, float]]:
    """Median samples/s of epochs 2.. (epoch 1 warms up), and the last epoch's row."""
    result = launch(spec, Placement(workers=workers, max_restarts=0), home=home)
    assert result is not None
    rates = [h["samples_per_s"] for h in result.history[1:]]
    return float(statistics.median(rates)), result.history[-1]


def samples_per_s(spec: JobSpec, workers: int, home: Path) -> float:
    return _run(spec, workers, home)[0]


def side_by_side(spec: JobSpec, home: Path) -> float:
    """Summed samples/s of two independent 1-worker jobs running at the same time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(samples_per_s, [spec, spec], [1, 1], [home, home]))


def sync_settings(base: list[str], settings: list[str], repeat: int, home: Path) -> None:
    """The CNN's weak scaling under each gradient-sync setting, against one 1-worker baseline."""
    cnn = [*base, "model.input_shape=[1, 28, 28]", CNN]
    one = load_spec(EXAMPLE, [*cnn, "train.batch_size=64"])
    twos = {
        SYNC_SETTINGS[key][0]: load_spec(EXAMPLE, [*cnn, "train.batch_size=128", *SYNC_SETTINGS[key][1]])
        for key in settings
    }
    r1s, frees = [], []
    rates: dict[str, list[float]] = {name: [] for name in twos}
    last: dict[str, dict[str, float]] = {}
    for i in range(repeat):
        names = list(twos)[i % len(twos) :] + list(twos)[: i % len(twos)]  # rotate: no setting always first
        frees.append(side_by_side(one, home))
        r1s.append(samples_per_s(one, 1, home))
        for name in names:
            rate, last[name] = _run(twos[name], 2, home)
            rates[name].append(rate)
    r1, free = statistics.median(r1s), statistics.median(frees)
    print(
        f"torch {torch.__version__}; gloo; 1 thread per worker; CNN weak scaling (64 rows per worker); "
        f"medians of {repeat} interleaved runs; 1 worker {r1:,.0f} samples/s "
        f"({' / '.join(f'{r:,.0f}' for r in r1s)}); no-sync ceiling {free:,.0f} samples/s, "
        f"eff. {free / (2 * r1):.2f} ({' / '.join(f'{f / (2 * r1):.2f}' for f in frees)})"
    )
    print(
        "| 2 workers: gradient sync | samples/s | eff. | eff. per run (vs that repeat's 1w) "
        "| last epoch: loss | val_loss | val_accuracy |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, runs in rates.items():
        per_run = " / ".join(f"{r / (2 * one_r):.2f}" for r, one_r in zip(runs, r1s, strict=True))
        med = statistics.median(runs)
        row = last[name]
        print(
            f"| {name} | {med:,.0f} | {med / (2 * r1):.2f} | {per_run} | {row['loss']:.5f} "
            f"| {row['val_loss']:.5f} | {row['val_accuracy']:.4f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per setting (medians)")
    ap.add_argument("--sync", action="store_true", help="the CNN under each gradient-sync setting")
    ap.add_argument(
        "--settings",
        default=",".join(SYNC_SETTINGS),
        help=f"--sync: which, comma-separated (default: all of {', '.join(SYNC_SETTINGS)})",
    )
    args = ap.parse_args()
    base = [f"train.epochs={args.epochs}", "train.threads=1", "data.test_split=0"]
    if args.sync:
        unknown = set(args.settings.split(",")) - set(SYNC_SETTINGS)
        if unknown:
            ap.error(f"--settings: unknown {', '.join(sorted(unknown))}; use {', '.join(SYNC_SETTINGS)}")
        with tempfile.TemporaryDirectory() as tmp:
            sync_settings(base, args.settings.split(","), args.repeat, Path(tmp))
        return
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
