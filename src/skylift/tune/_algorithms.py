"""Samplers and pruners by name: the same objects in the driver and in every trial's rank 0."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from skylift.errors import SpecError
from skylift.tune._space import grid

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
PRUNERS = ("hyperband", "median", "none")


def make_sampler(
    name: str, space: dict[str, dict[str, Any]], seed: int | None
) -> optuna.samplers.BaseSampler:
    """The named sampler.

    TPE: multivariate (learning rate and batch size interact), 5 random start-up trials rather than
    Optuna's 10 (a third of a 32-trial budget), and the constant liar so parallel trials do not pile
    onto one point. Measured in benchmarks/tune_efficiency.py.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, constant_liar=True, multivariate=True, n_startup_trials=5
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "grid":
            return optuna.samplers.GridSampler(grid(space), seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                raise SpecError("the cmaes sampler needs the 'cmaes' package: pip install cmaes") from None
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise SpecError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The named pruner over epochs 1..`epochs` (Hyperband's resource is the epoch)."""
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SpecError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
