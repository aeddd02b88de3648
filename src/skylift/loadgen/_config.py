"""What a load test runs: the validated configuration and the server it targets."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import quote, urlsplit

from skylift._cpus import usable_cores
from skylift.errors import SpecError

Protocol = Literal["v2-json", "v2-binary", "v1", "openai-completions", "openai-chat"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
OPENAI_PROTOCOLS = ("openai-completions", "openai-chat")
"""Streamed generation (skylift.loadgen._openai): TTFT, inter-token latency, tokens/s."""

FILE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".json": "application/json",
}
"""The Content-Type of a --body-file, by its extension."""
MAX_CONCURRENCY = 10_000  # open sockets; past this the client's file-descriptor limit bites first
MAX_ROWS = 100_000
MAX_TOKENS = 1 << 20  # --max-tokens and --prompt-tokens: far beyond any context


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port and the path prefix of the server's routes."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The `Host` header value."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def route(self, protocol: Protocol, model: str) -> str:
        """The inference path for `protocol` (KServe V2 infer, or TF-Serving `:predict`)."""
        m = quote(model, safe="")
        if protocol == "openai-completions":
            return f"{self.prefix}/v1/completions"
        if protocol == "openai-chat":
            return f"{self.prefix}/v1/chat/completions"
        if protocol == "v1":
            return f"{self.prefix}/v1/models/{m}:predict"
        return f"{self.prefix}/v2/models/{m}/infer"

    def metadata_route(self, model: str) -> str:
        return f"{self.prefix}/v2/models/{quote(model, safe='')}"


def parse_url(url: str) -> Target:
    """`http[s]://host[:port][/prefix]` -> Target; anything else is a SpecError naming the fix."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SpecError(f"URL {url!r} is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"URL must look like http://HOST[:PORT] or https://HOST[:PORT], got {url!r}")
    if parts.query or parts.fragment:
        raise SpecError(f"URL must not carry a query or fragment, got {url!r}")
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        prefix=parts.path.rstrip("/"),
    )


def auto_processes(concurrency: int) -> int:
    """Client processes that keep the generator off the critical path: one per 16 connections,
    at most one per usable core. One process costs ~15-20 us of CPU per request, yet a single
    event loop also adds its scheduling delay to every connection: on this 2-core machine at
    concurrency 64, 2 processes gave 23-30k requests/s where 1 gave 16-30k (granian, constant)."""
    cores = usable_cores()
    return max(1, min(cores, math.ceil(concurrency / 16)))


