"""OpenAI's answers to /v1/completions and /v1/chat/completions: the whole JSON object, the stream
of server-sent chunks (settling the request's token charge when it ends), and the error object."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from skylift.generation import Handle
    from skylift.serve.tokenlimit import TokenCharge

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_CODES = {404: "model_not_found", 413: "request_too_large", 429: "rate_limit_exceeded", 504: "timeout"}


def error_body(status: int, message: str) -> bytes:
    """OpenAI's error object for an HTTP status and a one-line message."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    error = {"message": message, "type": kind, "param": None, "code": _CODES.get(status)}
    return orjson.dumps({"error": error})


class CompletionReply:
    """The answer objects of one completion request, chat or not."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if chunk and self.chat else ""
        )
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def choice(self, text: str, reason: str | None, index: int = 0, chunk: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
        body = {
            "delta" if chunk else "message": {"content": text}
            if chunk
            else {"role": "assistant", "content": text}
        }
        return {"index": index, **body, "logprobs": None, "finish_reason": reason}

    def whole(self, done: list[Any]) -> dict[str, Any]:
        prompt = sum(d.usage.prompt_tokens for d in done)
        completion = sum(d.usage.completion_tokens for d in done)
        return {
            **self._head(False),
            "choices": [self.choice(d.text, finish_reason(d.finish_reason), i) for i, d in enumerate(done)],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {**self._head(True), "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"


def finish_reason(reason: str) -> str:
    """OpenAI's finish reasons: a deadline or a cancel cut the text short, as max_tokens does."""
    return reason if reason in ("stop", "length") else "length"


async def sse(
    reply: CompletionReply,
    handle: Handle,
    include_usage: bool,
    counters: dict[str, float],
    charge: TokenCharge | None = None,
) -> AsyncIterator[bytes]:
    """The stream of one completion: a role chunk (chat), text deltas, the finish, usage, [DONE]."""
    from skylift.generation import GenerationFailed

    used = handle.prompt_tokens  # what the token limit is settled with, however the stream ends
    failed = False
    if reply.chat:
        first = reply.choice("", None, chunk=True)
        first["delta"] = {"role": "assistant", "content": ""}
        yield reply.chunk([first])
    try:
        async for event in handle:
            used += len(event.token_ids)
            if event.usage is not None:
                used = event.usage.total_tokens  # with the end-of-text token, which has no id here
            if event.text:
                yield reply.chunk([reply.choice(event.text, None, chunk=True)])
            if event.finish_reason is not None and event.usage is not None:
                last = reply.choice("", finish_reason(event.finish_reason), chunk=True)
                if reply.chat:
                    last["delta"] = {}
                yield reply.chunk([last])
                if include_usage:
                    u = event.usage
                    usage = {
                        "prompt_tokens": u.prompt_tokens,
                        "completion_tokens": u.completion_tokens,
                        "total_tokens": u.total_tokens,
                    }
                    yield reply.chunk([], usage)
    except GenerationFailed as exc:  # the model raised mid-stream: say so in the stream, then end it
        failed = True
        counters["internal_errors_total"] = counters.get("internal_errors_total", 0) + 1
        yield b"data: " + error_body(500, str(exc)) + b"\n\n"
        return
    finally:  # also when the client went away and the stream was closed at a yield
        if charge is not None:
            charge.settle(0 if failed else used)
    yield b"data: [DONE]\n\n"
