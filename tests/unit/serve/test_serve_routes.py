"""Routing: one parse of the path decides the route, its scope and its parameters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skylift.serve.routes import UNMATCHED, Route, match


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2/health/live", Route("v2/health/live", None)),
        ("/v2/health/ready", Route("v2/health/ready", "predict")),
        ("/v2", Route("v2", "predict", "GET")),
        ("/v2/models/m", Route("v2/models/metadata", "predict", "GET", "m")),
        ("/v2/models/m/versions/3/ready", Route("v2/models/ready", "predict", "GET", "m", "3")),
        ("/v2/models/m/infer", Route("v2/models/infer", "predict", "POST", "m")),
        ("/v2/models/m/versions/3/infer", Route("v2/models/infer", "predict", "POST", "m", "3")),
        ("/v2/repository/index", Route("v2/repository/index", "admin", "POST")),
        ("/v2/repository/models/m/load", Route("v2/repository/load", "admin", "POST", "m")),
        ("/v2/repository/models/m/unload", Route("v2/repository/unload", "admin", "POST", "m")),
        ("/v2/repository/models/m/split", Route("v2/repository/split", "admin", None, "m")),
        ("/v2/repository/models/m/shadow", Route("v2/repository/shadow", "admin", None, "m")),
        ("/v1/models/m", Route("v1/models/status", "predict", "GET", "m")),
        ("/v1/models/m/versions/2", Route("v1/models/status", "predict", "GET", "m", "2")),
        ("/v1/models/m:predict", Route("v1/models/predict", "predict", "POST", "m")),
        ("/v1/models/m/versions/2:predict", Route("v1/models/predict", "predict", "POST", "m", "2")),
        ("/metrics", Route("metrics", "metrics", "GET")),
        ("/openapi.json", Route("openapi", "predict", "GET")),
    ],
)
def test_routes(path: str, route: Route) -> None:
    assert match(path) == route
    assert match("/" + path + "/") == route  # extra slashes at either end: the same route


@pytest.mark.parametrize(
    "path",
    [
        "//v2/repository/index",
        "///v2/repository/models/m/load",
        "/v2/repository/index/",
        "/v2/repository//index",
    ],
)
def test_repository_paths_need_admin_however_they_are_written(path: str) -> None:
    assert match(path).scope == "admin"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/v3/x", "no route '/v3/x'"),
        ("/v2/models/m/versions", "no route"),
        ("/v2//models/m/infer", "no route"),
        ("/v1/models/m:classify", "unsupported verb :classify"),
        ("/metrics/x", "no route"),
        ("/", "no route"),
    ],
)
def test_no_route(path: str, error: str) -> None:
    route = match(path)
    assert route.name == UNMATCHED and error in route.error


SEGMENTS = st.lists(
    st.sampled_from(["", "v2", "v1", "repository", "models", "m", "load", "index", "metrics"])
)


@given(lead=st.integers(0, 3), segments=SEGMENTS, trail=st.integers(0, 2))
def test_the_admin_scope_follows_the_routers_reading_of_the_path(
    lead: int, segments: list[str], trail: int
) -> None:
    path = "/" * lead + "/".join(segments) + "/" * trail
    route = match(path)
    under_repository = path.strip("/").split("/")[:2] == ["v2", "repository"]
    assert (route.scope == "admin") == under_repository
    if route.name.startswith("v2/repository"):
        assert route.scope == "admin"
