"""`skylift bench serve --protocol openai-completions|openai-chat`: streamed generation under load.

Every connection streams one completion after another (`stream: true` with
`stream_options.include_usage`, so the server's own token counts come back), spread over client
processes as the tensor modes are. Prompts are words after a distinct number; since the client
has no tokenizer, short non-streamed calibration requests (max_tokens 1) first find the number of
words whose prompt the server counts as `prompt_tokens` tokens, chat template included. They also
check the model, the key and that the model generates before any load is sent; their tokens are
reported apart (`probe_tokens`), not in the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from skylift.errors import ModelNotFound, SkyliftError, SpecError
from skylift.loadgen._config import BenchConfig, auto_processes
from skylift.loadgen._probe import fetch, refused
from skylift.loadgen._stream_report import StreamReport, merge_streams
from skylift.loadgen._stream_worker import StreamPlan, error_message, run_stream_plan
from skylift.loadgen._worker import Window, ssl_context

if TYPE_CHECKING:
    import ssl

# Short common words: most are one token in any English BPE vocabulary; the calibration measures it.
WORDS = tuple(
    " ".join(
        (
            "the of and to in is was he for it with as his on be at by had are but from or have an they",
            "which one you were all her she there would their we him been has when who will no more if",
            "out so up said what its about than into them can only other time new some could these two",
        )
    ).split(" ")
)
_CALIBRATE = (4, 12)  # prompt words of the first two calibration requests
_MAX_STEPS = 4  # calibration requests after those, homing in on --prompt-tokens
_GUESS_PER_WORD = 1.5  # tokens a word, when a 12-word prompt is already too long for the context


@dataclass(frozen=True)
class PromptBodies:
    """The JSON body of request number n (picklable: the client processes build their own)."""

    model: str
    chat: bool
    words: int
    max_tokens: int
    ignore_eos: bool = False
    unique: bool = True
    stream: bool = True

    def text(self, n: int) -> str:
        """n as five digits, then `words` words of WORDS: distinct per request (for 100,000 requests),
        and up to those digits the same text, so every prompt is about as many tokens as calibrated.
        The distinct part comes first, so a server's prefix cache cannot answer from an earlier one."""
        words = (WORDS[i % len(WORDS)] for i in range(self.words))
        return " ".join([f"{n % 100_000 if self.unique else 0:05d}", *words])

    def __call__(self, n: int) -> bytes:
        text = self.text(n)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "stream": self.stream}
        if self.chat:
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            body["ignore_eos"] = True
        return orjson.dumps(body)


def _headers(config: BenchConfig) -> dict[str, str]:
    target = config.target
    headers = {"Host": target.authority, "Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def _head(config: BenchConfig) -> bytes:
    """The request line and headers of every streamed request, up to Content-Length."""
    path = config.target.route(config.protocol, config.model)
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in _headers(config).items())]
    return ("\r\n".join([*lines, "Accept: text/event-stream"]) + "\r\n").encode("latin-1")


def _probe(config: BenchConfig, words: int, ctx: ssl.SSLContext | None) -> dict[str, int]:
    """One non-streamed request of `words` words and max_tokens 1; its usage. The errors that stop
    a load test before it starts: unknown model (exit 2), refused key (1), not a generator (2)."""
    target = config.target
    bodies = PromptBodies(config.model, config.protocol == "openai-chat", words, 1, stream=False)
    path = target.route(config.protocol, config.model)
    headers = _headers(config)
    status, body = fetch(
        target, "POST", path, body=bodies(0), headers=headers, ssl_ctx=ctx, timeout_s=config.timeout_s
    )
    said = f"POST {path} answered HTTP {status}: {error_message(body)}"
    if status == 404:
        raise ModelNotFound(f"model {config.model!r} not found at {config.url}: {said}")
    if status in (401, 403):
        raise refused(config, status, body)
    if status == 400:
        raise SpecError(f"{config.url} refused the {config.protocol} request for {config.model!r}: {said}")
    if status != 200:
        raise SkyliftError(f"the calibration request failed: {said}")
    try:
        usage = json.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        usage = {}
    return {k: v for k, v in usage.items() if k in ("prompt_tokens", "completion_tokens") and type(v) is int}


