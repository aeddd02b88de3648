"""Text classifier test accuracy: skylift's examples/text_classifier.yaml against TF-IDF + logistic
regression (scikit-learn) on the same split, same run.

Data: the UCI Sentiment Labelled Sentences written by `bash examples/get_data.sh`. For each seed the
split is skylift's own (`train.seed` seeds it): a stratified 20% test set, then a stratified 10%
of the rest for validation. The baseline is fitted on the same training rows skylift trains on
(validation rows left out; skylift only uses them to pick the best epoch), word 1-2-gram TF-IDF
(sublinear tf) and `LogisticRegression` with scikit-learn's defaults (C=1), untuned like the
example. A second baseline row fits on train + validation, what a user without a checkpoint
monitor would do. Run: `python benchmarks/text_quality.py [--seeds 3] [--set FIELD=VALUE ...]`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from skylift.data._split import stratified_rows
from skylift.data._text import read_text_table
from skylift.spec import load_spec
from skylift.train import fit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "text_classifier.yaml"


def split(texts: list[str], y: np.ndarray, test: float, val: float, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train / val / test exactly as skylift's text classification task draws them."""
    rest, held = stratified_rows(y, 2, test, seed)
    inner, val_rows = stratified_rows(y[rest], 2, val, seed)
    return {"train": rest[inner], "val": rest[val_rows], "test": held}


def tfidf_lr(texts: list[str], y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vec.fit_transform([texts[i] for i in train])
    clf = LogisticRegression(max_iter=1000).fit(x_train, y[train])
    return float(clf.score(vec.transform([texts[i] for i in test]), y[test]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = ap.parse_args()
    base = load_spec(EXAMPLE, args.set)
    d = base.data
    table = read_text_table(d.train, d.text_column or "", label_column=d.label_column)
    assert table.labels is not None
    classes = sorted(set(table.labels))
    y = np.array([classes.index(v) for v in table.labels], dtype=np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            parts = split(table.texts, y, d.test_split, d.validation_split, seed)
            lr = tfidf_lr(table.texts, y, parts["train"], parts["test"])
            lr_all = tfidf_lr(table.texts, y, np.concatenate([parts["train"], parts["val"]]), parts["test"])
            spec = load_spec(
                EXAMPLE, [*args.set, f"train.seed={seed}", "train.register_best=false", "tune.trials=1"]
            )
            tick = time.perf_counter()
            result = fit(spec, home=Path(tmp) / "home", run_id=f"seed{seed}")
            seconds = time.perf_counter() - tick
            ours = result.summary["test"]["accuracy"]
            rows.append((seed, len(parts["train"]), len(parts["test"]), ours, lr, lr_all, seconds))
    import sklearn
    import torch

    print(
        f"machine: {platform.machine()} cores={torch.get_num_threads()}; torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}; spec {EXAMPLE.name} {' '.join(args.set)}"
    )
    print(
        "| seed | train rows | test rows | skylift test acc | TF-IDF + LR (train) | TF-IDF + LR (train+val) "
        "| skylift - LR (points) | skylift wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed, n_train, n_test, ours, lr, lr_all, seconds in rows:
        print(
            f"| {seed} | {n_train} | {n_test} | {ours:.4f} | {lr:.4f} | {lr_all:.4f} "
            f"| {100 * (ours - lr):+.1f} | {seconds:.0f} |"
        )
    mean = [statistics.mean(r[i] for r in rows) for i in (3, 4, 5)]
    print(
        f"| mean | | | {mean[0]:.4f} | {mean[1]:.4f} | {mean[2]:.4f} | {100 * (mean[0] - mean[1]):+.1f} | |"
    )


if __name__ == "__main__":
    main()
