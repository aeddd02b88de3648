"""Server configuration: validated once in the supervisor, handed to every replica process."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skylift.errors import SpecError
from skylift.network import is_loopback

if TYPE_CHECKING:
    from skylift.security import MasterKey
    from skylift.serve.rollout import Rollout


@dataclass(frozen=True)
class ServeConfig:
    models: tuple[str, ...]
    """Model references to serve (NAME, NAME:VERSION, NAME@ALIAS)."""
    home: Path
    state_dir: Path
    """Shared by the replicas: repository.json and metrics snapshots."""
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 2
    """Replicas at start; with max_replicas, the fewest that autoscaling keeps."""
    max_replicas: int = 0
    """Most replicas autoscaling may run (0 or `replicas`: a fixed count, no autoscaling)."""
    scale_up_wait_ms: float = 10.0
    """Add replicas when the mean queue wait per request (loop lag + batcher wait) passes this over 2 s."""
    scale_up_rows: int = 0
    """... or when the mean queued rows per replica pass this (0: 2 x max_batch_rows)."""
    scale_down_idle_s: float = 30.0
    """Remove a replica after this long below half of both scale-up targets."""
    oversubscribe: bool = False
    """Let autoscaling run more replicas than the machine has cores."""
    max_batch_rows: int = 64
    max_batch_tokens: int = 8192
    """Tokens per batch of a text model (rows x their length bucket), besides max_batch_rows."""
    max_delay_ms: float = 2.0
    max_queue_rows: int = 4096
    max_running: int = 32
    """Sequences a generator decodes together (each holds a KV-cache slot), per replica."""
    max_waiting: int = 256
    """Generation requests queued for a slot per replica; past it 503 with Retry-After."""
    timeout_ms: int = 30_000
    max_body_mb: float = 16.0
    max_requests: int = 0
    """Recycle a replica after this many requests (0: never)."""
    max_rss_mb: int = 0
    """Recycle a replica whose resident memory passes this (0: never)."""
    no_auth: bool = False
    key_file: str | None = None
    """Registry master key file for encrypted models (default: $SKYLIFT_MASTER_KEY)."""
    threads: int = 1
    """Torch intra-op threads per replica (0 before serve() resolves it: the cores over the replicas)."""
    adapt_threads: bool = False
    """Run each model thread at 1..threads torch threads, whichever measures fastest (skylift._intraop)."""
    runtime: str = "torch"
    """Inference engine: torch (eager) or onnx (onnxruntime over the ONNX export)."""
    keys_path: Path | None = None
    """API key store (default: SKYLIFT_HOME/keys.json or $SKYLIFT_API_KEYS_FILE)."""
    audit_log: Path | None = None
    """JSON lines of admin actions and auth failures (default: SKYLIFT_HOME/audit.log)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cache: str | None = "memory"
    """Response cache: memory (per replica), redis://HOST:PORT/DB (shared), or None."""
    cache_mb: float = 64.0
    """Byte budget of the response cache (0: off)."""
    rate_limit: float = 100.0
    """Requests per second per API key, shared by all replicas (0: no limit); keys may override."""
    rollouts: tuple[Rollout, ...] = ()
    """Traffic splits and shadows at start (--split, --shadow, --guard, --sticky-header)."""
    token_limit: float = 0.0
    """Generation tokens (prompt + completion) per minute per API key, shared by all replicas
    (0: no limit); keys may override."""
    forwarded_allow_ips: tuple[str, ...] = ()
    """Peers (IPs, CIDR networks, or "*") whose X-Forwarded-For / X-Forwarded-Proto are believed
    (empty: forwarded headers are ignored); see parse_forwarded_allow_ips."""
    root_path: str = ""
    """Path prefix a reverse proxy forwards unstripped, e.g. /ml ("": none); see parse_root_path."""

    @property
    def autoscales(self) -> bool:
        return self.max_replicas > self.replicas

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def master_key(self) -> MasterKey | None:
        from skylift.security import master_key_from_env

        return master_key_from_env(self.key_file)

    def check(self) -> None:
        """Raise SpecError on a setting that cannot work; called before anything starts."""
        if not self.models:
            raise SpecError("serve needs at least one model reference, e.g. mnist-mlp@production")
        for name, value, low in (
            ("--replicas", self.replicas, 1),
            ("--max-batch-rows", self.max_batch_rows, 1),
            ("--max-batch-tokens", self.max_batch_tokens, 1),
            ("--max-running", self.max_running, 1),
            ("--max-waiting", self.max_waiting, 0),
            ("--max-queue-rows", self.max_queue_rows, 1),
            ("--timeout-ms", self.timeout_ms, 1),
            ("--port", self.port, 0),
            ("--scale-up-rows", self.scale_up_rows, 0),
        ):
            if value < low:
                raise SpecError(f"{name} must be >= {low}, got {value}")
        if self.max_replicas and self.max_replicas < self.replicas:
            raise SpecError(f"--replicas MIN:MAX needs MIN <= MAX, got {self.replicas}:{self.max_replicas}")
        for name, positive in (
            ("--scale-up-wait-ms", self.scale_up_wait_ms),
            ("--scale-down-idle-s", self.scale_down_idle_s),
        ):
            if not 0 < positive < math.inf:
                raise SpecError(f"{name} must be a number > 0, got {positive}")
        if self.port > 65535:
            raise SpecError(f"--port must be <= 65535, got {self.port}")
        if self.runtime not in ("torch", "onnx"):
            raise SpecError(f"--runtime must be torch or onnx, got {self.runtime!r}")
        from skylift.serve.cache import make_cache

        make_cache(self.cache, self.cache_mb)  # validates --cache and --cache-mb (connects to nothing)
        if self.rollouts:
            from skylift.serve.rollout import check_config

            check_config(self)  # the versions exist and fit the served ones (reads the registry)
        if self.rate_limit < 0:
            raise SpecError(f"--rate-limit must be >= 0 requests/s, got {self.rate_limit}")
        if self.token_limit < 0:
            raise SpecError(f"--token-limit must be >= 0 tokens/min, got {self.token_limit}")
        if self.max_delay_ms < 0 or self.max_body_mb <= 0:
            raise SpecError("--max-delay-ms must be >= 0 and --max-body-mb > 0")
        if self.max_queue_rows < self.max_batch_rows:
            raise SpecError(
                f"--max-queue-rows ({self.max_queue_rows}) must be >= "
                f"--max-batch-rows ({self.max_batch_rows})"
            )
        parse_forwarded_allow_ips(",".join(self.forwarded_allow_ips))
        root = parse_root_path(self.root_path)
        if root != self.root_path:
            raise SpecError(f"--root-path takes no trailing slash: give {root!r}, got {self.root_path!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SpecError("--tls-cert and --tls-key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise SpecError(f"{path}: TLS file not found")
        if self.no_auth:
            if not is_loopback(self.host):
                raise SpecError(
                    f"--no-auth is refused on a non-loopback address ({self.host}): create API keys instead"
                )
            return
        from skylift.security.apikeys import KeyStore

        if not KeyStore(self.keys).usable():
            raise SpecError(
                f"no usable API keys in {self.keys}: create one with "
                "`skylift keys create --name NAME --scope predict`, or start with --no-auth (loopback only)"
            )

    @property
    def keys(self) -> Path:
        from skylift.security.apikeys import keys_file

        return self.keys_path or keys_file(self.home)

    @property
    def audit(self) -> Path:
        return self.audit_log or self.home / "audit.log"


_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")
"""A path segment without percent-escapes (uvicorn decodes those before the app sees the path)."""


def parse_forwarded_allow_ips(text: str) -> tuple[str, ...]:
    """--forwarded-allow-ips: comma-separated IPs and CIDR networks, or "*" alone; "" is none.

    Checked here because uvicorn takes a malformed entry for a literal host name that never
    matches, and "10.0.0.1/8" (host bits set) likewise: trust would be silently off.
    """
    entries = [entry.strip() for entry in text.split(",")]
    if entries == [""]:
        return ()
    if "*" in entries:
        if len(entries) > 1:
            raise SpecError(f"--forwarded-allow-ips takes * alone (it trusts every peer), got {text!r}")
        return ("*",)
    if "" in entries:
        raise SpecError(f"--forwarded-allow-ips has an empty entry (a stray comma?), got {text!r:.80}")
    return tuple(_trusted(entry) for entry in entries)


def _trusted(entry: str) -> str:
    """One --forwarded-allow-ips entry, normalised: an address or a network."""
    try:
        if "/" not in entry:
            return str(ipaddress.ip_address(entry))
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise SpecError(
            f"--forwarded-allow-ips entry {entry!r:.60} is not an IP address or CIDR network "
            "(e.g. 10.0.0.7,10.0.0.0/8; or * for any peer)"
        ) from None
    if ipaddress.ip_interface(entry).ip != network.network_address:
        raise SpecError(f"--forwarded-allow-ips entry {entry!r} has host bits set: give {network}")
    return str(network)


def parse_root_path(text: str) -> str:
    """--root-path: "" (none) or /SEGMENT[/SEGMENT...], a trailing slash dropped ("/ml/" -> "/ml").

    Its first segment may not be one the routes use (/v2, /v1, ...): a request without the prefix
    (a probe, or a proxy that strips it) would then be read as one with it.
    """
    from skylift.serve.routes import TOP

    path = text.rstrip("/")
    if not path:
        return ""
    if not path.startswith("/"):
        raise SpecError(f"--root-path must start with '/', e.g. /{path}, got {text!r:.60}")
    if "?" in path or "#" in path:
        raise SpecError(f"--root-path is a path without a query or fragment, got {text!r:.60}")
    segments = path[1:].split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise SpecError(f"--root-path may not hold empty, '.' or '..' segments, got {text!r:.60}")
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise SpecError(
            f"--root-path may hold letters, digits and -._~!$&'()*+,;=:@ between slashes, got {text!r:.60}"
        )
    if segments[0] in TOP:
        raise SpecError(
            f"--root-path may not start with /{segments[0]}, a route of its own, got {text!r:.60}"
        )
    return path
