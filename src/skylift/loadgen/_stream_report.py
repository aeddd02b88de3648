"""The figures of an OpenAI-mode load test: a BenchReport plus time to first token, inter-token
latency, time per output token and tokens per second, merged from every client process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skylift.loadgen._report import BenchReport, Latency

if TYPE_CHECKING:
    from skylift.loadgen._stream_worker import StreamResult


@dataclass(frozen=True, kw_only=True)
class StreamReport(BenchReport):
    """A streamed-generation load test. `latency_ms` is each stream's whole time; `rows` is 1."""

    max_tokens: int
    """max_tokens of each request."""
    target_prompt_tokens: int
    """The prompt length asked for (--prompt-tokens); `prompt_tokens_mean` is what the server counted."""
    prompt_words: int
    """Words per prompt, calibrated against the server's usage to reach `target_prompt_tokens`."""
    ttft_ms: Latency
    """Time to first token: send to the first chunk with text."""
    itl_ms: Latency
    """Inter-token latency: the gaps between consecutive text chunks."""
    tpot_ms: Latency
    """Time per output token after the first, per request: (last chunk - first chunk) / (tokens - 1)."""
    prompt_tokens: int
    """Prompt tokens of the successful requests, as the server counted them (usage)."""
    completion_tokens: int
    """Generated tokens of the successful requests (usage; the end-of-text token included)."""
    tokens_per_s: float
    """completion_tokens per measured second."""
    token_source: str
    """usage (the server's counts), chunks (text chunks counted: it sent no usage) or mixed."""
    probe_tokens: dict[str, int] = field(default_factory=dict)
    """The calibration requests sent before the load (not in the figures): requests, prompt and
    completion tokens, so a server's own counters can be reconciled with the report."""

    @property
    def prompt_tokens_mean(self) -> float | None:
        return self.prompt_tokens / self.ok if self.ok else None

    @property
    def completion_tokens_mean(self) -> float | None:
        return self.completion_tokens / self.ok if self.ok else None

    def to_dict(self) -> dict[str, Any]:
        means = {"prompt_tokens_mean": self.prompt_tokens_mean}
        return {**super().to_dict(), **means, "completion_tokens_mean": self.completion_tokens_mean}


def merge_streams(
    results: Sequence[StreamResult],
    *,
    url: str,
    model: str,
    protocol: str,
    concurrency: int,
    measure_from: float,
    max_tokens: int,
    target_prompt_tokens: int,
    prompt_words: int,
    probe_tokens: dict[str, int],
    request_bytes: int = 0,
) -> StreamReport:
    """One report from every process's result; the duration ends with the last measured stream."""
    import numpy as np

    def seconds(attr: str) -> np.ndarray:
        arrays = [np.frombuffer(getattr(r, attr), dtype=np.float64) for r in results]
        return np.concatenate(arrays) if arrays else np.zeros(0)

    statuses: dict[int, int] = {}
    failures: dict[str, int] = {}
    samples: dict[str, str] = {}
    for r in results:
        for code, n in r.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
        for kind, n in r.failures.items():
            failures[kind] = failures.get(kind, 0) + n
        for key, text in r.samples.items():
            samples.setdefault(key, text)
    duration = max((r.measured_until for r in results), default=measure_from) - measure_from
    duration = max(duration, 1e-9)
    responses = sum(statuses.values())
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    errors = {str(code): n for code, n in sorted(statuses.items()) if not 200 <= code < 300}
    errors.update(sorted(failures.items()))
    completion = sum(r.completion_tokens for r in results)
    counted = sum(r.counted_chunks for r in results)
    return StreamReport(
        url=url,
        model=model,
        protocol=protocol,
        rows=1,
        concurrency=concurrency,
        processes=len(results),
        duration_s=round(duration, 6),
        requests=responses + sum(failures.values()),
        ok=ok,
        requests_per_s=responses / duration,
        ok_per_s=ok / duration,
        rows_per_s=ok / duration,
        latency_ms=Latency.of(seconds("latencies")),
        statuses={str(code): n for code, n in sorted(statuses.items())},
        errors=errors,
        error_samples={k: v for k, v in samples.items() if k in errors},
        request_bytes=request_bytes,
        client_loop=results[0].loop if results else "asyncio",
        client_cpu=[round(r.cpu_s / duration, 3) for r in results],
        max_tokens=max_tokens,
        target_prompt_tokens=target_prompt_tokens,
        prompt_words=prompt_words,
        ttft_ms=Latency.of(seconds("ttfts")),
        itl_ms=Latency.of(seconds("itls")),
        tpot_ms=Latency.of(seconds("tpots")),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=completion,
        tokens_per_s=completion / duration,
        token_source="usage" if counted == 0 else ("chunks" if counted == ok else "mixed"),
        probe_tokens=probe_tokens,
    )
