"""Regression: one or more numeric targets, MSE or Huber loss, MAE / RMSE / R² metrics.

The model is trained inside `Rescaled`: inputs standardized and outputs de-standardized with the
training split's means and deviations (buffers, so they travel with the weights), so a plain MLP
meets targets of any scale at a normal learning rate and always answers in the targets' units.
Shape legend: N rows, b batch rows, F features, K targets, T tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.data._rows import TensorRows, batches
from skylift.errors import DataError
from skylift.tasks._base import EVAL_BATCH_ROWS, Task, TaskData

if TYPE_CHECKING:
    import torch

    from skylift.data._rows import Rows
    from skylift.spec import JobSpec, ModelSpec, TrainSpec

_MIN_STD = 1e-6  # a constant column is centred, not divided by ~0


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) row indices, both sorted: round(fraction * n) rows held out (at least 1)."""
    take = max(1, round(fraction * n)) if fraction > 0 else 0
    if take >= n:
        raise DataError(f"holding out {fraction} of {n} rows leaves none to train on")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[take:]), np.sort(perm[:take])


def make_rescaled(model: torch.nn.Module, scale: dict[str, list[float]]) -> torch.nn.Module:
    """`model` inside the standardizing wrapper, with the recorded means and deviations."""
    import torch

    class Rescaled(torch.nn.Module):
        """x -> model((x - x_mean) / x_std) * y_std + y_mean (the x part only for float inputs)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            for name, values in scale.items():
                self.register_buffer(name, torch.tensor(values, dtype=torch.float32))
            self.scales_x = "x_mean" in scale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.is_floating_point() and self.scales_x:  # per feature, whatever input_shape folds them to
                x = ((x.flatten(1) - self.get_buffer("x_mean")) / self.get_buffer("x_std")).reshape(x.shape)
            out: torch.Tensor = self.model(x)
            return out * self.get_buffer("y_std") + self.get_buffer("y_mean")

    return Rescaled()


def standardization(a: np.ndarray) -> tuple[list[float], list[float]]:
    mean = a.mean(axis=0, dtype=np.float64)
    std = np.maximum(a.std(axis=0, dtype=np.float64), _MIN_STD)
    return mean.tolist(), std.tolist()


class Regression(Task):
    name = "regression"
    columns = ("val_mae", "val_rmse", "val_r2")

    def load(self, spec: JobSpec, cache: Path | None = None) -> TaskData:
        import torch

        from skylift.data._regression import read_targets

        d, seed = spec.data, spec.train.seed
        if d.text_column is not None:
            from skylift.tasks._text import load_text_regression

            return load_text_regression(spec)
        table = read_targets(d.train, d.target_columns)
        test = read_targets(d.test, list(table.targets)) if d.test else None
        if test is not None and test.x.shape[1:] != table.x.shape[1:]:
            raise DataError(f"{d.test}: {test.x.shape[1]} features, train has {table.x.shape[1]}")
        if test is None and d.test_split > 0:
            rest, held = random_split(len(table), d.test_split, seed)
            table, test = table.subset(rest), table.subset(held)
        rest, held = random_split(len(table), d.validation_split, seed)
        train, val = table.subset(rest), table.subset(held)
        shape = tuple(spec.model.input_shape or train.x.shape[1:])
        if int(np.prod(shape)) != train.x.shape[1]:
            raise DataError(
                f"the data has {train.x.shape[1]} features but model.input_shape is {list(shape)}"
            )

        def rows(t: Any) -> TensorRows:
            return TensorRows(torch.from_numpy(t.x).reshape(len(t), *shape), torch.from_numpy(t.y))

        x_mean, x_std = standardization(train.x)
        y_mean, y_std = standardization(train.y)
        return TaskData(
            train=rows(train),
            val=rows(val),
            test=rows(test) if test is not None else None,
            input_shape=shape,
            n_outputs=len(table.targets),
            terms_per_row=len(table.targets),
            meta={
                "task": self.name,
                "targets": list(table.targets),
                "features": list(table.features),
                "scale": {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std},
                "loss": spec.train.loss or "mse",
                "huber_delta": spec.train.huber_delta,
            },
            fingerprint=train.fingerprint(),
            extras={"loss": spec.train.loss or "mse", "huber_delta": spec.train.huber_delta},
        )

    def build(
        self, model: ModelSpec, data_meta: dict[str, Any], input_shape: tuple[int, ...], n_outputs: int
    ) -> torch.nn.Module:
        return make_rescaled(super().build(model, data_meta, input_shape, n_outputs), data_meta["scale"])

    def loss_sum(self, out: torch.Tensor, y: torch.Tensor, t: TrainSpec, data: TaskData) -> torch.Tensor:
        return _loss_sum(out, y, t.loss or "mse", t.huber_delta, out.new_tensor(data.meta["scale"]["y_std"]))

    def eval_sums(self, model: torch.nn.Module, rows: Rows, data: TaskData) -> torch.Tensor:
        """float64 [loss, n, |e| (K), e² (K), y (K), y² (K)] with e = prediction - target."""
        import torch

        model.eval()
        k = data.n_outputs
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        sums = torch.zeros(2 + 4 * k, dtype=torch.float64, device=device)
        loss, delta = data.extras.get("loss", "mse"), data.extras.get("huber_delta", 1.0)
        std = torch.tensor(data.meta["scale"]["y_std"], dtype=torch.float64, device=device)
        with torch.no_grad():
            for x_bS, y_bK in batches(rows, EVAL_BATCH_ROWS):
                out_bK, y_bK = model(x_bS).double(), y_bK.double()
                e_bK = out_bK - y_bK
                sums[0] += _loss_sum(out_bK, y_bK, loss, delta, std)
                sums[1] += len(y_bK)
                for i, part in enumerate((e_bK.abs(), e_bK.square(), y_bK, y_bK.square())):
                    sums[2 + i * k : 2 + (i + 1) * k] += part.sum(0)
        return sums

    def summarize(
        self, sums: torch.Tensor, data: TaskData, prefix: str = "val_"
    ) -> tuple[float, dict[str, float]]:
        k = data.n_outputs
        s = sums.cpu().numpy()
        n = max(float(s[1]), 1.0)
        abs_e, sq_e, sum_y, sum_y2 = (s[2 + i * k : 2 + (i + 1) * k] for i in range(4))
        total = np.maximum(sum_y2 - sum_y**2 / n, 1e-12)  # Σ(y - ȳ)²
        metrics = {
            f"{prefix}mae": float(np.mean(abs_e / n)),
            f"{prefix}rmse": float(np.mean(np.sqrt(sq_e / n))),
            f"{prefix}r2": float(np.mean(1.0 - sq_e / total)),
        }
        return float(s[0]) / (n * k), metrics

    def finish(self, model: torch.nn.Module, data: TaskData, run: Path) -> dict[str, Any]:
        """Predicted vs true scatter (test rows, else validation) in run/scatter.png."""
        import torch

        from skylift._plot import figure, save

        rows = data.test if data.test is not None else data.val
        model.eval()
        with torch.no_grad():
            pairs = [(model(x).cpu().numpy(), y.cpu().numpy()) for x, y in batches(rows, EVAL_BATCH_ROWS)]
        pred, true = (np.concatenate([p[i] for p in pairs]) for i in (0, 1))
        targets = data.meta["targets"]
        fig, axes = figure(len(targets), 4.5 * len(targets), 4.5)
        for j, name in enumerate(targets):
            ax = axes[0][j]
            ax.scatter(true[:, j], pred[:, j], s=8, alpha=0.6)
            lo, hi = (
                float(min(true[:, j].min(), pred[:, j].min())),
                float(max(true[:, j].max(), pred[:, j].max())),
            )
            ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", label="perfect")
            ax.set_xlabel(f"true {name}")
            ax.set_ylabel(f"predicted {name}")
            ax.set_title(f"{'test' if data.test is not None else 'validation'}: {name}")
            ax.legend()
        save(fig, run / "scatter.png")
        return {}


def _loss_sum(
    out: torch.Tensor, y: torch.Tensor, loss: str, delta: float, std: torch.Tensor | float
) -> torch.Tensor:
    """MSE or Huber on the standardized scale (errors divided by the targets' deviation), summed."""
    import torch.nn.functional as F

    e = (out - y) / std
    if loss == "huber":
        return F.huber_loss(e, e.new_zeros(()).expand_as(e), reduction="sum", delta=delta)
    return e.square().sum()
