"""The regression task: data, loss on the standardized scale, exact metrics, rescaling that travels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skylift.data._regression import read_targets
from skylift.data._rows import TensorRows
from skylift.errors import DataError, SpecError
from skylift.spec import parse_spec
from skylift.tasks import TASKS, Task, TaskData

SPEC = {
    "name": "reg",
    "task": "regression",
    "data": {"train": "builtin:diabetes", "validation_split": 0.2},
    "model": {"layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 1}}]},
}


def test_the_builtin_diabetes_data_is_scikit_learns() -> None:
    from sklearn.datasets import load_diabetes

    t = read_targets("builtin:diabetes", None)
    raw = load_diabetes(scaled=False)
    np.testing.assert_allclose(t.x, raw.data, rtol=1e-6)
    np.testing.assert_allclose(t.y[:, 0], raw.target, rtol=1e-6)
    assert t.targets == ("progression",) and len(t.features) == 10


def test_csv_targets_and_every_bad_cell_named(tmp_path: Path) -> None:
    good = tmp_path / "r.csv"
    good.write_text("a,b,price,rating\n1,2,10.5,3\n3,4,20.0,4\n5,6,30,5\n")
    t = read_targets(str(good), ["price", "rating"])
    assert t.features == ("a", "b") and t.targets == ("price", "rating")
    np.testing.assert_array_equal(t.y, [[10.5, 3], [20, 4], [30, 5]])
    assert read_targets(str(good), None).targets == ("rating",)  # default: the last column
    nan = tmp_path / "nan.csv"
    nan.write_text("a,price\n1,10\n2,nan\n")
    with pytest.raises(DataError, match=r"^.*nan.csv: targets column 'price' is NaN or infinite at row 1$"):
        read_targets(str(nan), ["price"])
    with pytest.raises(DataError, match=r"target column 'cost' not found; columns present: a, b, price"):
        read_targets(str(good), ["cost"])
    text = tmp_path / "t.csv"
    text.write_text("a,price\n1,10\nx,20\n")
    with pytest.raises(DataError, match=r"column 'a' is not numeric: row 1 holds 'x'"):
        read_targets(str(text), ["price"])


def test_a_classification_monitor_or_loss_on_a_regression_task_is_refused() -> None:
    with pytest.raises(
        SpecError, match=r"train\.checkpoint\.monitor val_accuracy is not a metric of the regression"
    ):
        parse_spec({**SPEC, "train": {"checkpoint": {"monitor": "val_accuracy"}}})
    with pytest.raises(
        SpecError, match=r"train\.loss cross_entropy does not fit the regression task: use mse or huber"
    ):
        parse_spec({**SPEC, "train": {"loss": "cross_entropy"}})
    spec = parse_spec(SPEC)
    assert spec.tune.metric == "val_loss" and spec.tune.direction == "minimize"


def _built() -> tuple[Task, TaskData, torch.nn.Module]:
    """The regression task, its data for SPEC, and a seeded untrained model."""
    spec = parse_spec(SPEC)
    task = TASKS["regression"]
    data = task.load(spec)
    torch.manual_seed(0)
    return task, data, task.build(spec.model, data.meta, data.input_shape, data.n_outputs)


def test_metrics_are_sums_that_add_up_over_any_split_of_the_rows() -> None:
    task, data, model = _built()
    whole = task.eval_sums(model, data.val, data)
    parts = task.eval_sums(model, data.val.part(slice(0, 31)), data) + task.eval_sums(
        model, data.val.part(slice(31, None)), data
    )
    # float64 sums: the parts add up to the whole up to the float32 rounding of the model's outputs,
    # which differs with the batch a row is computed in (as between ranks)
    torch.testing.assert_close(whole, parts, rtol=1e-6, atol=0)
    loss, m = task.summarize(whole, data)
    assert isinstance(data.val, TensorRows)
    with torch.no_grad():
        pred = model(data.val.x_NS).numpy()[:, 0]
    true = data.val.y_NK.numpy()[:, 0]
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    assert m["val_mae"] == pytest.approx(mean_absolute_error(true, pred), rel=1e-6)
    assert m["val_rmse"] == pytest.approx(mean_squared_error(true, pred) ** 0.5, rel=1e-6)
    assert m["val_r2"] == pytest.approx(r2_score(true, pred), rel=1e-6)
    std = data.meta["scale"]["y_std"][0]
    assert loss == pytest.approx(float(np.mean(((pred - true) / std) ** 2)), rel=1e-6)  # standardized MSE


def test_the_model_answers_in_the_targets_units_from_the_start() -> None:
    _task, data, model = _built()
    assert isinstance(data.train, TensorRows)
    with torch.no_grad():
        pred = model(data.train.x_NS)
    # an untrained net outputs ~0 on standardized inputs: de-standardized, that is near the mean target
    assert abs(float(pred.mean()) - data.meta["scale"]["y_mean"][0]) < data.meta["scale"]["y_std"][0]
    state = model.state_dict()
    assert {"x_mean", "x_std", "y_mean", "y_std"} <= set(state)  # the scaling is saved with the weights


def test_huber_is_quadratic_then_linear_on_the_standardized_error() -> None:
    spec = parse_spec({**SPEC, "train": {"loss": "huber", "huber_delta": 1.0}})
    task = TASKS["regression"]
    data = task.load(spec)
    std = data.meta["scale"]["y_std"][0]
    y = torch.zeros(2, 1)
    out = torch.tensor([[0.5 * std], [3.0 * std]])
    assert float(task.loss_sum(out, y, spec.train, data)) == pytest.approx(0.5 * 0.25 + (3.0 - 0.5), rel=1e-5)
