"""Studies: the list, and one study's trials with Optuna's interactive figures."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skylift.console._access import who
from skylift.console._http import json_response
from skylift.console._render import render
from skylift.console._studies import Studies


def _studies(request: Request) -> Studies:
    found: Studies = request.app.state.studies
    return found


def studies_page(request: Request) -> Response:
    who(request)
    return render(request, "studies.html", studies=_studies(request).rows())


def study_page(request: Request) -> Response:
    who(request)
    studies, name = _studies(request), request.path_params["name"]
    data = studies.as_json(name)  # an unknown study: 404 before any figure is drawn
    return render(request, "study.html", name=name, data=data, figures=studies.figures(name))


def study_api(request: Request) -> Response:
    who(request)
    return json_response(_studies(request).as_json(request.path_params["name"]))


ROUTES = [
    Route("/studies", studies_page),
    Route("/studies/{name}", study_page),
    Route("/api/studies/{name}", study_api),
]
