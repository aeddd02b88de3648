"""Who runs next: waiting (FIFO) -> running (a KV-cache slot each) -> finished, a token budget per step.

Each step every running sequence that is past its prompt decodes one token, and the budget left
goes to prompt chunks of the sequences still prefilling, oldest first: a long prompt is read over
several steps, so running streams wait at most one step of `max_step_tokens` tokens for it.
Running sequences hold slots [0, R) with no holes: when one leaves, the last moves into its slot,
so decode attention reads one contiguous range of the cache.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from skylift.generation._handle import Handle
    from skylift.generation._params import SamplingParams
    from skylift.generation._text import TextStream

FinishReason = Literal["stop", "length", "deadline", "cancelled"]


@dataclass(eq=False)
class Sequence:
    """One request's state; the engine thread owns it (the caller only sets handle.cancelled)."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    handle: Handle
    submitted: float
    """time.monotonic() at submit."""
    deadline: float
    """time.monotonic() after which it finishes with "deadline"; inf for none."""
    generator: torch.Generator | None
    text: TextStream
    slot: int = -1
    order: int = 0
    """Admission number: older sequences prefill first."""
    cached: int = 0
    """Positions held in the KV cache."""
    next_token: int = 0
    """The last sampled token, fed to the model at the next step."""
    generated: int = 0
    last_token_at: float = 0.0
    unsent: list[int] = field(default_factory=list)
    """Sampled ids not yet in an event."""

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)


@dataclass(frozen=True)
class Plan:
    decode: list[Sequence]
    """One new token each, ascending by slot."""
    chunks: list[tuple[Sequence, int, int]]
    """(sequence, start, count) of prompt tokens."""


class Scheduler:
    """The queues and the per-step plan. `wake` guards `waiting`, which submit appends to from the
    caller's thread; everything else runs on the engine thread."""

    def __init__(
        self, slots: int, max_waiting: int, max_step_tokens: int, move: Callable[[int, int, int], None]
    ) -> None:
        self.max_running, self.max_waiting, self.max_step_tokens = slots, max_waiting, max_step_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        """Index i holds the sequence in cache slot i."""
        self.wake = threading.Condition()
        self._move = move
        self._admitted = 0

    def reap(self, now: float) -> list[tuple[Sequence, FinishReason]]:
        """Take out the waiting sequences that were cancelled or ran out of time; name the running ones."""
        gone: list[tuple[Sequence, FinishReason]] = []
        with self.wake:
            if any(s.handle.cancelled or s.deadline <= now for s in self.waiting):
                kept = deque[Sequence]()
                for s in self.waiting:
                    reason = _ended(s, now)
                    if reason is None:
                        kept.append(s)
                    else:
                        gone.append((s, reason))
                self.waiting = kept
        for s in self.running:
            reason = _ended(s, now)
            if reason is not None:
                gone.append((s, reason))
        return gone

    def admit(self) -> None:
        """Give free slots to the oldest waiting sequences."""
        with self.wake:
            while self.waiting and len(self.running) < self.max_running:
                seq = self.waiting.popleft()
                seq.slot, seq.order = len(self.running), self._admitted
                self._admitted += 1
                self.running.append(seq)

    def plan(self) -> Plan | None:
        """This step's work: every decoding sequence, then prompt chunks up to the token budget."""
        decode = [s for s in self.running if not s.prefilling]
        budget = self.max_step_tokens - len(decode)
        chunks = []
        for seq in sorted((s for s in self.running if s.prefilling), key=lambda s: s.order):
            if budget <= 0:
                break
            count = min(len(seq.prompt) - seq.cached, budget)
            chunks.append((seq, seq.cached, count))
            budget -= count
        return Plan(decode, chunks) if decode or chunks else None

    def release(self, seq: Sequence) -> None:
        """Free a running sequence's slot; the last running sequence moves into it."""
        slot, last = seq.slot, len(self.running) - 1
        if slot < 0:
            return
        if slot != last:
            moved = self.running[last]
            self._move(last, slot, moved.cached)
            self.running[slot], moved.slot = moved, slot
        self.running.pop()
        seq.slot = -1


def _ended(seq: Sequence, now: float) -> FinishReason | None:
    if seq.handle.cancelled:
        return "cancelled"
    return "deadline" if seq.deadline <= now else None
