"""A request's side of the engine: its Handle, the Events it streams, its usage.

The engine thread never touches a Handle's queue: it sends events with loop.call_soon_threadsafe
(`deliver`), so a Handle is only ever read and written on its own event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from skylift.generation._scheduler import FinishReason


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    """Every token sampled, the end-of-text token included."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Event:
    """New tokens of one request. The last event has finish_reason and usage set."""

    token_ids: tuple[int, ...]
    """Ids sampled since the previous event (an end-of-text token is not among them)."""
    text: str
    """Their text; may be empty (a character split over tokens, or text that may start a stop string)."""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Completion:
    """A whole request's output (Handle.collect)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    usage: Usage


class Handle:
    """One request's events: `async for event in handle` on the loop that submitted it."""

    def __init__(self, poke: Callable[[], None], loop: asyncio.AbstractEventLoop, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.cancelled = False
        """Set by cancel(); the engine thread reads it at the next step."""
        self._poke = poke
        self._loop = loop
        self._events: deque[Event] = deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._done = False

    def cancel(self) -> None:
        """Stop generating (a client went away): the slot is free before the next step. The last
        event, if anyone still reads, has finish_reason "cancelled"."""
        if not self.cancelled:
            self.cancelled = True
            self._poke()

    def __aiter__(self) -> Handle:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            await self._waiter
        event = self._events.popleft()
        self._done = event.finish_reason is not None
        return event

    async def collect(self) -> Completion:
        """Read every event; the whole text, ids, finish reason and usage."""
        texts: list[str] = []
        ids: list[int] = []
        async for event in self:
            texts.append(event.text)
            ids += event.token_ids
            if event.finish_reason is not None and event.usage is not None:
                return Completion("".join(texts), tuple(ids), event.finish_reason, event.usage)
        raise AssertionError("the stream ended without a final event")  # pragma: no cover

    def _push(self, item: Event | BaseException) -> None:
        """On the loop thread: queue an event (merged into one not read yet) or an error."""
        if isinstance(item, BaseException):
            self._error = item
        elif self._events and self._events[-1].finish_reason is None:
            last = self._events.pop()
            text = last.text + item.text
            self._events.append(Event(last.token_ids + item.token_ids, text, item.finish_reason, item.usage))
        else:
            self._events.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def deliver(items: list[tuple[Handle, Event | BaseException]]) -> None:
    for handle, item in items:
        handle._push(item)
