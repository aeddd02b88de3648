"""TPE + Hyperband vs random search without pruning on the MNIST MLP (learning rate, batch size,
dropout, width): best validation accuracy after 8, 16 and 32 trials and the wall time to get there,
averaged over seeds. Every trial is a real `skylift` training process, 2 at a time.

    python benchmarks/tune_efficiency.py [--seeds 3] [--trials 32] [--epochs 8] [--val-split 0.3]
                                         [--out FILE.json]

The example's 10% validation split is ~144 digits: accuracy moves in steps of 0.7% and most
settings tie at the top, so by default the benchmark holds out 30% (~430) to tell them apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from skylift.spec import parse_spec
from skylift.tune import TuneOptions, tune

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp.yaml"
SPACE = {
    "train.optimizer.lr": {"log_uniform": [1.0e-5, 1.0e-1]},
    "train.batch_size": {"choice": [32, 64, 128, 256]},
    "model.layers.1.dropout.rate": {"uniform": [0.0, 0.7]},
    "model.layers.0.dense.units": {"choice": [32, 64, 128, 256, 512]},
}
STRATEGIES = {"tpe+hyperband": ("tpe", "hyperband"), "random": ("random", "none")}
MARKS = (8, 16, 32)


def _one(strategy: str, seed: int, trials: int, epochs: int, val_split: float) -> dict[str, Any]:
    import optuna

    sampler, pruner = STRATEGIES[strategy]
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["tune"]["space"] = SPACE
    raw["train"]["epochs"] = epochs
    raw["data"]["validation_split"] = val_split
    spec = parse_spec(raw)
    with tempfile.TemporaryDirectory() as home:
        start = time.time()
        options = TuneOptions(trials=trials, parallel=2, sampler=sampler, pruner=pruner, seed=seed, workers=1)
        if tune(spec, options, home=home).interrupted:
            raise KeyboardInterrupt  # tune() returns after Ctrl-C; the benchmark stops too
        wall = time.time() - start
        from optuna.storages.journal import JournalFileBackend

        journal = Path(home) / "studies" / spec.name / "journal.log"
        study = optuna.load_study(
            study_name=spec.name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        )
        done = sorted(
            (t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_complete
        )
        best, curve = 0.0, []  # (seconds since start, best so far, trials finished)
        for i, t in enumerate(done, 1):
            if t.state.name == "COMPLETE" and t.value is not None:
                best = max(best, t.value)
            curve.append((t.datetime_complete.timestamp() - start, best, i))
    marks = {m: next(((s, b) for s, b, n in curve if n == m), curve[-1][:2]) for m in MARKS if m <= trials}
    return {"strategy": strategy, "seed": seed, "wall_s": wall, "curve": curve, "marks": marks}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--val-split", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=Path("tune_efficiency.json"))
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for seed in range(args.seeds):
        for strategy in STRATEGIES:
            runs.append(_one(strategy, seed, args.trials, args.epochs, args.val_split))
            args.out.write_text(json.dumps(runs, indent=1))  # partial results survive an interruption
            r = runs[-1]
            print(
                strategy,
                "seed",
                seed,
                f"wall {r['wall_s']:.0f}s",
                {m: f"{b:.4f}@{s:.0f}s" for m, (s, b) in r["marks"].items()},
            )
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy]
        for m in MARKS:
            if m <= args.trials:
                acc = statistics.mean(r["marks"][m][1] for r in mine)
                secs = statistics.mean(r["marks"][m][0] for r in mine)
                print(f"{strategy:14s} after {m:2d} trials: best val_accuracy {acc:.4f}, wall {secs:.0f}s")
    # time for TPE+Hyperband to reach random search's final best (per seed)
    met = 0
    for seed in range(args.seeds):
        rnd = next(r for r in runs if r["strategy"] == "random" and r["seed"] == seed)
        tpe = next(r for r in runs if r["strategy"] == "tpe+hyperband" and r["seed"] == seed)
        target = rnd["curve"][-1][1]
        reached = next((s for s, b, _ in tpe["curve"] if b >= target), None)
        shown = f"{reached:.0f}s" if reached is not None else "never"
        met += reached is not None and reached <= rnd["wall_s"] / 2
        print(
            f"seed {seed}: random's {args.trials}-trial best {target:.4f} at {rnd['wall_s']:.0f}s; "
            f"TPE+Hyperband reached it at {shown}"
        )
    print(f"target (reach it in at most half random's wall time) met on {met} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
