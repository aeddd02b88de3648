"""Torch intra-op threads chosen by measured speed, for a thread that calls a model again and again.

Why: on cores shared with other jobs, N intra-op threads can be slower than one, because every
parallel region waits for whichever of its threads another job has descheduled. Measured on 2
cores with one busy process beside `skylift serve`: 16 streams of generation got 490 tokens/s on 2
threads and 720 on 1; MiniLM embeddings 158 and 194 requests/s. On idle cores 2 threads won (1,000
against 780 tokens/s; 291 against 190 requests/s), and one stream was faster on 1 thread either
way. No fixed count is right on a machine whose load changes, so the calling thread measures.

How: calls run at the current count. After FIRST_S, then every PERIOD_S of time spent in calls, a
trial runs ROUNDS rounds of one call at each candidate count (the most, its halvings, down to 1),
interleaved so that a changing load or mix of work reaches every count alike. The count that did
the most work per second of its calls is kept if it beats the current one by MARGIN. Work is what
the caller says a call did (rows, tokens); calls of other sizes average out over the rounds.

Answers do not depend on the count: torch's CPU matmul, attention and norms give the same bits on
1 and 2 threads (tests/unit/test_intraop.py checks it on the installed torch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

FIRST_S = 0.5  # time in calls before the first trial: the first choice comes early
PERIOD_S = 4.0  # time in calls between trials (a trial's calls at a slower count cost ~3% of it)
ROUNDS = 5  # calls at each count in a trial
MARGIN = 1.05  # a count must beat the current one by 5% to replace it (noise stays put)


class ThreadChooser:
    """Runs calls (`run`) on the calling thread at the torch thread count that measures fastest."""

    def __init__(self, most: int, *, first_s: float = FIRST_S, period_s: float = PERIOD_S) -> None:
        self.candidates = tuple(sorted({max(1, most >> k) for k in range(most.bit_length())}, reverse=True))
        self.threads = self.candidates[0]
        """The count calls run at outside trials."""
        self.trials = 0
        self.switches = 0
        self._set = 0  # the count last given to torch by this chooser (0: none yet)
        self.period_s = period_s
        self._due_s = first_s if len(self.candidates) > 1 else float("inf")
        self._plan: list[int] = []  # counts of the trial's calls still to run, last first
        self._work: dict[int, float] = {}
        self._spent: dict[int, float] = {}

    def run(self, work: float, call: Callable[[], T]) -> T:
        """`call()` at the chosen count (or the trial's next one); `work` is what it does (> 0)."""
        n = self._plan[-1] if self._plan else self.threads
        if n != self._set:
            torch.set_num_threads(n)  # the calling thread's OpenMP team, and torch's default
            self._set = n
        start = time.perf_counter()
        out = call()
        self._record(n, work, time.perf_counter() - start)
        return out

    def _record(self, n: int, work: float, seconds: float) -> None:
        if self._plan:
            self._plan.pop()
            self._work[n] += work
            self._spent[n] += seconds
            if not self._plan:
                self._decide()
            return
        self._due_s -= seconds
        if self._due_s <= 0:
            self._plan = [c for _ in range(ROUNDS) for c in self.candidates]
            self._work = dict.fromkeys(self.candidates, 0.0)
            self._spent = dict.fromkeys(self.candidates, 0.0)

    def _decide(self) -> None:
        rate = {n: self._work[n] / self._spent[n] for n in self.candidates if self._spent[n] > 0}
        best = max(rate, key=rate.__getitem__)
        if best != self.threads and rate[best] > MARGIN * rate.get(self.threads, 0.0):
            self.threads = best
            self.switches += 1
        self.trials += 1
        self._due_s = self.period_s
