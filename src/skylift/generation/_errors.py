"""What the generation engine raises; the server maps these to HTTP statuses.

SkyliftError
 ├── SpecError
 │    └── InvalidRequest        bad sampling parameters or prompt ids              (400)
 │         └── ContextExceeded  the prompt, or prompt + max_tokens, exceeds the context (400)
 ├── Overloaded
 │    ├── QueueFull             too many requests waiting; `retry_after_s`        (429 / 503)
 │    └── EngineClosed          the engine was closed (model unloaded or swapped)  (503)
 └── GenerationFailed           the model raised while decoding: a bug            (500)
"""

from __future__ import annotations

from skylift.errors import Overloaded, SkyliftError, SpecError


class InvalidRequest(SpecError):
    """A request the engine refuses before queueing it; the message names the field and the value."""


class ContextExceeded(InvalidRequest):
    """The prompt is longer than the context, or the prompt plus max_tokens is."""


class QueueFull(Overloaded):
    """More requests wait than the queue budget allows; retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineClosed(Overloaded):
    """The engine no longer accepts requests (it was closed)."""


class GenerationFailed(SkyliftError):
    """The model raised during a decoding step; every sequence in that step fails with this."""
