"""The pool's side files: a replica's load counters read back, the supervisor's series in /metrics,
and the autoscaling settings checked before anything starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skylift.errors import SpecError
from skylift.serve.autoscale import Autoscaler, Limits, Load, Observation
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.pool import read_sample, write_status


def test_a_snapshot_carries_the_load_counters_of_the_process_that_wrote_it(tmp_path: Path) -> None:
    metrics = Metrics(0, tmp_path)
    metrics.extra.update(load_probes_total=50, load_lag_seconds_total=0.1, load_queued_rows_total=200)
    metrics.observe_batch(7)
    metrics.publish()
    sample = read_sample(tmp_path / "metrics-0.json", os.getpid())
    assert sample is not None
    assert (sample.probes, sample.lag_s, sample.queued_rows, sample.rows) == (50, 0.1, 200, 7)
    assert read_sample(tmp_path / "metrics-0.json", os.getpid() + 1) is None  # a predecessor's
    assert read_sample(tmp_path / "metrics-1.json", os.getpid()) is None
    Metrics(2, tmp_path).publish()  # no probe yet
    assert read_sample(tmp_path / "metrics-2.json", os.getpid()) is None


def test_the_supervisor_series_appear_in_every_replicas_metrics(tmp_path: Path) -> None:
    scaler = Autoscaler(Limits(low=1, high=2, up_wait_s=0.002, up_rows=128, down_idle_s=3), now=0.0)
    for tick in range(5):
        scaler.observe(Observation(tick * 0.5, 1, 0, Load(0.005, 3)))
    write_status(tmp_path, scaler, {"serving": 1, "starting": 1, "draining": 0}, 1.7e9)
    assert json.loads((tmp_path / "supervisor.json").read_text())["serving"] == 1
    text = Metrics(0, tmp_path).render()
    for line in (
        'skylift_replicas{state="serving"} 1',
        'skylift_replicas{state="starting"} 1',
        "skylift_replicas_target 2",
        "skylift_replicas_min 1",
        "skylift_replicas_max 2",
        'skylift_autoscale_decisions_total{direction="up"} 1',
        "skylift_autoscale_queue_wait_seconds 0.005",
        'skylift_autoscale_last_decision_timestamp_seconds{direction="up",from="1",'
        'rule="queue_wait",to="2"} 1700000000.0',
        "# TYPE skylift_autoscale_decisions_total counter",
    ):
        assert line in text.splitlines(), line
    assert text.count("# TYPE skylift_replicas gauge") == 1
    assert "skylift_replicas" not in Metrics(0, None).render()  # no state folder, no supervisor


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"replicas": 3, "max_replicas": 2}, "--replicas MIN:MAX needs MIN <= MAX, got 3:2"),
        ({"max_replicas": -1}, "--replicas MIN:MAX needs MIN <= MAX"),
        ({"scale_up_wait_ms": 0.0}, "--scale-up-wait-ms must be a number > 0, got 0.0"),
        ({"scale_up_wait_ms": float("nan")}, "--scale-up-wait-ms must be a number > 0"),
        ({"scale_down_idle_s": -1.0}, "--scale-down-idle-s must be a number > 0"),
        ({"scale_down_idle_s": float("inf")}, "--scale-down-idle-s must be a number > 0"),
        ({"scale_up_rows": -1}, "--scale-up-rows must be >= 0, got -1"),
    ],
)
def test_bad_autoscaling_settings_are_refused(
    tmp_path: Path, settings: dict[str, float], message: str
) -> None:
    config = ServeConfig(models=("m",), home=tmp_path, state_dir=tmp_path, no_auth=True, **settings)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="^" + message):
        config.check()


def test_a_range_autoscales_and_a_single_count_does_not(tmp_path: Path) -> None:
    base = {"models": ("m",), "home": tmp_path, "state_dir": tmp_path, "no_auth": True}
    assert ServeConfig(**base, replicas=1, max_replicas=4).autoscales  # type: ignore[arg-type]
    assert not ServeConfig(**base, replicas=2, max_replicas=2).autoscales  # type: ignore[arg-type]
    assert not ServeConfig(**base, replicas=2).autoscales  # type: ignore[arg-type]
    ServeConfig(**base, replicas=1, max_replicas=4).check()  # type: ignore[arg-type]
