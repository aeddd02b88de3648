"""One tuning study shared through PostgreSQL by `skylift tune` drivers on two hosts (network
namespaces, see netns.py), each with its own SKYLIFT_HOME: the trials add up to the study's budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE
from tests.integration.netns import hosts
from tests.integration.test_tune_postgres import postgres

READ_TRIALS = """
import json, sys, optuna
storage = optuna.storages.RDBStorage(sys.argv[1])
trials = optuna.load_study(study_name="shared", storage=storage).trials
print(json.dumps([{"number": t.number, "state": t.state.name, "owner": t.system_attrs["skylift:owner"],
                   "run_id": t.user_attrs["run_id"]} for t in trials]))
storage.engine.dispose()
"""


def test_drivers_on_two_hosts_share_one_study(tmp_path: Path) -> None:
    with hosts(2) as (a, b), postgres(a.address, a.cmd()) as url:
        args = [
            "tune",
            str(EXAMPLE),
            "--study",
            "shared",
            "--storage",
            url,
            "--trials",
            "4",
            "--parallel",
            "1",
        ]
        args += ["--set", "train.epochs=1", "--sampler", "random", "--pruner", "none"]
        drivers = [
            subprocess.Popen(
                host.cmd("env", f"SKYLIFT_HOME={tmp_path / host.ns}", sys.executable, "-m", "skylift", *args),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for host in (a, b)
        ]
        outs = [d.communicate(timeout=600)[0] for d in drivers]
        assert [d.returncode for d in drivers] == [0, 0], outs
        assert all("pw@" not in out for out in outs)  # the password is never printed
        read = b.run(sys.executable, "-c", READ_TRIALS, url)  # the database is only reachable in there
        assert read.returncode == 0, read.stderr
        trials = json.loads(read.stdout)
    assert [t["number"] for t in trials] == list(range(len(trials)))  # no duplicate, no gap
    assert 4 <= len(trials) <= 5 and all(t["state"] == "COMPLETE" for t in trials)
    for host, driver in zip((a, b), drivers, strict=True):  # both hosts ran trials and keep their runs
        runs = [t["run_id"] for t in trials if t["owner"].rsplit(":", 2)[1] == str(driver.pid)]
        assert runs and all((tmp_path / host.ns / "runs" / r / "summary.json").is_file() for r in runs)
