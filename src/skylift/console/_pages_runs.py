"""Runs: the list, one run's page (live curves, epochs, results, spec, logs) and a comparison."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from skylift.console import _runs
from skylift.console._access import who
from skylift.console._http import json_response
from skylift.console._render import render
from skylift.errors import SpecError

COMPARE_MIN, COMPARE_MAX = 2, 4


def _home(request: Request) -> Path:
    home: Path = request.app.state.home
    return home


def runs_page(request: Request) -> Response:
    who(request)
    rows = _runs.list_runs(_home(request))
    return render(request, "runs.html", runs=_runs.as_json(rows))


def runs_api(request: Request) -> Response:
    who(request)
    return json_response({"runs": _runs.as_json(_runs.list_runs(_home(request)))})


def run_page(request: Request) -> Response:
    who(request)
    home, run_id = _home(request), request.path_params["run_id"]
    detail = _runs.detail(home, run_id)
    return render(
        request,
        "run.html",
        run_id=run_id,
        detail=detail,
        spec=_runs.spec_text(home, run_id),
        logs=_runs.logs(home, run_id),
        trial=_runs.trial_of(run_id),
    )


def run_api(request: Request) -> Response:
    who(request)
    return json_response(_runs.detail(_home(request), request.path_params["run_id"]))


def run_picture(request: Request) -> Response:
    who(request)
    path = _runs.picture(_home(request), request.path_params["run_id"], request.path_params["name"])
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


def compare_page(request: Request) -> Response:
    who(request)
    ids = list(dict.fromkeys(request.query_params.getlist("run")))
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        raise SpecError(
            f"compare takes {COMPARE_MIN} to {COMPARE_MAX} runs (tick them in the runs list), got {len(ids)}"
        )
    home = _home(request)
    runs = {run_id: _runs.detail(home, run_id) for run_id in ids}  # an unknown id: 404 naming it
    metrics = sorted({k for d in runs.values() for row in d["history"] for k in row if k != "epoch"})
    return render(request, "compare.html", runs=runs, metrics=metrics)


ROUTES = [
    Route("/runs", runs_page),
    Route("/api/runs", runs_api),
    Route("/compare", compare_page),
    Route("/runs/{run_id}", run_page),
    Route("/api/runs/{run_id}", run_api),
    Route("/runs/{run_id}/files/{name}", run_picture),
]
