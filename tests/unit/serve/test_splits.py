"""Traffic splits, guards, shadows and rollouts in-process: parsing, picking, judging, comparing."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from skylift.errors import SpecError
from skylift.serve.config import ServeConfig
from skylift.serve.guard import Guard, Window
from skylift.serve.metrics import Metrics
from skylift.serve.rollout import Rollout, from_flags
from skylift.serve.runtimes import Context
from skylift.serve.runtimes.classifier import Classifier
from skylift.serve.shadow import AGREEMENT, Shadow, ShadowSpec, ShadowStats
from skylift.serve.splits import BUCKETS, Picker, Split, bucket
from skylift.serve.traffic import Traffic, VersionStats, publish

# -- splits ---------------------------------------------------------------------------------------


def test_a_split_reads_from_the_flag_and_the_admin_json_alike() -> None:
    flag = Split.parse("2=10, 1=90", sticky_header="X-Session", guard=Guard.parse("error_rate<0.05"))
    admin = Split.from_json(
        {"weights": {"1": 90, "2": 10}, "sticky_header": "x-session", "guard": {"error_rate": 0.05}}
    )
    assert flag == admin and flag.weights == ((1, 90), (2, 10)) and flag.sticky_header == "x-session"
    assert flag.stable == 1 and flag.canaries() == (2,) and flag.describe() == "1=90,2=10"
    assert Split.from_json(flag.to_json()) == flag


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1=90,2=20", "split weights must sum to 100, got 110 (1=90,2=20)"),
        ("1=90", "must sum to 100, got 90"),
        ("1=50,1=50", "names version 1 twice"),
        ("1=90,x=10", "--split: cannot read 'x=10'"),
        ("1=90,2=-10", "cannot read '2=-10'"),
        ("0=100", "split version must be a positive whole number, got 0"),
        ("1=101,2=0", "must be a whole percent, got 101"),
        ("", "cannot read ''"),
    ],
)
def test_bad_split_flags_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        Split.parse(text)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"weights": {}}, "weights must be an object"),
        ({"weights": {"1": 90.5, "2": 9.5}}, "must be a whole percent, got 90.5"),
        ({"weights": {"1": True, "2": 99}}, "must be a whole percent, got True"),
        ({"weights": {"one": 100}}, "'one' is not a version number"),
        ({"weights": {"1": 100}, "sticky": "x"}, "unknown field 'sticky'"),
        ({"weights": {"1": 100}, "sticky_header": "X Session"}, "is not an HTTP header name"),
        ({"weights": {"1": 100}, "guard": {"error_rate": 2}}, "error_rate must be in (0, 1]"),
        ({"weights": {"1": 100}, "guard": {"p99": 2}}, "guard: unknown field 'p99'"),
        ({"weights": {"1": 100}, "guard": {}}, "a guard needs error_rate and/or p99_ms"),
        ({"weights": {"1": 100}, "guard": {"p99_ms": "fast"}}, "guard p99_ms must be a number"),
    ],
)
def test_bad_admin_splits_name_the_problem(body: Any, message: str) -> None:
    with pytest.raises(SpecError) as exc:
        Split.from_json(body)
    assert message in str(exc.value)


def test_a_rollback_moves_the_canary_weight_to_the_stable_version() -> None:
    split = Split.parse("1=70,2=20,3=10")
    assert split.without(3).weights == ((1, 80), (2, 20), (3, 0))
    assert split.without(3).without(2).canaries() == ()


def test_random_picks_follow_the_weights() -> None:
    picker = Picker(Split.parse("1=90,2=10"), {1: "v1", 2: "v2"})
    counts = Counter(picker.pick([]) for _ in range(20_000))
    # 10% of 20,000: sd = sqrt(20000 * 0.1 * 0.9) = 42; 5 sd either way
    assert abs(counts["v2"] - 2000) < 5 * 43 and counts["v1"] + counts["v2"] == 20_000


def test_sticky_picks_are_stable_and_a_ramp_only_moves_sessions_onto_the_canary() -> None:
    targets = {1: "v1", 2: "v2"}
    at10 = Picker(Split.parse("1=90,2=10", sticky_header="X-Session"), targets)
    at30 = Picker(Split.parse("1=70,2=30", sticky_header="X-Session"), targets)
    sessions = [f"user-{i}".encode() for i in range(2000)]
    first = {s: at10.pick([(b"x-session", s)]) for s in sessions}
    assert all(at10.pick([(b"x-session", s)]) == v for s, v in first.items())
    assert abs(sum(v == "v2" for v in first.values()) - 200) < 5 * 14  # ~10% of sessions
    later = {s: at30.pick([(b"x-session", s)]) for s in sessions}
    assert all(later[s] == "v2" for s, v in first.items() if v == "v2")
    assert sum(v == "v2" for v in later.values()) > sum(v == "v2" for v in first.values())
    assert {at10.pick([(b"other", b"x")]) for _ in range(200)} == {"v1", "v2"}  # no header: random


def test_the_sticky_bucket_is_pinned() -> None:
    # SHA-256 of the value: the same in every replica, after restarts, and across skylift releases.
    assert [bucket(v) for v in (b"alice", b"bob", b"")] == [7, 50, 52]
    assert all(0 <= bucket(str(i).encode()) < BUCKETS for i in range(1000))


# -- guards ---------------------------------------------------------------------------------------


def test_guard_flags() -> None:
    guard = Guard.parse("error_rate<0.05, p99_ms<200, window_s=10, min_requests=5")
    assert guard == Guard(0.05, 200.0, 10.0, 5)
    assert Guard.from_json(guard.to_json()) == guard
    assert guard.describe() == "error_rate<0.05,p99_ms<200,window_s=10,min_requests=5"
    for text, message in (
        ("latency<3", "unknown budget 'latency'"),
        ("error_rate=0.05", "write error_rate<0.05"),
        ("window_s<3,p99_ms<1", "write window_s=3"),
        ("min_requests=2.5,p99_ms<1", "min_requests must be a whole number"),
        ("p99_ms<nan", "p99_ms must be a number"),
        ("window_s=10", "a guard needs error_rate and/or p99_ms"),
        ("error_rate", "cannot read 'error_rate'"),
    ):
        with pytest.raises(SpecError) as exc:
            Guard.parse(text)
        assert message in str(exc.value), text


def test_a_window_judges_the_error_rate_only_after_min_requests_and_forgets_old_answers() -> None:
    window = Window(Guard(error_rate=0.2, window_s=10, min_requests=10))
    for i in range(9):
        window.record(0.001, failed=True, now=100.0 + i * 0.1)
    assert window.verdict(now=101.0) is None  # 9 answers: too few to judge
    window.record(0.001, failed=False, now=101.0)
    assert window.verdict(now=101.0) == "error rate 0.90 over 10 requests > 0.2"
    for i in range(10):
        window.record(0.001, failed=False, now=112.0 + i * 0.1)
    assert window.verdict(now=113.0) is None  # the failures are older than 10 s


def test_a_window_judges_the_p99() -> None:
    window = Window(Guard(p99_ms=50, min_requests=100))
    for i in range(100):
        window.record(0.2 if i == 0 else 0.01, failed=False, now=1.0)
    assert window.verdict(now=1.0) is None  # one slow answer in 100 is the 1%
    window.record(0.3, failed=False, now=1.0)
    assert window.verdict(now=1.0) == "p99 200 ms over 101 requests > 50 ms"
    assert window.verdict(now=1.0, latency=False) is None


# -- rollouts -------------------------------------------------------------------------------------


def test_rollouts_from_the_command_line() -> None:
    (one,) = from_flags(["mnist-mlp@production"], ["1=90,2=10"], ["3"], "error_rate<0.1", "X-Session")
    assert one.model == "mnist-mlp" and one.versions == (1, 2, 3)
    assert one.describe() == (
        "split 1=90,2=10 (sticky x-session, guard error_rate<0.1,window_s=30,min_requests=20), "
        "shadow 3 (queue 256)"
    )
    assert Rollout.from_state("mnist-mlp", one.to_json()) == one
    two = from_flags(["a", "b:2"], ["b:2=50,3=50"], ["a:4"])
    assert [(r.model, r.versions) for r in two] == [("b", (2, 3)), ("a", (4,))]


@pytest.mark.parametrize(
    ("refs", "splits", "shadows", "guard", "message"),
    [
        (["m"], [], [], "error_rate<0.1", "--guard applies to a split: give --split too"),
        (["a", "b"], ["1=100"], [], None, "name the model when serving several, e.g. --split a:1=100"),
        (["a"], ["c:1=100"], [], None, "'c' is not a served model (serving a)"),
        (["m"], ["1=50,2=50", "1=100"], [], None, "--split is given twice for m"),
        (["m"], ["1=90,2=10"], ["2"], None, "version 2 of m cannot both take a share of the traffic"),
        (["m"], [], ["x"], None, "--shadow takes a version number, got 'x'"),
    ],
)
def test_bad_rollout_flags(
    refs: list[str], splits: list[str], shadows: list[str], guard: str | None, message: str
) -> None:
    with pytest.raises(SpecError) as exc:
        from_flags(refs, splits, shadows, guard)
    assert message in str(exc.value)


def test_shadow_specs() -> None:
    assert ShadowSpec.from_json({"version": 3, "queue": 8}) == ShadowSpec(3, 8)
    for body, message in (
        ({"queue": 8}, 'such as {"version": 3}'),
        ({"version": 0}, "shadow version must be a whole number >= 1"),
        ({"version": 3, "queue": 0}, "shadow queue must be a whole number >= 1"),
        ({"version": 3, "depth": 1}, "unknown field 'depth'"),
    ):
        with pytest.raises(SpecError) as exc:
            ShadowSpec.from_json(body)
        assert message in str(exc.value)


# -- traffic --------------------------------------------------------------------------------------


def test_traffic_counts_per_version_and_a_guard_fires_once() -> None:
    fired: list[tuple[str, int, int, str]] = []
    split = Split.parse("1=50,2=50", guard=Guard(error_rate=0.5, min_requests=4))
    stats: dict[int, VersionStats] = {}
    traffic = Traffic(Rollout("m", split), "v1", {1: "v1", 2: "v2"}, stats, lambda *a: fired.append(a))
    for status in (200, 200, 500):
        traffic.record(2, status, 0.002)
    assert not fired  # 3 answers: too few
    traffic.record(2, 503, 0.002)
    assert not fired  # 2 of 4 failed: at the budget, not past it
    traffic.record(2, 500, 0.002)
    assert fired == [("m", 2, 50, "error rate 0.60 over 5 requests > 0.5")]
    assert {traffic.pick([]) for _ in range(100)} == {"v1"} and traffic.weights() == {1: 100, 2: 0}
    traffic.record(2, 500, 0.002)  # answers still in flight when it fired: counted, no second rollback
    assert len(fired) == 1
    assert stats[2].requests == {200: 2, 500: 3, 503: 1} and stats[2].errors == 4
    metrics = Metrics(0, None)
    publish(metrics, {("m", 2): stats[2]}, {}, {("m", 1): 100, ("m", 2): 0}, {("m", 2): 1})
    text = metrics.render()
    assert 'skylift_version_requests_total{replica="0",model="m",version="2",status="500"} 3' in text
    assert 'skylift_version_errors_total{replica="0",model="m",version="2"} 4' in text
    assert 'skylift_split_weight{replica="0",model="m",version="2"} 0' in text
    assert 'skylift_rollbacks_total{replica="0",model="m",version="2"} 1' in text
    assert 'skylift_version_request_seconds_count{replica="0",model="m",version="2"} 6' in text


# -- shadows --------------------------------------------------------------------------------------


def test_agreement_by_kind() -> None:
    a = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert AGREEMENT["classifier"](a, np.array([[0.6, 0.4], [0.7, 0.3]])).tolist() == [True, False]
    assert AGREEMENT["regressor"](np.array([[100.0], [0.0]]), np.array([[100.5], [0.01]])).tolist() == [
        True,
        False,
    ]
    assert AGREEMENT["embedder"](a, a * 3).tolist() == [True, True]
    assert AGREEMENT["embedder"](a, a[::-1]).tolist() == [False, False]


def _runtime(tmp_path: Path, module: Any) -> Classifier:
    config = ServeConfig(models=("m",), home=tmp_path, state_dir=tmp_path, no_auth=True)
    loaded = SimpleNamespace(input_shape=(2,), classes=["a", "b"], data={}, module=module)
    return Classifier(Context("m", 2, loaded, config, Metrics(0, None)))  # type: ignore[arg-type]


def test_a_shadow_compares_its_answers_and_drops_copies_past_its_queue(tmp_path: Path) -> None:
    def flipped(x_RS: torch.Tensor) -> torch.Tensor:  # the first column's sign picks the class
        return torch.stack([-x_RS[:, 0], x_RS[:, 0]], dim=1)

    async def go() -> ShadowStats:
        target = _runtime(tmp_path, flipped)
        target.start()
        stats = ShadowStats()
        shadow = Shadow(target, ShadowSpec(2, queue=3), stats, max_rows=64, timeout_s=5)
        shadow.start()
        answers = np.array([[0.0, 1.0]], dtype=np.float32)  # class 1
        for value in (1.0, -1.0, 2.0, 5.0, 6.0):  # the shadow says 1, 0, 1 (then two dropped)
            shadow.offer(np.array([[value, 0.0]], dtype=np.float32), answers)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if stats.rows == 3:
                break
        shadow.stop()
        await target.stop()
        return stats

    stats = asyncio.run(go())
    assert (stats.copies, stats.dropped, stats.rows, stats.agreed, stats.failed) == (3, 2, 3, 2, 0)
    assert sum(stats.latency) == 3 and stats.latency_sum > 0


def test_a_failing_shadow_is_counted_and_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(x_RS: torch.Tensor) -> torch.Tensor:
        if (x_RS != 0).any():  # passes the warm-up (zeros), fails on real inputs
            raise IndexError("index out of range in self")
        return torch.zeros((len(x_RS), 2))

    async def go() -> ShadowStats:
        target = _runtime(tmp_path, broken)
        target.start()
        stats = ShadowStats()
        shadow = Shadow(target, ShadowSpec(2), stats, max_rows=1, timeout_s=5)
        shadow.start()
        for _ in range(3):
            shadow.offer(np.ones((1, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if stats.failed == 3:
                break
        shadow.stop()
        await target.stop()
        return stats

    stats = asyncio.run(go())
    assert (stats.copies, stats.failed, stats.rows) == (3, 3, 0)
    err = capsys.readouterr().err
    assert err.count("shadow m:2 failed: ModelFailed") == 1
