"""Training samples/s: skylift's loop vs an idiomatic PyTorch DataLoader loop, same run, same model.

Workload: the MNIST MLP (784-256-128-10, dropout, batch norm), batch 64, on 60,000 MNIST-shaped
samples (the built-in digits at 28x28, shifted by up to 2 pixels and tiled to 60,000). Both loops
train the same freshly built model for the same epochs; accuracy is measured on the untouched
held-out digits. Like with like: both use the same fused Adam (skylift's optimizer), both rates are
all samples over the summed seconds of training steps, and the two loops alternate, `--repeat`
times per thread count, so machine noise falls on both; the ratio reported is the median of the
per-pair ratios. Run: `python benchmarks/train_throughput.py [--epochs 2] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from skylift.data import read_source, stratified_split
from skylift.spec import load_spec
from skylift.train import fit
from skylift.train.evaluation import evaluate_tensors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp.yaml"
N_TRAIN = 60_000


def make_data(folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """60,000 shifted copies of the train digits as .npy pairs; the held-out digits for testing."""
    digits, _ = read_source("builtin:digits28")
    train, test = stratified_split(digits, 0.2, seed=0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(train), N_TRAIN)
    images = train.x[idx].reshape(-1, 28, 28)
    shifts = rng.integers(-2, 3, size=(N_TRAIN, 2))
    for dy in range(-2, 3):  # vectorised per shift value, not per sample
        for dx in range(-2, 3):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[sel] = np.roll(images[sel], (dy, dx), axis=(1, 2))
    x_path, y_path = folder / "x.npy", folder / "y.npy"
    np.save(x_path, images.reshape(N_TRAIN, 784).astype(np.float32))
    np.save(y_path, train.y[idx])
    np.save(folder / "x_test.npy", test.x)
    np.save(folder / "y_test.npy", test.y)
    return x_path, y_path, test.x, test.y


def dataloader_loop(x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[torch.nn.Module, float]:
    """The idiomatic baseline: TensorDataset + DataLoader(batch_size=64, shuffle=True), with the
    optimizer skylift uses (fused Adam, the spec's lr and eps), so only the data path differs."""
    from skylift.models import build_model

    spec = load_spec(EXAMPLE)
    torch.manual_seed(0)
    model = build_model(spec.model, (784,), 10)
    o = spec.train.optimizer
    opt = torch.optim.Adam(model.parameters(), lr=o.lr, eps=o.eps, fused=True)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=64, shuffle=True)
    seconds = 0.0
    for _ in range(epochs):
        model.train()
        tick = time.perf_counter()
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - tick
    return model, len(x) * epochs / seconds


def skylift_run(
    folder: Path, x_path: Path, y_path: Path, epochs: int, threads: int, run: str
) -> tuple[float, float]:
    """skylift.train.fit on the same data: (samples/s over the summed step seconds, test accuracy)."""
    spec = load_spec(
        EXAMPLE,
        [
            f"data.train={x_path},{y_path}",
            f"data.test={folder / 'x_test.npy'},{folder / 'y_test.npy'}",
            "data.validation_split=0.02",
            f"train.epochs={epochs}",
            f"train.threads={threads}",
            "train.register_best=false",
        ],
    )
    result = fit(spec, home=folder / "home", run_id=run)
    samples = sum(r["samples_per_s"] * r["seconds"] for r in result.history)  # = rows x epochs
    return samples / sum(r["seconds"] for r in result.history), result.summary["test"]["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="alternating pairs per thread count")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x_path, y_path, xt, yt = make_data(folder)
        x, y = np.load(x_path), np.load(y_path)
        xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            pairs = []
            for i in range(args.repeat):
                model, rate = dataloader_loop(x, y, args.epochs)
                _, base = evaluate_tensors(model, xt_t, yt_t, 10)
                ours, acc = skylift_run(folder, x_path, y_path, args.epochs, threads, f"t{threads}-{i}")
                pairs.append((rate, base.accuracy, ours, acc))
            rows.append((threads, pairs))
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cores={torch.get_num_threads()}; "
        f"torch {torch.__version__}, numpy {np.__version__}; epochs={args.epochs}, samples={N_TRAIN}, "
        f"repeat={args.repeat}"
    )
    print(
        "| threads | DataLoader samples/s (median) | DataLoader test acc "
        "| skylift samples/s (median) | skylift test acc | ratio (median of pairs) | ratios |"
    )
    print("|---|---|---|---|---|---|---|")
    for threads, pairs in rows:
        ratios = [ours / rate for rate, _, ours, _ in pairs]
        print(
            f"| {threads} | {statistics.median(p[0] for p in pairs):,.0f} | {pairs[0][1]:.3f} "
            f"| {statistics.median(p[2] for p in pairs):,.0f} | {pairs[0][3]:.3f} "
            f"| {statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} |"
        )


if __name__ == "__main__":
    main()
