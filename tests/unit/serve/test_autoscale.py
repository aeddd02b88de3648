"""The autoscaling policy, fed by hand: when it scales up and down, how far, and when it holds still."""

from __future__ import annotations

import pytest

from skylift.errors import SpecError
from skylift.serve.autoscale import (
    DOWN_FRACTION,
    TICK_S,
    Autoscaler,
    Limits,
    Load,
    Observation,
    Sample,
    most_replicas,
    parse_replicas,
    pool_load,
    replica_load,
)

LIMITS = Limits(low=1, high=4, up_wait_s=0.010, up_rows=128, down_idle_s=30.0)
BUSY = Load(wait_s=0.015, queued_rows=10)  # 15 ms > 10 ms
CALM = Load(wait_s=0.001, queued_rows=0)  # far under half of both targets
MIDDLING = Load(wait_s=0.007, queued_rows=0)  # under the target, over half of it


def _run(
    scaler: Autoscaler, start: float, seconds: float, load: Load | None, serving: int, starting: int = 0
) -> list[tuple[float, int, int]]:
    """Observe every TICK_S for `seconds`; (time, before, after) of each decision."""
    out = []
    t = start
    while t < start + seconds:
        decision = scaler.observe(Observation(t, serving, starting, load))
        if decision is not None:
            out.append((t, decision.before, decision.after))
        t += TICK_S
    return out


def test_a_sustained_queue_wait_scales_up_after_one_window() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    decisions = _run(scaler, 0.0, 5.0, BUSY, serving=1)
    assert decisions == [(2.0, 1, 2)]  # one window after the pool's last change, and once only
    assert scaler.target == 2 and scaler.counts == {"up": 1, "down": 0}
    last = scaler.last
    assert last is not None and last.rule == "queue_wait" and last.direction == "up"
    assert "queue wait 15.0 ms > 10 ms over 2 s" in last.reason


def test_no_decision_while_the_new_replica_starts_then_a_fresh_window() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    _run(scaler, 0.0, 2.5, BUSY, serving=1)
    assert _run(scaler, 2.5, 5.0, BUSY, serving=1, starting=1) == []  # loading: no second replica yet
    # Serving from t=7.5: the clock restarts, so the next scale-up waits for a window of 2 replicas.
    assert _run(scaler, 7.5, 3.0, BUSY, serving=2) == [(9.5, 2, 3)]


def test_scale_up_is_proportional_at_most_doubling_and_capped_at_max() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    swamped = Load(wait_s=0.100, queued_rows=0)  # 10x the target
    assert _run(scaler, 0.0, 2.5, swamped, serving=1) == [(2.0, 1, 2)]  # not 10: at most doubling
    assert _run(scaler, 3.0, 2.5, swamped, serving=2) == [(5.0, 2, 4)]
    assert _run(scaler, 6.0, 10.0, swamped, serving=4) == []  # MAX reached
    slightly = Autoscaler(Limits(low=4, high=16, up_wait_s=0.010, up_rows=128, down_idle_s=30), 0.0)
    assert _run(slightly, 0.0, 2.5, Load(0.016, 0), serving=4) == [(2.0, 4, 7)]  # ceil(4 x 1.6)


def test_queued_rows_alone_scale_up() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    assert _run(scaler, 0.0, 2.5, Load(wait_s=0.002, queued_rows=300), serving=1) == [(2.0, 1, 2)]
    last = scaler.last
    assert last is not None and last.rule == "queue_rows"
    assert "300 queued rows per replica > 128" in last.reason


def test_idle_for_the_idle_period_scales_down_one_at_a_time_never_below_min() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    scaler.target = 3
    decisions = _run(scaler, 0.0, 29.5, CALM, serving=3)
    assert decisions == []
    assert _run(scaler, 29.5, 1.0, CALM, serving=3) == [(30.0, 3, 2)]
    last = scaler.last
    assert last is not None and last.rule == "idle" and last.direction == "down"
    # The drained replica leaves at once: a new idle period starts from there.
    assert _run(scaler, 30.5, 40.0, CALM, serving=2) == [(60.5, 2, 1)]
    assert _run(scaler, 71.0, 100.0, CALM, serving=1) == []  # MIN


