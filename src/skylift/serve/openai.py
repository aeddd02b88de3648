"""OpenAI-compatible routes: GET /v1/models, POST /v1/embeddings, /v1/completions, /v1/chat/completions.

Bodies are parsed and answered in OpenAI's shapes (the official `openai` client works unchanged);
the work is the model's runtime's (`embed`, `generate`). Streams are server-sent events in
OpenAI's chunk format, ending with `data: [DONE]`. Errors are `{"error": {"message", "type",
"param", "code"}}` with the HTTP layer's statuses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from skylift.serve.codec import BadRequest, _loads
from skylift.serve.runtimes import Unsupported
from skylift.serve.runtimes.generator import ROLES, Generator

if TYPE_CHECKING:
    from skylift.generation import Handle, SamplingParams
    from skylift.serve.app import Answer, App, Receive
    from skylift.serve.repository import ServedModel
    from skylift.serve.routes import Route

JSON = (b"content-type", b"application/json")
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_CODES = {404: "model_not_found", 413: "request_too_large", 429: "rate_limit_exceeded", 504: "timeout"}
MAX_PROMPTS = 64  # prompts in one /v1/completions request
_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def error_body(status: int, message: str) -> bytes:
    """OpenAI's error object for an HTTP status and a one-line message."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    error = {"message": message, "type": kind, "param": None, "code": _CODES.get(status)}
    return orjson.dumps({"error": error})


class Stream:
    """A streamed answer: `chunks` sent as they come; `cancel` runs if the client goes away first."""

    def __init__(self, chunks: AsyncIterator[bytes], cancel: Callable[[], None]) -> None:
        self.chunks = chunks
        self.cancel = cancel


