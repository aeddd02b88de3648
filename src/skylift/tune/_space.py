"""The search space: `tune.space` as Optuna suggestions, and the trial spec built from sampled values."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from skylift.errors import SpecError
from skylift.spec import JobSpec, parse_spec

if TYPE_CHECKING:
    import optuna

    from skylift.tasks import TaskData

# A grid over an int range larger than this is a mistake, not a search.
MAX_GRID_POINTS = 10_000


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set dotted `path` in plain spec data; a numeric part indexes a list (model.layers.0.dense.units)."""
    parts = path.split(".")
    node: Any = raw
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def trial_spec(base: JobSpec, values: dict[str, Any], source: str = "trial") -> JobSpec:
    """`base` with each dotted path set to its value, validated like any spec."""
    raw = json.loads(json.dumps(base.to_dict()))
    for path, value in values.items():
        set_path(raw, path, value)
    return parse_spec(raw, source=source)


def extremes(entry: dict[str, Any]) -> list[Any]:
    """The values at the edges of one dimension: a spec valid at these is valid inside."""
    kind, value = next(iter(entry.items()))
    return list(value) if kind == "choice" else [value[0], value[1]]


def check_space(spec: JobSpec) -> None:
    """SpecError unless the space is non-empty and every edge value gives a valid spec."""
    space = spec.tune.space
    if not space:
        raise SpecError(
            "tune.space is empty: add at least one dimension, "
            "e.g. tune.space: {train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-2]}}"
        )
    for path, entry in space.items():
        for value in extremes(entry):
            try:
                trial_spec(spec, {path: value}, source=f"tune.space {path}={value!r}")
            except SpecError as exc:
                raise SpecError(f"{exc} (this value is inside tune.space.{path})") from None


def check_models(spec: JobSpec, data: TaskData) -> None:
    """SpecError unless the model builds at every edge value of each `model.` dimension: a layer
    parameter's name and range, heads that divide the width, a shape that still fits. Otherwise
    every trial drawing such a value would fail the same way, after the study had started."""
    import torch

    from skylift.tasks import TASKS

    task = TASKS[spec.task]
    for path, entry in spec.tune.space.items():
        if not path.startswith("model."):
            continue
        for value in extremes(entry):
            trial = trial_spec(spec, {path: value}, source=f"tune.space {path}={value!r}")
            try:
                with torch.random.fork_rng(devices=[]):  # building draws weights: keep the caller's seed
                    task.build(trial.model, data.meta, data.input_shape, data.n_outputs)
            except SpecError as exc:
                raise SpecError(f"{exc} (with {value!r} from tune.space.{path})") from None


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per dimension from the study's sampler (or the fixed values of an enqueued retry)."""
    values: dict[str, Any] = {}
    for path, entry in space.items():
        kind, arg = next(iter(entry.items()))
        if kind == "choice":
            values[path] = trial.suggest_categorical(path, arg)
        elif kind == "int":
            values[path] = trial.suggest_int(path, arg[0], arg[1])
        else:
            values[path] = trial.suggest_float(path, float(arg[0]), float(arg[1]), log=kind == "log_uniform")
    return values


def grid(space: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The grid sampler's points: choices as given, ints as every whole number in range."""
    points: dict[str, list[Any]] = {}
    for path, entry in space.items():
        kind, arg = next(iter(entry.items()))
        if kind == "choice":
            points[path] = list(arg)
        elif kind == "int" and arg[1] - arg[0] < MAX_GRID_POINTS:
            points[path] = list(range(arg[0], arg[1] + 1))
        else:
            raise SpecError(
                f"tune.space.{path}: the grid sampler needs choice or a small int range, got {kind} "
                "(use --sampler tpe|random|gp|cmaes, or list the values with choice)"
            )
    return points


def grid_size(space: dict[str, dict[str, Any]]) -> int:
    return math.prod(len(v) for v in grid(space).values())