@dataclass(frozen=True)
class BenchConfig:
    """One load test: what to send, how hard, for how long. Validated when built."""

    url: str
    """Base URL of the server, e.g. http://127.0.0.1:8000."""
    model: str
    """Model name in the routes (/v2/models/NAME/infer, /v1/models/NAME:predict)."""
    concurrency: int = 16
    """Requests in flight at once: one keep-alive connection each, closed loop."""
    duration_s: float = 10.0
    """Measured seconds (after the warm-up)."""
    rows: int = 1
    """Rows per request."""
    protocol: Protocol = "v2-json"
    """v2-json (KServe V2 JSON tensors), v2-binary (binary tensor extension) or v1 (TF-Serving)."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as `Authorization: Bearer KEY`; never printed."""
    processes: int | None = None
    """Client processes; None picks `auto_processes(concurrency)`."""
    features: int | None = None
    """Features per row when the server has no V2 metadata route to learn the input shape from."""
    requests: int | None = None
    """Stop after this many measured requests even if `duration_s` has not passed."""
    warmup_s: float = 1.0
    """Seconds of load before measuring starts (connection set-up, server caches, JIT)."""
    timeout_s: float = 30.0
    """A request unanswered after this long counts as a `timeout` error; its connection is reopened."""
    insecure: bool = False
    """https: do not verify the server certificate."""
    cacert: str | None = None
    """https: CA bundle (PEM) to verify the server certificate with."""
    unique: bool = True
    """Give every request a distinct first value so a response cache cannot answer it."""
    repeat: float = 0.0
    """With `unique`: the fraction of requests that repeat one fixed body (one in round(1/repeat))."""
    seed: int = 0
    """Seed of the random input rows."""
    body_file: str | None = None
    """Send this file as every request's body, a plain POST (an image or audio file for a media
    model, or a ready JSON request), instead of generated rows; every body is the same."""
    content_type: str | None = None
    """The Content-Type of `body_file` (default: from its extension, see FILE_TYPES)."""
    max_tokens: int = 64
    """OpenAI protocols: max_tokens of each streamed completion."""
    prompt_tokens: int = 32
    """OpenAI protocols: the prompt's length in the server's tokens (words calibrated against its usage)."""
    ignore_eos: bool = False
    """OpenAI protocols: send vLLM's `ignore_eos: true` (skylift honours it): answers of max_tokens."""

    def __post_init__(self) -> None:
        parse_url(self.url)
        if not 0.0 <= self.repeat <= 1.0:
            raise SpecError(f"--repeat must be a fraction in [0, 1], got {self.repeat}")
        if not self.model:
            raise SpecError("model must be a model name, got ''")
        _at_least("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _at_least("rows", self.rows, 1, MAX_ROWS)
        if self.protocol not in PROTOCOLS:
            raise SpecError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        _seconds("duration_s", self.duration_s, allow_zero=False)
        _seconds("timeout_s", self.timeout_s, allow_zero=False)
        _seconds("warmup_s", self.warmup_s, allow_zero=True)
        if self.processes is not None:
            _at_least("processes", self.processes, 1, 1024)
        if self.features is not None:
            _at_least("features", self.features, 1, 100_000_000)
        if self.requests is not None:
            _at_least("requests", self.requests, 1, 10**12)
        if self.cacert is not None and not os.path.isfile(self.cacert):
            raise SpecError(f"cacert must be a PEM file, got {self.cacert!r} (no such file)")
        if (self.insecure or self.cacert) and not self.url.startswith("https:"):
            raise SpecError("insecure and cacert apply to https:// URLs only")
        if self.protocol in OPENAI_PROTOCOLS:
            self._check_openai()
        if self.body_file is not None:
            self._check_body_file(self.body_file)
        elif self.content_type is not None:
            raise SpecError("content_type applies to a body_file")

    def _check_openai(self) -> None:
        _at_least("max_tokens", self.max_tokens, 1, MAX_TOKENS)
        _at_least("prompt_tokens", self.prompt_tokens, 1, MAX_TOKENS)
        for name, given in (
            ("rows", self.rows != 1),
            ("features", self.features is not None),
            ("repeat", self.repeat > 0),
            ("body_file", self.body_file is not None),
        ):
            if given:
                raise SpecError(f"{name} does not apply to protocol {self.protocol} (it streams text)")

    def _check_body_file(self, path: str) -> None:
        if not os.path.isfile(path):
            raise SpecError(f"body_file must be a file, got {path!r} (no such file)")
        if self.protocol == "v2-binary":
            raise SpecError(
                "body_file is sent as it is: use protocol v2-json (the V2 infer route) or v1 (TF-Serving's)"
            )
        if self.content_type is None and os.path.splitext(path)[1].lower() not in FILE_TYPES:
            raise SpecError(
                f"cannot tell the Content-Type of {path!r} from its extension "
                f"({', '.join(FILE_TYPES)}): pass content_type"
            )

    @property
    def body_type(self) -> str:
        """The Content-Type a body_file is sent with."""
        return self.content_type or FILE_TYPES[os.path.splitext(self.body_file or "")[1].lower()]

    @property
    def target(self) -> Target:
        return parse_url(self.url)


def _at_least(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(f"{name} must be a whole number from {low} to {high:,}, got {value!r}")


def _seconds(name: str, value: object, *, allow_zero: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        raise SpecError(f"{name} must be a number of seconds {'>=' if allow_zero else '>'} 0, got {value!r}")
