"""The OpenAPI 3.1 description of every route the server answers (served at /openapi.json)."""

from __future__ import annotations

from functools import cache
from typing import Any

from skylift.serve.media_codec import MEDIA_TYPES

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_M = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_V = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
# A media model's plain POST of one file (docs/serving-media.md); other models answer 415.
_FILES = tuple(kind.decode() for kinds in MEDIA_TYPES.values() for kind in kinds)


def _op(summary: str, *, body: str | None = None, params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "4XX": _ERROR,
            "5XX": _ERROR,
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": body}}}}
    return op


def _with_files(op: dict[str, Any]) -> dict[str, Any]:
    """An inference route: also one image or audio file as the body (a media model)."""
    files = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in _FILES}
    op["requestBody"]["content"].update(files)
    return op


@cache
def openapi(auth: bool = True, root_path: str = "") -> dict[str, Any]:
    """The document; `auth` False (a --no-auth server) leaves out the API key security schemes;
    `root_path` (--root-path, e.g. /ml) is its server URL, the prefix clients put before each path."""
    v2_infer = "#/components/schemas/V2InferRequest"
    v1_predict = "#/components/schemas/V1PredictRequest"
    openai = "#/components/schemas/OpenAIRequest"
    split = "#/components/schemas/SplitRequest"
    shadow = "#/components/schemas/ShadowRequest"
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {**_op("liveness"), "security": []}},
        "/v2/health/ready": {"get": _op("readiness: every model loaded and warmed up")},
        "/v2": {"get": _op("server metadata")},
        "/v2/models/{model}": {"get": _op("model metadata", params=(_M,))},
        "/v2/models/{model}/versions/{version}": {"get": _op("model version metadata", params=(_M, _V))},
        "/v2/models/{model}/ready": {"get": _op("model readiness", params=(_M,))},
        "/v2/models/{model}/versions/{version}/ready": {
            "get": _op("model version readiness", params=(_M, _V))
        },
        "/v2/models/{model}/infer": {
            "post": _with_files(
                _op("inference (JSON or binary tensors, or one file)", body=v2_infer, params=(_M,))
            )
        },
        "/v2/models/{model}/versions/{version}/infer": {
            "post": _with_files(_op("inference on a version", body=v2_infer, params=(_M, _V)))
        },
        "/v2/repository/index": {"post": _op("models loaded (admin)")},
        "/v2/repository/models/{model}/load": {"post": _op("load or reload a model (admin)", params=(_M,))},
        "/v2/repository/models/{model}/unload": {"post": _op("unload a model (admin)", params=(_M,))},
        "/v2/repository/models/{model}/split": {
            "get": _op("the model's rollout: split, guard, shadow, rollbacks (admin)", params=(_M,)),
            "post": _op("set the traffic split over versions (admin)", body=split, params=(_M,)),
            "delete": _op("remove the split: every request to the served version (admin)", params=(_M,)),
        },
        "/v2/repository/models/{model}/shadow": {
            "get": _op("the model's rollout (admin)", params=(_M,)),
            "post": _op("set the shadow version (admin)", body=shadow, params=(_M,)),
            "delete": _op("remove the shadow (admin)", params=(_M,)),
        },
        "/v1/models/{model}": {"get": _op("TF-Serving model status", params=(_M,))},
        "/v1/models/{model}/versions/{version}": {
            "get": _op("TF-Serving model version status", params=(_M, _V))
        },
        "/v1/models/{model}:predict": {
            "post": _with_files(_op("TF-Serving predict", body=v1_predict, params=(_M,)))
        },
        "/v1/models/{model}/versions/{version}:predict": {
            "post": _with_files(_op("TF-Serving predict on a version", body=v1_predict, params=(_M, _V)))
        },
        "/v1/models": {"get": _op("OpenAI: the served models")},
        "/v1/embeddings": {"post": _op("OpenAI: embeddings of texts (embedders)", body=openai)},
        "/v1/completions": {
            "post": _op("OpenAI: text completion, streamed as server-sent events (generators)", body=openai)
        },
        "/v1/chat/completions": {
            "post": _op("OpenAI: chat completion, streamed as server-sent events (generators)", body=openai)
        },
        "/metrics": {"get": _op("Prometheus metrics")},
        "/openapi.json": {"get": _op("this document")},
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "skylift serve", "version": "0.1.0"},
        "paths": paths,
        # Either header works; each route also needs the key's scope (predict, metrics or admin).
        "security": [{"bearer": []}, {"apiKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "V2InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "items": tensor},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "parameters": {"type": "object"},
                    },
                },
                "OpenAIRequest": {
                    "type": "object",
                    "required": ["model"],
                    "description": "OpenAI's request body; errors on /v1/* are OpenAI's error object",
                    "properties": {"model": {"type": "string"}},
                },
                "SplitRequest": {
                    "type": "object",
                    "required": ["weights"],
                    "additionalProperties": False,
                    "properties": {
                        "weights": {
                            "type": "object",
                            "description": 'version -> whole percent, summing to 100: {"1": 90, "2": 10}',
                            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100},
                        },
                        "sticky_header": {"type": ["string", "null"], "description": "e.g. X-Session"},
                        "guard": {
                            "type": ["object", "null"],
                            "additionalProperties": False,
                            "properties": {
                                "error_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                                "p99_ms": {"type": "number", "exclusiveMinimum": 0},
                                "window_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                                "min_requests": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
                "ShadowRequest": {
                    "type": "object",
                    "required": ["version"],
                    "additionalProperties": False,
                    "properties": {
                        "version": {"type": "integer", "minimum": 1},
                        "queue": {"type": "integer", "minimum": 1},
                    },
                },
                "V1PredictRequest": {
                    "type": "object",
                    "properties": {
                        "instances": {"type": "array"},
                        "inputs": {},
                        "signature_name": {"type": "string"},
                    },
                },
            },
        },
    }
    if root_path:  # relative to the document's own URL: right behind any host, port and scheme
        doc["servers"] = [{"url": root_path}]
    if not auth:
        del doc["security"], doc["components"]["securitySchemes"]
        del paths["/v2/health/live"]["get"]["security"]
    return doc
