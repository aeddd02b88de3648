"""Endpoint records on a home shared by several hosts: names, liveness by pid or by heartbeat, URLs.

Another host's record is data written into the folder (a different `host` field), as a server
there would write it; this host's dead server is a real process that wrote its record and exited.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from skylift import endpoints
from skylift.endpoints import Endpoint

MODELS = {"mnist-mlp": {"ref": "mnist-mlp@production", "version": 2}}


def _mine(home: Path, host: str = "0.0.0.0") -> tuple[Path, Endpoint]:
    path = endpoints.record(home, host, 8123, models=MODELS, replicas=1, auth=True, tls=False)
    assert path is not None
    [found] = [e for e in endpoints.running(home) if e.pid == os.getpid()]
    return path, found


def _write(home: Path, e: Endpoint, age_s: float = 0.0) -> Path:
    """A record as a server elsewhere writes it, last refreshed `age_s` ago."""
    path = home / endpoints.FOLDER / f"{e.id}.json"
    path.write_text(json.dumps(asdict(e)))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _elsewhere(e: Endpoint, host: str, pid: int | None = None) -> Endpoint:
    return replace(e, host=host, boot_id="another-boot", pid=pid or e.pid, url="http://127.0.0.1:9")


def test_a_record_names_its_host_and_the_same_pid_on_two_hosts_does_not_collide(tmp_path: Path) -> None:
    path, mine = _mine(tmp_path)
    assert mine.host == socket.gethostname() and path.name == f"{mine.id}.json"
    assert mine.id.endswith(f"-{os.getpid()}") and endpoints.is_local(mine)
    theirs = _elsewhere(mine, "pod-b/../x")  # same pid; a hostname unfit for a file name
    other = _write(tmp_path, theirs)
    assert other.parent == path.parent and other != path and "/" not in theirs.id
    # another container of this pod: the same hostname and boot, its own pid namespace
    sidecar = replace(mine, pid_ns=(mine.pid_ns or 0) + 1, url="http://127.0.0.1:9")
    _write(tmp_path, sidecar)
    assert {e.id for e in endpoints.running(tmp_path)} == {mine.id, theirs.id, sidecar.id}
    assert json.loads(path.read_text())["url"] == mine.url  # not overwritten


def test_another_hosts_record_is_judged_by_its_heartbeat_never_by_pid_here(tmp_path: Path) -> None:
    _, mine = _mine(tmp_path)
    dead_here = 2**22 + 1  # beyond pid_max: no such process on this host
    fresh = _write(tmp_path, _elsewhere(mine, "pod-fresh", dead_here), age_s=5)
    late = _write(tmp_path, _elsewhere(mine, "pod-late", dead_here), age_s=endpoints.FRESH_S + 30)
    gone = _write(tmp_path, _elsewhere(mine, "pod-gone", dead_here), age_s=endpoints.FORGET_S + 60)
    ahead = _write(tmp_path, _elsewhere(mine, "pod-ahead", dead_here), age_s=-120)  # its clock runs ahead
    listed = {e.host for e in endpoints.running(tmp_path)}
    assert listed == {mine.host, "pod-fresh", "pod-ahead"}
    assert fresh.exists() and ahead.exists()
    assert late.exists()  # skipped, kept: its server may come back from a stall or a clock skew
    assert not gone.exists()
    # A record of this hostname but another boot (or pid namespace) is another process table too.
    rebooted = replace(mine, boot_id="before-the-reboot", pid=dead_here)
    _write(tmp_path, rebooted, age_s=5)
    assert rebooted.id in {e.id for e in endpoints.running(tmp_path)}


def test_a_dead_server_of_this_host_is_deleted_at_once(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from skylift import endpoints; print(endpoints.record("
        "Path(sys.argv[1]), '127.0.0.1', 9, models={}, replicas=1, auth=False, tls=False))"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    path = Path(out.stdout.strip())
    assert path.is_file() and time.time() - path.stat().st_mtime < endpoints.FRESH_S  # fresh, yet dead
    assert endpoints.running(tmp_path) == [] and not path.exists()


def test_a_record_of_an_older_version_is_read_as_this_hosts(tmp_path: Path) -> None:
    folder = tmp_path / endpoints.FOLDER
    folder.mkdir()
    old = {"pid": os.getpid(), "url": "http://127.0.0.1:8123", "models": MODELS, "replicas": 1,
           "auth": True, "tls": False, "started": 1.0, "start_ticks": None}  # fmt: skip
    (folder / f"{os.getpid()}.json").write_text(json.dumps(old))
    [found] = endpoints.running(tmp_path)
    assert found.id == str(os.getpid()) and found.host is None and endpoints.is_local(found)
    assert endpoints.url_from_here(found) == old["url"]
    # and one of a newer version, with fields this one does not know, is read too
    newer = {**old, "pid": 1, "host": "pod-new", "host_url": "http://10.0.0.7:8123", "zone": "b"}
    (folder / "pod-new-1.json").write_text(json.dumps(newer))
    assert {e.id for e in endpoints.running(tmp_path)} == {str(os.getpid()), "pod-new-1"}


def test_a_record_whose_name_does_not_match_its_content_is_skipped(tmp_path: Path) -> None:
    _, mine = _mine(tmp_path)
    forged = _write(tmp_path, _elsewhere(mine, "pod-b"))
    forged.rename(forged.with_name("pod-c-1.json"))
    assert [e.id for e in endpoints.running(tmp_path)] == [mine.id]


def test_urls_loopback_for_this_host_outward_for_others(tmp_path: Path) -> None:
    _, wild = _mine(tmp_path)
    assert wild.url == "http://127.0.0.1:8123" and endpoints.url_from_here(wild) == wild.url
    if wild.host_url is not None:  # a machine with an address other than loopback
        assert wild.host_url.endswith(":8123") and "127.0.0.1" not in wild.host_url
    theirs = _elsewhere(wild, "pod-b")
    assert endpoints.url_from_here(theirs) == wild.host_url  # never its loopback URL
    assert endpoints.url_from_here(replace(theirs, host_url=None)) is None
    _, local = _mine(tmp_path / "other-home", host="127.0.0.1")
    assert local.host_url is None  # bound to loopback: nothing to reach from elsewhere
    _, named = _mine(tmp_path / "named-home", host="10.1.2.3")
    assert named.url == named.host_url == "http://10.1.2.3:8123"


@pytest.mark.slow
def test_a_serving_supervisor_keeps_its_record_fresh(tmp_path: Path) -> None:
    from skylift.spec import load_spec
    from skylift.train import fit
    from tests.conftest import EXAMPLE
    from tests.integration.serve_helpers import running

    home = tmp_path / "home"
    fit(load_spec(EXAMPLE, ["train.epochs=1", "distributed.workers=1"]), home=home, run_id="beat")
    with running(home, "mnist-mlp", "--no-auth", "--replicas", "1"):
        [path] = (home / endpoints.FOLDER).glob("*.json")
        [e] = endpoints.running(home)
        assert path.name == f"{e.id}.json" and e.host == socket.gethostname()
        stale = time.time() - endpoints.FRESH_S - 60  # as a reader elsewhere would skip it
        os.utime(path, (stale, stale))
        deadline = time.monotonic() + endpoints.HEARTBEAT_S + 5
        while path.stat().st_mtime == stale and time.monotonic() < deadline:
            time.sleep(0.2)
        assert time.time() - path.stat().st_mtime < endpoints.FRESH_S, "no heartbeat"
        record = path.read_bytes()
        path.unlink()  # as a reader elsewhere does after FORGET_S without a heartbeat (a long pause)
        deadline = time.monotonic() + endpoints.HEARTBEAT_S + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert path.read_bytes() == record, "the record was not written again"
    assert not path.exists()  # removed at a clean stop
