"""Two `skylift tune` processes share one study in a real PostgreSQL: the trials add up."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna
import pytest

from skylift.registry import Registry
from tests.conftest import EXAMPLE, free_port
from tests.integration.test_tune import _finish, _skylift


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextlib.contextmanager
def postgres(listen: str = "127.0.0.1", inside: Sequence[str] = ()) -> Iterator[str]:
    """A throwaway cluster on a free port of `listen` (run under the command prefix `inside`, e.g.
    `ip netns exec NS`), as the postgres user when we are root; yields its URL, password "pw"."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (scripts/test installs it)")
    as_user: list[str] = [*inside]
    data = Path(tempfile.mkdtemp(prefix="skylift-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(data, "postgres")
        as_user += ["runuser", "-u", "postgres", "--"]
    port = free_port()
    cluster = data / "db"
    (data / "pw").write_text("pw\n")
    try:
        init = [initdb, "-D", str(cluster), "-U", "postgres", f"--pwfile={data / 'pw'}", "--auth-local=trust"]
        subprocess.run([*as_user, *init, "--auth-host=scram-sha-256"], check=True, capture_output=True)
        with (cluster / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.77.0.0/16 scram-sha-256\n")  # the multi-host tests' subnet
        opts = f"-p {port} -k {data} -c listen_addresses={listen} -c fsync=off"
        start = [pg_ctl, "-D", str(cluster), "-o", opts, "-w", "-l", str(data / "log"), "start"]
        subprocess.run([*as_user, *start], check=True, capture_output=True)
        yield f"postgresql://postgres:pw@{listen}:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(cluster), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres() as url:
        yield url


def test_two_drivers_share_one_postgres_study(home: Path, postgres_url: str) -> None:
    args = ["tune", str(EXAMPLE), "--study", "shared", "--storage", postgres_url, "--trials", "3"]
    args += ["--parallel", "1", "--set", "train.epochs=1", "--sampler", "random", "--pruner", "none"]
    a, b = _skylift(home, *args), _skylift(home, *args)
    (code_a, out_a), (code_b, out_b) = _finish(a), _finish(b)
    assert code_a == 0 and code_b == 0, out_a + out_b
    assert "pw" not in out_a  # the password is never printed

    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).trials
    finally:
        storage.engine.dispose()
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # no duplicate, no gap
    # The budget is the study's: 3 in total, one over at most when both drivers ask at once.
    assert 3 <= len(trials) <= 4
    assert all(t.state.name == "COMPLETE" for t in trials)  # no trial lost
    owners = [t.system_attrs["skylift:owner"].rsplit(":", 2)[1] for t in trials]
    assert set(owners) == {str(a.pid), str(b.pid)}  # both drivers did work
    run_ids = [t.user_attrs["run_id"] for t in trials]
    assert len(set(run_ids)) == len(run_ids)
    assert all((home / "runs" / r / "summary.json").is_file() for r in run_ids)
    # The driver that ends first registers the best so far; the other registers again only when
    # one of its trials turned out better. The last registration is the study's best.
    lines = {line for line in (out_a + out_b).splitlines() if line.startswith("registered model")}
    assert 1 <= len(lines) <= 2
    best = json.loads((home / "studies" / "shared" / "best.json").read_text())
    assert best["value"] == max(t.value for t in trials)
    info = Registry(home).info(best["registered"])
    assert info["lineage"]["study"] == "shared" and info["lineage"]["trial"] == best["trial"]
    assert best["registered"] == f"mnist-mlp:{len(lines)}"
