"""Training samples/s: skylift's loop vs an idiomatic PyTorch DataLoader loop, same run, same model.

Workload: the MNIST MLP (784-256-128-10, dropout, batch norm), batch 64, on 60,000 MNIST-shaped
samples (the built-in digits at 28x28, shifted by up to 2 pixels and tiled to 60,000). Both loops
train the same freshly built model for the same epochs; accuracy is measured on the untouched
held-out digits. Run: `python benchmarks/train_throughput.py [--epochs 2]`.
"""

from __future__ import annotations

import argparse
import platform
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
    """The idiomatic baseline: TensorDataset + DataLoader(batch_size=64, shuffle=True), default Adam."""
    from skylift.models import build_model

    spec = load_spec(EXAMPLE)
    torch.manual_seed(0)
    model = build_model(spec.model, (784,), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x_path, y_path, xt, yt = make_data(folder)
        x, y = np.load(x_path), np.load(y_path)
        xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model, rate = dataloader_loop(x, y, args.epochs)
            _, base = evaluate_tensors(model, xt_t, yt_t, 10)
            spec = load_spec(
                EXAMPLE,
                [
                    f"data.train={x_path},{y_path}",
                    f"data.test={folder / 'x_test.npy'},{folder / 'y_test.npy'}",
                    "data.validation_split=0.02",
                    f"train.epochs={args.epochs}",
                    f"train.threads={threads}",
                ],
            )
            result = fit(spec, home=folder / "home")
            ours = sum(r["samples_per_s"] for r in result.history) / len(result.history)
            rows.append((threads, rate, base.accuracy, ours, result.summary["test"]["accuracy"]))
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cores={torch.get_num_threads()}; "
        f"torch {torch.__version__}, numpy {np.__version__}; epochs={args.epochs}, samples={N_TRAIN}"
    )
    print(
        "| threads | DataLoader samples/s | DataLoader test acc "
        "| skylift samples/s | skylift test acc | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for threads, rate, base_acc, ours, acc in rows:
        print(f"| {threads} | {rate:,.0f} | {base_acc:.3f} | {ours:,.0f} | {acc:.3f} | {ours / rate:.2f}x |")


if __name__ == "__main__":
    main()