async def until_disconnect(receive: Receive) -> None:
    """Returns when the client has gone away (uvicorn says so once the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _field(req: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any = None) -> Any:
    """req[name] if it is of one of `kinds` (bool is never a number), else BadRequest naming it."""
    value = req.get(name, default)
    if value is None or value is default:
        return value
    numeric = any(k in (int, float) for k in kinds)
    if not isinstance(value, kinds) or (numeric and isinstance(value, bool) and bool not in kinds):
        names = " or ".join(_WORDS[k] for k in kinds)
        raise BadRequest(f"'{name}' must be {names}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _request(body: bytes) -> dict[str, Any]:
    req = _loads(body)
    if not isinstance(req, dict):
        raise BadRequest("the body must be a JSON object")
    if not isinstance(req.get("model"), str) or not req["model"]:
        raise BadRequest("'model' is required: the name of a served model (GET /v1/models lists them)")
    return req


def _created(info: dict[str, Any]) -> int:
    with contextlib.suppress(TypeError, ValueError):
        return int(dt.datetime.fromisoformat(str(info.get("created"))).timestamp())
    return 0


def model_object(model: ServedModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": _created(model.info), "owned_by": "skylift"}


class OpenAIRoutes:
    """The OpenAI handlers of one App (they use its body reader, model lookup and config)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def handlers(self) -> dict[str, Callable[[Route, dict[str, Any], Receive], Awaitable[Answer]]]:
        return {
            "openai/models": self.models,
            "openai/embeddings": self.embeddings,
            "openai/completions": self.completions,
            "openai/chat": self.chat,
        }

    async def models(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        data = [model_object(m) for m in self.app.repo.models.values()]
        return 200, orjson.dumps({"object": "list", "data": data}), [JSON]

    async def _body(self, scope: dict[str, Any], receive: Receive) -> dict[str, Any]:
        from skylift.serve.app import _content_type

        _content_type(scope, binary=False)
        return _request(await self.app._read(scope, receive))

    async def embeddings(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        req = await self._body(scope, receive)
        if req.get("stream"):
            raise BadRequest("'stream' is not supported by /v1/embeddings")
        texts = _texts(req.get("input"))
        fmt = _field(req, "encoding_format", (str,), "float")
        if fmt not in ("float", "base64"):
            raise BadRequest(f"'encoding_format' must be float or base64, got {str(fmt)[:20]!r}")
        limit = self.app.config.max_queue_rows
        if len(texts) > limit:
            raise BadRequest(
                f"{len(texts)} inputs are over the server's limit of {limit} (--max-queue-rows)", 413
            )
        with self.app._hold(self.app._lookup(req["model"], None)) as model:
            dimensions = _field(req, "dimensions", (int,))
            if dimensions is not None and dimensions != model.runtime.width:
                raise BadRequest(
                    f"'dimensions' must be {model.runtime.width} for {model.name}, got {dimensions}"
                )
            try:
                async with asyncio.timeout(self.app.config.timeout_ms / 1000):
                    deadline = time.monotonic() + self.app.config.timeout_ms / 1000
                    vectors, tokens = await model.runtime.embed(texts, deadline)
            except TimeoutError:
                from skylift.serve.batcher import DeadlineExceeded

                raise DeadlineExceeded from None
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(v, fmt)} for i, v in enumerate(vectors)
        ]
        answer = {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), [JSON]

    def _generator(self, name: str) -> tuple[ServedModel, Generator]:
        model = self.app._lookup(name, None)
        if not isinstance(model.runtime, Generator):
            raise Unsupported(
                f"model {model.name} is {model.runtime.a_kind}: completions need a generator "
                "(a language model)"
            )
        return model, model.runtime

    async def completions(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        req = await self._body(scope, receive)
        model, runtime = self._generator(req["model"])
        prompts = _prompts(req.get("prompt"), runtime)
        if (
            _field(req, "echo", (bool,))
            or req.get("logprobs") is not None
            or req.get("best_of") not in (None, 1)
        ):
            raise BadRequest("echo, logprobs and best_of are not supported")
        params = _params(req, default_max_tokens=16)
        return await self._answer(req, model, runtime, prompts, params, receive, chat=False)

    async def chat(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        req = await self._body(scope, receive)
        model, runtime = self._generator(req["model"])
        prompt = runtime.prompt_ids(runtime.chat_prompt(_messages(req.get("messages"))))
        if req.get("logprobs") not in (None, False) or req.get("tools") or req.get("response_format"):
            raise BadRequest("logprobs, tools and response_format are not supported")
        if req.get("max_completion_tokens") is not None:
            req = {**req, "max_tokens": req["max_completion_tokens"]}
        params = _params(req, default_max_tokens=None)
        return await self._answer(req, model, runtime, [prompt], params, receive, chat=True)

    async def _answer(
        self,
        req: dict[str, Any],
        model: ServedModel,
        runtime: Generator,
        prompts: list[list[int]],
        params: SamplingParams,
        receive: Receive,
        chat: bool,
    ) -> Answer:
        stream = _field(req, "stream", (bool,), False)
        if stream and len(prompts) > 1:
            raise BadRequest("stream takes one prompt per request")
        options = _field(req, "stream_options", (dict,)) or {}
        deadline_s = self.app.config.timeout_ms / 1000
        handles: list[Handle] = []
        try:
            for p in prompts:
                handles.append(runtime.generate(p, params, deadline_s))  # InvalidRequest: 400
        except BaseException:
            _cancel(handles)  # the prompts queued before one was refused would run for nobody
            raise
        self.app.metrics.extra["generation_requests_total"] = (
            self.app.metrics.extra.get("generation_requests_total", 0) + 1
        )
        reply = _Reply(model.name, chat)
        if stream:
            chunks = _sse(reply, handles[0], bool(options.get("include_usage")), self.app.metrics.extra)
            return 200, Stream(chunks, handles[0].cancel), SSE

        gone = asyncio.ensure_future(until_disconnect(receive))
        gone.add_done_callback(lambda task: None if task.cancelled() else _cancel(handles))  # client left
        try:
            done = [await h.collect() for h in handles]
        except BaseException:
            _cancel(handles)  # one failed: the others' answers would go nowhere
            raise
        finally:
            gone.cancel()
        return 200, orjson.dumps(reply.whole(done)), [JSON]


def _cancel(handles: list[Handle]) -> None:
    for h in handles:
        h.cancel()


def _vector(v: np.ndarray, fmt: str) -> Any:
    return base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v


def _texts(value: Any) -> list[str]:
    """`input` of /v1/embeddings: a string or a non-empty list of strings."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise BadRequest("'input' must be a string or a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            what = "token ids are not supported, send text" if isinstance(t, int | list) else type(t).__name__
            raise BadRequest(f"'input'[{i}] must be a string ({what})")
    return texts


def _prompts(value: Any, runtime: Generator) -> list[list[int]]:
    """`prompt` of /v1/completions: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(value, str):
        return [runtime.prompt_ids(value)]
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        return [list(value)]
    if not isinstance(value, list) or not value or len(value) > MAX_PROMPTS:
        raise BadRequest(f"'prompt' must be a string, token ids, or a list of 1 to {MAX_PROMPTS} of those")
    out = []
    for p in value:
        if isinstance(p, str):
            out.append(runtime.prompt_ids(p))
        elif isinstance(p, list) and p and all(type(t) is int for t in p):
            out.append(list(p))
        else:
            raise BadRequest("each prompt must be a string or a non-empty list of token ids")
    return out


def _messages(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(value):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {str(role)[:30]!r}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                for p in content
            ):
                raise BadRequest(f"messages[{i}].content parts must be {{type: text, text: string}}")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string")
        out.append(("system" if role == "developer" else role, content))
    return out


def _params(req: dict[str, Any], default_max_tokens: int | None) -> SamplingParams:
    from skylift.generation import SamplingParams

    if _field(req, "n", (int,), 1) != 1:
        raise BadRequest("'n' must be 1 (one choice per prompt)")
    for penalty in ("presence_penalty", "frequency_penalty"):
        if _field(req, penalty, (int, float), 0) not in (0, None):
            raise BadRequest(f"'{penalty}' is not supported (only 0)")
    stop = _field(req, "stop", (str, list), ())
    seed = _field(req, "seed", (int,))
    max_tokens = _field(req, "max_tokens", (int,), default_max_tokens)
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest(f"'max_tokens' must be >= 1, got {max_tokens}")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=float(_field(req, "temperature", (int, float), 1.0)),
        top_p=float(_field(req, "top_p", (int, float), 1.0)),
        stop=stop if stop is not None else (),
        seed=seed,
    )


class _Reply:
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
            "choices": [self.choice(d.text, _reason(d.finish_reason), i) for i, d in enumerate(done)],
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


def _reason(reason: str) -> str:
    """OpenAI's finish reasons: a deadline or a cancel cut the text short, as max_tokens does."""
    return reason if reason in ("stop", "length") else "length"


async def _sse(
    reply: _Reply, handle: Handle, include_usage: bool, counters: dict[str, float]
) -> AsyncIterator[bytes]:
    """The stream of one completion: a role chunk (chat), text deltas, the finish, usage, [DONE]."""
    from skylift.generation import GenerationFailed

    if reply.chat:
        first = reply.choice("", None, chunk=True)
        first["delta"] = {"role": "assistant", "content": ""}
        yield reply.chunk([first])
    try:
        async for event in handle:
            if event.text:
                yield reply.chunk([reply.choice(event.text, None, chunk=True)])
            if event.finish_reason is not None and event.usage is not None:
                last = reply.choice("", _reason(event.finish_reason), chunk=True)
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
        counters["internal_errors_total"] = counters.get("internal_errors_total", 0) + 1
        yield b"data: " + error_body(500, str(exc)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
