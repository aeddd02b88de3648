"""Everything a study needs, validated before anything is written; then the study opened or created."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift._cpus import usable_cores
from skylift.errors import SpecError
from skylift.spec import JobSpec
from skylift.tune._storage import StorageRef, exists, open_storage, resolve

if TYPE_CHECKING:
    import optuna

_STUDY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class TuneOptions:
    """CLI-level choices; None takes the spec's `tune` section."""

    trials: int | None = None
    """Trials in the study in total (a re-run resumes up to this count)."""
    parallel: int | None = None
    """Trial processes at once."""
    sampler: str | None = None
    pruner: str | None = None
    study: str | None = None
    """Study name; default: the spec's name."""
    storage: str | None = None
    """Optuna storage URL; default: a journal file in SKYLIFT_HOME/studies/<study>/."""
    timeout: float | None = None
    """Seconds after which no new trial starts (running ones finish)."""
    workers: int | None = None
    """Data-parallel processes per trial; default: the spec's number, or 1 for `auto`."""
    seed: int | None = None
    """Sampler seed."""


@dataclass
class Plan:
    spec: JobSpec
    home: Path
    study: str
    folder: Path
    storage: StorageRef
    trials: int
    parallel: int
    sampler: str
    pruner: str
    metric: str
    direction: str
    seed: int | None
    timeout: float | None
    workers: int
    forced: dict[str, Any]
    opened: Any = field(default=None, repr=False)  # the storage, when validation had to open it


def _check_existing(storage: Any, study: str, direction: str, metric: str, shown: str) -> None:
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        return
    have = storage.get_study_directions(study_id)[0].name.lower()
    if have != direction:
        raise SpecError(
            f"study {study!r} in {shown} was created to {have} its metric, not {direction}: "
            "use another --study name, or the same tune.direction"
        )
    had = storage.get_study_user_attrs(study_id).get("metric")
    if had is not None and had != metric:
        raise SpecError(f"study {study!r} in {shown} optimizes {had}, not {metric}: use another --study name")


def make_plan(spec: JobSpec, o: TuneOptions, home: Path) -> Plan:
    """Resolve and validate; raises SpecError/DataError and writes nothing."""
    from skylift.train.loop import setup
    from skylift.tune._algorithms import make_pruner, make_sampler
    from skylift.tune._space import check_models, check_space, extremes, grid_size

    t = spec.tune
    study = o.study or spec.name
    if not _STUDY.match(study):
        raise SpecError(f"--study must be 1-63 letters, digits, '.', '_' or '-', got {study!r}")
    trials, parallel = o.trials or t.trials, o.parallel or t.parallel
    sampler, pruner = o.sampler or t.sampler, o.pruner or t.pruner
    seed = o.seed if o.seed is not None else t.seed
    if o.timeout is not None and o.timeout <= 0:
        raise SpecError(f"--timeout must be > 0 seconds, got {o.timeout}")
    check_space(spec)
    workers = o.workers or (spec.distributed.workers if isinstance(spec.distributed.workers, int) else 1)
    space = t.space
    batches = extremes(space["train.batch_size"]) if "train.batch_size" in space else [spec.train.batch_size]
    if min(batches) < 2 * workers:
        raise SpecError(
            f"train.batch_size {min(batches)} gives fewer than 2 rows per worker with {workers} "
            f"workers per trial: use batch sizes >= {2 * workers} or fewer --workers"
        )
    make_sampler(sampler, space, seed)  # a grid over a float range fails here
    make_pruner(pruner, spec.train.epochs)
    if sampler == "grid":
        trials = min(trials, grid_size(space))
    data, _ = setup(spec, home)  # the data loads and the model builds: else every trial would fail
    check_models(spec, data)  # ... and so does the model at the edges of the space
    folder = home / "studies" / study
    ref = resolve(o.storage or t.storage, folder)
    opened = None
    if exists(ref):
        opened = open_storage(ref)
        _check_existing(opened, study, t.direction, t.metric, ref.shown())
    forced: dict[str, Any] = {
        "train.register_best": False,  # only the study's best trial is registered, at the end
        "train.checkpoint.monitor": t.metric,  # best.pt is the epoch the trial's value comes from
        "train.checkpoint.mode": "max" if t.direction == "maximize" else "min",
        "distributed.workers": workers,
    }
    if spec.train.threads is None:  # split the cores between trials and their workers
        forced["train.threads"] = max(1, usable_cores() // (parallel * workers))
    return Plan(
        spec, home, study, folder, ref, trials, parallel, sampler, pruner, t.metric, t.direction,
        seed, o.timeout, workers, forced, opened,
    )  # fmt: skip


def open_study(plan: Plan) -> optuna.Study:
    """Create the study folder and storage, then create or load the study."""
    import optuna

    from skylift.tune._algorithms import make_pruner, make_sampler

    plan.folder.mkdir(parents=True, exist_ok=True)
    storage = plan.opened or open_storage(plan.storage)
    study = optuna.create_study(
        storage=storage,
        study_name=plan.study,
        direction=plan.direction,  # type: ignore[arg-type]
        sampler=make_sampler(plan.sampler, plan.spec.tune.space, plan.seed),
        pruner=make_pruner(plan.pruner, plan.spec.train.epochs),
        load_if_exists=True,
    )
    if "metric" not in study.user_attrs:
        study.set_user_attr("metric", plan.metric)
    existing = len(study.get_trials(deepcopy=False))
    if existing and plan.seed is not None:
        # A resumed seeded study must not replay the random draws its first run already made.
        study.sampler = make_sampler(plan.sampler, plan.spec.tune.space, plan.seed + existing)
    return study
