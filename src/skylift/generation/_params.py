"""Per-request sampling parameters, validated when built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from skylift.generation._errors import InvalidRequest

MAX_STOPS = 4  # OpenAI's limit on stop strings per request


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; invalid values raise InvalidRequest naming the field and the value."""

    max_tokens: int | None = None
    """New tokens at most; None: as many as the context leaves after the prompt."""
    temperature: float = 1.0
    """0: greedy (argmax); otherwise logits are divided by it before softmax. In [0, 2]."""
    top_p: float = 1.0
    """Nucleus sampling: draw from the smallest set of tokens whose probability reaches top_p. In (0, 1]."""
    stop: Sequence[str] = field(default=())
    """Text that ends the generation; the stop text itself is not returned. A str counts as one."""
    seed: int | None = None
    """Same seed, same prompt, same parameters: same output, whatever else runs in the batch."""
    ignore_eos: bool = False
    """Keep generating past the tokenizer's end-of-text token (benchmarks: a fixed output length)."""

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            raise InvalidRequest(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequest(f"temperature must be in [0, 2], got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p!r}")
        if len(stop) > MAX_STOPS:
            raise InvalidRequest(f"stop takes at most {MAX_STOPS} strings, got {len(stop)}")
        if not all(isinstance(s, str) and s for s in stop):
            raise InvalidRequest(f"stop strings must be non-empty strings, got {list(stop)!r}")
        if self.seed is not None and not -(2**63) <= self.seed < 2**64:
            raise InvalidRequest(f"seed must fit in 64 bits, got {self.seed!r}")
