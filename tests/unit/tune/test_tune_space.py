"""The search space: spec validation, dotted paths (with list indices), edge values, grids."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from skylift.errors import SpecError
from skylift.spec import JobSpec, parse_spec
from skylift.tune._space import check_space, grid, set_path, trial_spec
from tests.conftest import EXAMPLE


def _spec(space: dict[str, Any]) -> JobSpec:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["tune"]["space"] = space
    return parse_spec(raw)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"uniform": [0.1, 0.2]}}, "train.lr is not a field of this spec"),
        ({"train.optimizer": {"choice": [1]}}, "train.optimizer is a section"),
        ({"train.epochs": {"int": [5, 1]}}, "low must be <= high, got [5, 1]"),
        ({"train.optimizer.lr": {"log_uniform": [0, 1]}}, "log_uniform needs low > 0"),
        ({"train.optimizer.lr": {"uniform": [0.1]}}, "uniform must be [low, high]"),
        ({"train.epochs": {"int": [1.5, 3]}}, "two whole numbers"),
        ({"train.batch_size": {"choice": []}}, "choice must be a non-empty list"),
        ({"train.epochs": {"normal": [1, 2]}}, "must be one of"),
        ({"train.epochs": {}}, "must be one of"),
        ({"name": {"choice": ["a"]}}, "cannot be searched"),
    ],
)
def test_bad_space_is_one_clear_error(space: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(space)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_paths_reach_into_layer_lists() -> None:
    spec = _spec({"model.layers.1.dropout.rate": {"uniform": [0.1, 0.4]}})
    trial = trial_spec(spec, {"model.layers.1.dropout.rate": 0.25, "model.layers.0.dense.units": 32})
    assert trial.model.layers is not None
    assert trial.model.layers[1] == {"dropout": {"rate": 0.25}}
    assert trial.model.layers[0]["dense"]["units"] == 32
    raw: dict[str, Any] = {"a": [{"b": 1}]}
    set_path(raw, "a.0.b", 2)
    assert raw == {"a": [{"b": 2}]}


def test_empty_space_and_invalid_edges_are_rejected() -> None:
    with pytest.raises(SpecError, match=r"tune\.space is empty"):
        check_space(_spec({}))
    with pytest.raises(SpecError, match=r"train\.batch_size"):
        check_space(_spec({"train.batch_size": {"int": [0, 64]}}))
    check_space(_spec({"train.batch_size": {"int": [16, 64]}}))


def test_grid_takes_choices_and_ints_only() -> None:
    assert grid({"a": {"choice": [1, 2]}, "b": {"int": [1, 3]}}) == {"a": [1, 2], "b": [1, 2, 3]}
    with pytest.raises(SpecError, match="grid sampler needs choice"):
        grid({"a": {"uniform": [0.0, 1.0]}})


REGRESSION = {
    "name": "reg",
    "task": "regression",
    "data": {"train": "builtin:diabetes"},
    "model": {
        "layers": [
            {"dense": {"units": 8, "activation": "relu"}},
            {"dropout": {"rate": 0.1}},
            {"dense": {"units": 1}},
        ]
    },
    "train": {"schedule": {"warmup_steps": 5}},
}


def _regression(space: dict[str, Any]) -> JobSpec:
    return parse_spec({**REGRESSION, "tune": {"metric": "val_mae", "space": space}})


def test_a_layer_parameter_left_at_its_default_can_be_searched() -> None:
    # dense.bias is not written in the spec; the layer type has it
    spec = _regression({"model.layers.0.dense.bias": {"choice": [True, False]}})
    assert trial_spec(spec, {"model.layers.0.dense.bias": False}).model.layers[0]["dense"]["bias"] is False  # type: ignore[index]
    assert spec.tune.direction == "minimize"
    for path in ("model.layers.3.dense.units", "model.layers.0.conv.filters", "model.layers.0.dense"):
        with pytest.raises(SpecError, match=r"is not a field of this spec|is a section"):
            _regression({path: {"choice": [1]}})


def test_the_model_must_build_at_the_edges_of_the_space() -> None:
    from skylift.tasks import TASKS
    from skylift.tune._space import check_models

    ok = _regression(
        {
            "model.layers.0.dense.units": {"choice": [4, 32]},
            "model.layers.1.dropout.rate": {"uniform": [0.0, 0.5]},
            "train.schedule.warmup_steps": {"int": [0, 50]},
        }
    )
    data = TASKS["regression"].load(ok)
    check_models(ok, data)
    for space, message in (
        (
            {"model.layers.0.dense.unitz": {"int": [4, 8]}},
            r"unitz.*tune\.space\.model\.layers\.0\.dense\.unitz",
        ),
        ({"model.layers.1.dropout.rate": {"uniform": [0.0, 1.0]}}, r"rate.*with 1\.0 from tune\.space"),
    ):
        with pytest.raises(SpecError, match=message) as err:
            check_models(_regression(space), data)
        assert "\n" not in str(err.value)


def test_the_results_table_names_each_searched_path_by_its_shortest_unique_ending() -> None:
    from skylift.cli._tune import _short

    paths = [
        "model.layers.0.dense.units",
        "model.layers.2.dense.units",
        "train.optimizer.lr",
        "train.batch_size",
    ]
    assert _short(paths) == ["0.dense.units", "2.dense.units", "train.optimizer.lr", "train.batch_size"]