def calibrate(config: BenchConfig, ctx: ssl.SSLContext | None) -> tuple[int, dict[str, int], str]:
    """(prompt words, the calibration requests' tokens, what the prompt came to): prompts of 4 and
    12 words give the server's tokens per word, then up to MAX_STEPS more requests home in on the
    word count whose prompt is `prompt_tokens` tokens (the words differ in cost; the closest wins).
    Past the first, a prompt the server refuses (400: longer than its context) counts as too long."""
    spent = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    too_long = 1 << 62

    def measure(words: int, first: bool = False) -> int | None:
        try:
            usage = _probe(config, words, ctx)
        except SpecError:
            if first:
                raise
            return too_long
        spent["requests"] += 1
        for k in ("prompt_tokens", "completion_tokens"):
            spent[k] += usage.get(k, 0)
        return usage.get("prompt_tokens")

    few, many = measure(_CALIBRATE[0], first=True), measure(_CALIBRATE[1])
    if few is None or many is None:
        return config.prompt_tokens, spent, "a word a token: the server reports no usage to count them by"
    spread = _CALIBRATE[1] - _CALIBRATE[0]
    per_word = max((many - few) / spread, 0.25) if many != too_long else _GUESS_PER_WORD
    goal = config.prompt_tokens
    seen = {_CALIBRATE[0]: few, _CALIBRATE[1]: many}
    words = max(1, _CALIBRATE[0] + round((goal - few) / per_word))
    for _ in range(_MAX_STEPS):
        if words in seen:
            break
        got = seen[words] = measure(words) or 0
        if got == goal:
            break
        step = round((goal - got) / per_word) if got != too_long else -max(1, words // 4)
        words = max(1, words + (step or (1 if got < goal else -1)))
    words = min(seen, key=lambda w: (abs(seen[w] - goal), w))
    return words, spent, f"{seen[words]} tokens by the server's count, asked {goal}"


def run_openai(config: BenchConfig, say: Callable[[str], None]) -> StreamReport:
    """Calibrate, then stream at `config.concurrency` for the window; the merged report."""
    from skylift.loadgen._runner import _run_inline, _run_spawned, _share

    target = config.target
    ctx = ssl_context(config.insecure, config.cacert) if target.tls else None
    words, spent, how = calibrate(config, ctx)
    processes = min(config.processes or auto_processes(config.concurrency), config.concurrency)
    if config.requests is not None:
        processes = min(processes, config.requests)
    bodies = PromptBodies(
        config.model,
        config.protocol == "openai-chat",
        words,
        config.max_tokens,
        ignore_eos=config.ignore_eos,
        unique=config.unique,
    )
    head = _head(config)
    plans = [
        StreamPlan(
            host=target.host,
            port=target.port,
            tls=target.tls,
            server_hostname=target.host,
            insecure=config.insecure,
            cacert=config.cacert,
            head=head,
            body=bodies,
            connections=_share(config.concurrency, processes, i),
            quota=None if config.requests is None else _share(config.requests, processes, i),
            timeout_s=config.timeout_s,
            index=i,
            processes=processes,
        )
        for i in range(processes)
    ]
    say(
        f"{config.protocol}: prompts of a number and {words} words ({how}), "
        f"max_tokens {config.max_tokens}{', ignore_eos' if config.ignore_eos else ''}, to {config.url}: "
        f"{config.concurrency} streams, {processes} client process{'es' if processes > 1 else ''}, "
        f"{config.warmup_s:g} s warm-up + {config.duration_s:g} s (streams in flight then finish)"
    )
    windows: list[Window] = []

    def window() -> Window:
        start = time.monotonic() + 0.05
        w = Window(start, start + config.warmup_s, start + config.warmup_s + config.duration_s)
        windows.append(w)
        return w

    if processes == 1:
        results = _run_inline(plans[0], window, run_stream_plan)
    else:
        results = _run_spawned(plans, window, config, run_stream_plan)
    return merge_streams(
        results,
        url=config.url,
        model=config.model,
        protocol=config.protocol,
        concurrency=config.concurrency,
        measure_from=windows[0].measure_from,
        max_tokens=config.max_tokens,
        target_prompt_tokens=config.prompt_tokens,
        prompt_words=words,
        probe_tokens=spent,
        request_bytes=len(head) + len(bodies(1)) + len(b"Content-Length: 000\r\n\r\n"),
    )
