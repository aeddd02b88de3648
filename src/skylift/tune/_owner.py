"""Who runs a trial, and whether that process is still alive: how a dead driver's trials are found."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

OWNER = "skylift:owner"
BEAT = "skylift:heartbeat"
RETRY_OF = "retry_of"
# 15 s between heartbeats; a trial on another machine whose driver has been silent for 8 of them
# is taken as dead. A trial on this machine is dead as soon as its driver process is.
HEARTBEAT_S = 15.0
GRACE_S = 120.0


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: tells a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def me() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _alive_here(owner: str) -> bool | None:
    """True/False for an owner on this machine, None for one elsewhere (only heartbeats tell)."""
    host, pid_text, ticks = ([*owner.rsplit(":", 2), "", ""])[:3]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    return _start_ticks(pid) == ticks if ticks != "None" else Path(f"/proc/{pid}").exists()


def is_stale(t: FrozenTrial, now: float | None = None) -> bool:
    """A RUNNING trial whose driver died: dead process on this machine, or no heartbeat for GRACE_S."""
    owner = t.system_attrs.get(OWNER)
    beat = t.system_attrs.get(BEAT)
    if owner is None:  # asked but never claimed: its driver died between ask and launch
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        return (now or time.time()) - started > GRACE_S
    alive = _alive_here(str(owner))
    if alive is not None:
        return not alive
    return (now or time.time()) - float(beat or 0.0) > GRACE_S


def reclaim(study: optuna.Study) -> list[int]:
    """Mark every stale RUNNING trial FAIL and enqueue a retry with its parameters; their numbers.

    Two drivers may race here: marking a finished trial raises, so exactly one of them retries it.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    reclaimed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError):
            continue
        study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number}, skip_if_exists=False)
        reclaimed.append(t.number)
    return reclaimed
