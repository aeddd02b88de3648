"""What `models list` shows of each version (metric, creation time, aliases), its orders, and prune."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.errors import ModelNotFound, SpecError
from skylift.registry import Registry, sort_versions
from tests.unit.registry.conftest import make_tiny


def _register(registry: Registry, value: float, monitor: str = "val_loss") -> None:
    tiny = make_tiny()
    metrics = {"val_loss": value, "val_accuracy": 1 - value}
    registry.register("tiny", tiny.state, tiny.meta, metrics, {"monitor": monitor})


def test_versions_carry_the_monitored_metric_creation_time_and_aliases(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for loss in (0.3, 0.1, 0.2):
        _register(registry, loss)
    registry.promote("tiny", 1, "production")
    registry.promote("tiny", 1, "staging")
    rows = registry.versions("tiny")
    assert [(r.ref, r.monitor, r.metric, r.aliases) for r in rows] == [
        ("tiny:1", "val_loss", 0.3, ("production", "staging")),
        ("tiny:2", "val_loss", 0.1, ()),
        ("tiny:3", "val_loss", 0.2, ()),
    ]
    assert all(r.created and r.created.startswith("20") and r.problem is None for r in rows)
    with pytest.raises(ModelNotFound, match="no model named 'tiyn'"):
        registry.versions("tiyn")


def test_sorting_by_metric_puts_the_best_first_whichever_way_is_better(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for loss in (0.3, 0.1, 0.2):
        _register(registry, loss)
    rows = registry.versions("tiny")
    assert [r.version for r in sort_versions(rows, "metric")] == [2, 3, 1]  # lowest loss first
    assert [r.version for r in sort_versions(rows, "version")] == [1, 2, 3]
    assert [r.version for r in sort_versions(rows, "created")] == [3, 2, 1]  # newest first
    by_accuracy = Registry(tmp_path / "acc")
    for loss in (0.3, 0.1, 0.2):
        _register(by_accuracy, loss, monitor="val_accuracy")
    rows = by_accuracy.versions("tiny")
    assert [r.metric for r in rows] == [0.7, 0.9, 0.8]
    assert [r.version for r in sort_versions(rows, "metric")] == [2, 3, 1]  # highest accuracy first
    with pytest.raises(SpecError, match="sort must be one of version, created, metric, got 'size'"):
        sort_versions(rows, "size")


def test_the_cli_offers_exactly_the_library_sorts() -> None:
    from skylift.cli._models import _SORTS
    from skylift.registry._listing import SORTS

    assert _SORTS == SORTS


def test_a_damaged_version_is_listed_with_its_problem_not_its_metrics(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    _register(registry, 0.3)
    _register(registry, 0.2)
    (tmp_path / "registry" / "tiny" / "1" / "model.json").write_text("{}")
    first, second = registry.versions("tiny")
    assert first.metric is None and first.problem and "model.json" in first.problem
    assert second.metric == 0.2 and second.problem is None


def test_prune_keeps_the_newest_and_every_aliased_version_and_dry_runs_by_default(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for i in range(6):
        _register(registry, i / 10)
    registry.promote("tiny", 2, "production")
    plan = registry.prune("tiny", keep=2)
    assert (plan.delete, plan.keep, plan.applied) == ((1, 3, 4), (2, 5, 6), False)
    assert registry.list()[0].versions == (1, 2, 3, 4, 5, 6)  # a dry run deletes nothing
    done = registry.prune("tiny", keep=2, apply=True)
    assert (done.delete, done.applied) == ((1, 3, 4), True)
    assert registry.list()[0].versions == (2, 5, 6) and registry.resolve("tiny@production") == ("tiny", 2)
    assert registry.prune("tiny", keep=2, apply=True).delete == ()
    _register(registry, 0.9)  # a deleted number is never reused
    assert registry.list()[0].versions == (2, 5, 6, 7)


@pytest.mark.parametrize("keep", [0, -1, True, 1.5])
def test_prune_refuses_a_bad_keep_count(tmp_path: Path, keep: object) -> None:
    registry = Registry(tmp_path)
    _register(registry, 0.1)
    with pytest.raises(SpecError, match=r"keep must be a whole number >= 1, got "):
        registry.prune("tiny", keep=keep, apply=True)  # type: ignore[arg-type]
    assert registry.list()[0].versions == (1,)
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        registry.prune("nope", keep=1)
    assert not (tmp_path / "registry" / "nope").exists()
