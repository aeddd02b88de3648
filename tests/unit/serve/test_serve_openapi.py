"""/openapi.json and the router agree: every documented operation is a route, every route is documented."""

from __future__ import annotations

from skylift.serve.openapi import openapi
from skylift.serve.routes import UNMATCHED, match


def _concrete(template: str) -> str:
    return template.replace("{model}", "m").replace("{version}", "1")


def test_every_documented_operation_is_a_route_with_that_method() -> None:
    for template, operations in openapi()["paths"].items():
        route = match(_concrete(template))
        assert route.name != UNMATCHED, template
        for method in operations:
            assert route.method in (None, method.upper()), (template, method)


def test_every_route_is_documented() -> None:
    documented = {match(_concrete(t)).name for t in openapi()["paths"]}
    assert documented == {
        "v2/health/live",
        "v2/health/ready",
        "v2",
        "v2/models/metadata",
        "v2/models/ready",
        "v2/models/infer",
        "v2/repository/index",
        "v2/repository/load",
        "v2/repository/unload",
        "v2/repository/split",
        "v2/repository/shadow",
        "v1/models/status",
        "v1/models/predict",
        "openai/models",
        "openai/embeddings",
        "openai/completions",
        "openai/chat",
        "metrics",
        "openapi",
    }
    assert "/v1/models/{model}/versions/{version}" in openapi()["paths"]


def test_the_key_schemes_are_described_unless_auth_is_off() -> None:
    doc = openapi()
    assert doc["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["paths"]["/v2/health/live"]["get"]["security"] == []  # liveness needs no key
    open_doc = openapi(auth=False)
    assert "security" not in open_doc and "securitySchemes" not in open_doc["components"]
    assert "security" not in open_doc["paths"]["/v2/health/live"]["get"]