def test_a_busy_window_restarts_the_idle_clock_and_the_middle_band_holds_still() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    scaler.target = 2
    assert _run(scaler, 0.0, 20.0, CALM, serving=2) == []
    assert _run(scaler, 20.0, 1.0, MIDDLING, serving=2) == []  # over half the target: not idle
    assert _run(scaler, 21.0, 29.5, CALM, serving=2) == []
    assert _run(scaler, 50.5, 1.0, CALM, serving=2) == [(51.0, 2, 1)]
    assert MIDDLING.wait_s > DOWN_FRACTION * LIMITS.up_wait_s
    steady = Autoscaler(LIMITS, now=0.0)
    assert _run(steady, 0.0, 120.0, MIDDLING, serving=1) == []  # neither up nor down


def test_no_load_yet_and_a_fixed_count_never_decide() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    assert _run(scaler, 0.0, 60.0, None, serving=1) == []
    fixed = Autoscaler(Limits(low=2, high=2, up_wait_s=0.010, up_rows=128, down_idle_s=1.0), 0.0)
    assert _run(fixed, 0.0, 10.0, Load(1.0, 1e6), serving=2) == []
    assert _run(fixed, 10.0, 60.0, CALM, serving=2) == []


def test_a_replica_that_dies_pauses_decisions_until_it_is_back() -> None:
    scaler = Autoscaler(LIMITS, now=0.0)
    scaler.target = 2
    assert _run(scaler, 0.0, 25.0, CALM, serving=2) == []
    assert _run(scaler, 25.0, 10.0, CALM, serving=1, starting=1) == []  # restarting: no scale-down
    assert _run(scaler, 35.0, 29.5, CALM, serving=2) == []  # the idle period starts again
    assert _run(scaler, 64.5, 1.0, CALM, serving=2) == [(65.0, 2, 1)]


def test_replica_load_little_law_and_loop_lag() -> None:
    first = Sample(t=100.0, probes=1000, lag_s=1.0, queued_rows=5000.0, rows=10_000)
    # 2 s, 100 probes: mean lag 2 ms, mean 30 queued rows, 6000 rows/s -> batcher wait 5 ms.
    last = Sample(t=102.0, probes=1100, lag_s=1.2, queued_rows=8000.0, rows=22_000)
    load = replica_load(first, last)
    assert load is not None
    assert load.wait_s == pytest.approx(0.002 + 30 / 6000)
    assert load.queued_rows == pytest.approx(30)
    stuck = Sample(t=102.0, probes=1100, lag_s=1.0, queued_rows=5500.0, rows=10_000)
    assert replica_load(first, stuck) == Load(wait_s=2.0, queued_rows=5.0)  # waited the whole window
    idle = Sample(t=102.0, probes=1100, lag_s=1.0, queued_rows=5000.0, rows=10_000)
    assert replica_load(first, idle) == Load(0.0, 0.0)
    assert replica_load(first, first) is None


def test_pool_load_is_the_plain_mean_over_replicas() -> None:
    assert pool_load([]) is None
    assert pool_load([Load(0.020, 100), Load(0.0, 0)]) == Load(0.010, 50)


@pytest.mark.parametrize(("text", "bounds"), [("2", (2, 2)), ("1:4", (1, 4)), (" 3:3 ", (3, 3))])
def test_parse_replicas(text: str, bounds: tuple[int, int]) -> None:
    assert parse_replicas(text) == bounds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4:2", "--replicas MIN:MAX needs MIN <= MAX, got '4:2'"),
        ("0", "--replicas must be >= 1, got '0'"),
        ("0:2", "--replicas must be >= 1"),
        ("-1", "--replicas must be >= 1"),
        ("1:-2", "--replicas must be >= 1"),
        ("abc", "--replicas must be N or MIN:MAX"),
        ("1:", "--replicas must be N or MIN:MAX"),
        ("1:2:3", "--replicas must be N or MIN:MAX"),
        ("1.5", "--replicas must be N or MIN:MAX"),
        ("", "--replicas must be N or MIN:MAX"),
    ],
)
def test_parse_replicas_refuses_bad_input_in_one_line(text: str, message: str) -> None:
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(")) as err:
        parse_replicas(text)
    assert "\n" not in str(err.value)


def test_max_is_capped_at_the_cores_unless_told() -> None:
    assert most_replicas(1, 8, cores=2, oversubscribe=False) == 2
    assert most_replicas(1, 8, cores=2, oversubscribe=True) == 8
    assert most_replicas(1, 2, cores=16, oversubscribe=False) == 2
    assert most_replicas(4, 8, cores=2, oversubscribe=False) == 4  # MIN is a promise: never below it
