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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from skylift.errors import AuthError
from skylift.serve.auth import presented_key
from skylift.serve.codec import BadRequest, _loads
from skylift.serve.openai_answers import CompletionReply, sse
from skylift.serve.openai_answers import error_body as error_body  # the App answers errors with it
from skylift.serve.runtimes import Unsupported
from skylift.serve.runtimes.generator import ROLES, Generator
from skylift.serve.tokenlimit import charge_tokens

if TYPE_CHECKING:
    from skylift.generation import Handle, SamplingParams
    from skylift.security.apikeys import KeyInfo
    from skylift.serve.app import Answer, App, Receive
    from skylift.serve.repository import ServedModel
    from skylift.serve.routes import Route

JSON = (b"content-type", b"application/json")
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
MAX_PROMPTS = 64  # prompts in one /v1/completions request
_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


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
        return await self._answer(req, model, runtime, prompts, params, scope, receive, chat=False)

    async def chat(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        req = await self._body(scope, receive)
        model, runtime = self._generator(req["model"])
        prompt = runtime.prompt_ids(runtime.chat_prompt(_messages(req.get("messages"))))
        if req.get("logprobs") not in (None, False) or req.get("tools") or req.get("response_format"):
            raise BadRequest("logprobs, tools and response_format are not supported")
        if req.get("max_completion_tokens") is not None:
            req = {**req, "max_tokens": req["max_completion_tokens"]}
        params = _params(req, default_max_tokens=None)
        return await self._answer(req, model, runtime, [prompt], params, scope, receive, chat=True)

    def _caller(self, scope: dict[str, Any]) -> KeyInfo | None:
        """The request's API key (None without auth). The App checked it already but does not hand
        it to the handlers; verifying again costs one SHA-256 of the key, a microsecond."""
        auth = self.app.auth
        if auth is None:
            return None
        try:
            return auth.keys.verify(presented_key(scope["headers"]) or "")
        except AuthError:  # revoked since the App's check a moment ago: it ran as an allowed key
            return None

    async def _answer(
        self,
        req: dict[str, Any],
        model: ServedModel,
        runtime: Generator,
        prompts: list[list[int]],
        params: SamplingParams,
        scope: dict[str, Any],
        receive: Receive,
        chat: bool,
    ) -> Answer:
        stream = _field(req, "stream", (bool,), False)
        if stream and len(prompts) > 1:
            raise BadRequest("stream takes one prompt per request")
        options = _field(req, "stream_options", (dict,)) or {}
        deadline_s = self.app.config.timeout_ms / 1000
        # What the request may use: prompt + max_tokens (default: what the context leaves), never
        # more than the context (a longer one is refused below with a 400, and refunded).
        most = sum(min(runtime.context, len(p) + (params.max_tokens or runtime.context)) for p in prompts)
        charge = charge_tokens(self.app.limiter, self._caller(scope), self.app.config.token_limit, most)
        handles: list[Handle] = []
        try:
            for p in prompts:
                handles.append(runtime.generate(p, params, deadline_s))  # InvalidRequest: 400
        except BaseException:
            _cancel(handles)  # the prompts queued before one was refused would run for nobody
            if charge is not None:
                charge.settle(0)
            raise
        self.app.metrics.extra["generation_requests_total"] = (
            self.app.metrics.extra.get("generation_requests_total", 0) + 1
        )
        reply = CompletionReply(model.name, chat)
        if stream:
            usage = bool(options.get("include_usage"))
            chunks = sse(reply, handles[0], usage, self.app.metrics.extra, charge)
            return 200, Stream(chunks, handles[0].cancel), SSE

        gone = asyncio.ensure_future(until_disconnect(receive))
        gone.add_done_callback(lambda task: None if task.cancelled() else _cancel(handles))  # client left
        try:
            done = [await h.collect() for h in handles]
        except BaseException:
            _cancel(handles)  # one failed: the others' answers would go nowhere
            if charge is not None:
                charge.settle(0)  # the server failed it: nothing is billed
            raise
        finally:
            gone.cancel()
        if charge is not None:
            charge.settle(sum(d.usage.total_tokens for d in done))
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
        # vLLM's extension (benchmarks ask for a fixed output length): generate past end-of-text.
        ignore_eos=bool(_field(req, "ignore_eos", (bool,), False)),
    )
