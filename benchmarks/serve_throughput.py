"""Serving throughput: skylift serve vs a naive FastAPI server vs a no-model HTTP ceiling, one run.

Servers, all on 127.0.0.1, started and stopped by this script, one at a time:
  skylift      `skylift serve mnist-mlp --replicas 2 --no-auth --cache none` (dynamic batching),
               V2 binary and JSON
  naive        FastAPI + uvicorn, pydantic-validated V2 JSON, one forward per request (`async def`,
               so one request at a time per worker; torch 1 thread per worker), 1 and 2 workers
  ceiling      a constant response of the same size as the naive server's, no model, no framework:
               raw ASGI on uvicorn (httptools, uvloop) and RSGI on granian, 1 worker each
Each is driven by `skylift bench serve` at concurrency 1, 16 and 64 with one-row MNIST requests.
The load generator is checked against wrk (same POST body, 1 thread) on the ceiling servers at
concurrency 64: `--rounds` back-to-back pairs of 2 s runs, the order flipping each round; the
verdict is the median of the per-pair ratios, since other jobs on a shared machine move the
figures more between minutes than the two tools differ. It also reports each tool's CPU time per
request (what the generator takes away from a server that shares its cores).

Model: the MNIST MLP of examples/mnist_mlp.yaml trained 1 epoch into a temporary home.
Run: `python benchmarks/serve_throughput.py [--duration 5] [--rounds 3]`; prints markdown tables.
Needs: fastapi, uvicorn[standard], granian (the `bench` extra) and wrk (Debian package).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "mnist_mlp.yaml"
MODEL = "mnist-mlp"
FEATURES = 784


# -- the servers under test (run as `python serve_throughput.py --server KIND`) -------------------


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    """Module level: FastAPI resolves the endpoint's (string) annotations in module globals."""

    inputs: list[Tensor]


def naive_app() -> Any:
    """The baseline as a FastAPI user writes it: pydantic request model, torch.tensor from lists."""
    import torch
    from fastapi import FastAPI

    from skylift.registry import load_model

    torch.set_num_threads(1)  # two workers on two cores: one thread each, as a fair deployment
    model = load_model(MODEL, home=os.environ["BENCH_HOME"]).module.eval()

    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: InferRequest) -> dict[str, Any]:
        t = request.inputs[0]
        x = torch.tensor(t.data, dtype=torch.float32).reshape(t.shape)
        with torch.inference_mode():
            probs = torch.softmax(model(x), dim=-1)
        return {"model_name": name, "outputs": [_tensor(probs.tolist())]}

    return app


def _tensor(rows: list[list[float]]) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    return {"name": "probabilities", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": flat}


def _constant_body() -> bytes:
    return Path(os.environ["BENCH_BODY"]).read_bytes()


def const_asgi() -> Any:
    """The HTTP ceiling on uvicorn: read the body, answer the same bytes, nothing else."""
    body = _constant_body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    done = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(start)
        await send(done)

    return app


def const_rsgi() -> Any:
    """The HTTP ceiling on granian's native interface."""
    body = _constant_body()
    headers = [("content-type", "application/json")]

    async def app(scope: Any, protocol: Any) -> None:
        await protocol()
        protocol.response_bytes(status=200, headers=headers, body=body)

    return app


def serve(kind: str, port: int, workers: int) -> None:
    common = {"host": "127.0.0.1", "port": port, "workers": workers, "log_level": "warning"}
    if kind == "const-granian":
        flags = ["--interface", "rsgi", "--factory", "--working-dir", str(HERE), "--no-access-log"]
        where = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        os.execvp(
            "granian", ["granian", *flags, *where, "--log-level", "warning", "serve_throughput:const_rsgi"]
        )
    import uvicorn

    target = {"naive": "serve_throughput:naive_app", "const-uvicorn": "serve_throughput:const_asgi"}[kind]
    uvicorn.run(target, factory=True, app_dir=str(HERE), access_log=False, **common)  # type: ignore[arg-type]


# -- running one server and measuring it ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Server:
    """One server under test: its command ({port} is filled in) and what to send it."""

    name: str
    cmd: list[str]
    ready_path: str
    protocols: list[str]
    features: bool = True
    """Pass --features (the server has no V2 metadata route)."""
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running(server: Server, env: dict[str, str], log: Path) -> Iterator[Server]:
    """Start the server in its own process group, wait until ready, stop the whole group after."""
    server.port = free_port()
    cmd = [a.replace("{port}", str(server.port)) for a in server.cmd]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not _ready(server.url + server.ready_path):
            if proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {proc.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not ready after 180 s: {_tail(log)}")
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this script created for the server
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)  # let the port and the cores settle before the next server


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:]


def bench(server: Server, concurrency: int, protocol: str, duration: float) -> dict[str, Any]:
    """One `skylift bench serve` run (a real CLI process) -> its JSON report."""
    cmd = [sys.executable, "-m", "skylift", "bench", "serve", server.url, "--model", MODEL]
    cmd += ["-c", str(concurrency), "--protocol", protocol, "--duration", str(duration)]
    cmd += ["--warmup", "1", "--json", "-"]
    if server.features:
        cmd += ["--features", str(FEATURES)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if done.stdout.strip().startswith("{"):
        report: dict[str, Any] = json.loads(done.stdout)
        return report
    raise RuntimeError(f"skylift bench serve failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def wrk(url: str, body: bytes, concurrency: int, duration: float, tmp: Path) -> dict[str, float]:
    """One wrk run (1 thread) POSTing the same V2 JSON body -> requests/s, p50/p99 ms, its CPU seconds."""
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{body.decode()}]]\n"
    )
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script)]
    cmd.append(f"{url}/v2/models/{MODEL}/infer")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output: {out[-500:]}")
    lat = {p: _wrk_ms(re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)) for p in ("50", "99")}
    done = re.search(r"(\d+) requests in", out)
    requests = float(done.group(1)) if done else float("nan")
    return {
        "requests_per_s": float(rps.group(1)),
        "p50": lat["50"],
        "p99": lat["99"],
        "cpu_s": cpu_s,
        "requests": requests,
    }


def _wrk_ms(m: re.Match[str] | None) -> float:
    if m is None:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


# -- the run --------------------------------------------------------------------------------------


def prepare(home: Path) -> tuple[bytes, bytes]:
    """Train and register the model; return (naive server's response to one row, one request body)."""
    import numpy as np
    import torch

    from skylift.loadgen._body import build_template, sample_rows
    from skylift.loadgen._config import parse_url
    from skylift.registry import load_model
    from skylift.spec import load_spec
    from skylift.train import fit

    with contextlib.redirect_stdout(sys.stderr):
        fit(load_spec(EXAMPLE, ["train.epochs=1"]), home=home)
    x = sample_rows(1, (FEATURES,))
    template = build_template("v2-json", parse_url("http://127.0.0.1"), MODEL, x)
    model = load_model(MODEL, home=home).module.eval()
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(np.asarray(x))), dim=-1)
    response = json.dumps({"model_name": MODEL, "outputs": [_tensor(probs.tolist())]}).encode()
    return response, template.body


def servers(home: Path) -> list[Server]:
    me = [sys.executable, str(Path(__file__).resolve()), "--port", "{port}", "--server"]
    skylift = [sys.executable, "-m", "skylift", "--home", str(home), "serve", MODEL]
    # No response cache: every bench run numbers its requests from 0, so later runs would be
    # answered from the cache the earlier ones filled instead of by the model.
    skylift += ["--port", "{port}", "--no-auth", "--replicas", "2", "--cache", "none"]
    ready = "/v2/health/ready"
    return [
        Server("skylift", skylift, ready, ["v2-binary", "v2-json"], features=False),
        Server("naive-1w", [*me, "naive"], ready, ["v2-json"]),
        Server("naive-2w", [*me, "naive", "--workers", "2"], ready, ["v2-json"]),
        Server("const-uvicorn", [*me, "const-uvicorn"], "/", ["v2-json"]),
        Server("const-granian", [*me, "const-granian"], "/", ["v2-json"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--rounds", type=int, default=10, help="wrk / bench pairs, order flipping (default 10)")
    ap.add_argument("--check-duration", type=float, default=2.0, help="seconds per wrk / bench run (2)")
    ap.add_argument("--only", nargs="+", help="server names to run (default: all)")
    ap.add_argument("--server", help=argparse.SUPPRESS)  # internal: run one server in this process
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        serve(args.server, args.port, args.workers)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        t0 = time.monotonic()
        response, request_body = prepare(home)
        print(f"trained and registered {MODEL}:1 in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        (tmp / "body.json").write_bytes(response)
        env = {"BENCH_HOME": str(home), "BENCH_BODY": str(tmp / "body.json")}
        rows: list[dict[str, Any]] = []
        checks: list[dict[str, Any]] = []
        for server in servers(home):
            if args.only and server.name not in args.only:
                continue
            try:
                with running(server, env, tmp / f"{server.name}.log") as srv:
                    for protocol in srv.protocols:
                        for c in args.concurrency:
                            r = _figures(bench(srv, c, protocol, args.duration))
                            rows.append({"server": srv.name, "protocol": protocol, "concurrency": c, **r})
                            print(json.dumps(rows[-1]), file=sys.stderr)
                    if srv.name.startswith("const-"):
                        checks.append(_compare(srv, request_body, args, tmp))
                        print(json.dumps(checks[-1]), file=sys.stderr)
            except RuntimeError as exc:
                print(f"{server.name}: not measured: {exc}", file=sys.stderr)
                rows.append(
                    {"server": server.name, "protocol": "-", "concurrency": 0, "missing": str(exc)[:300]}
                )
        report(rows, checks)


def _figures(r: dict[str, Any]) -> dict[str, Any]:
    lat = r["latency_ms"]
    return {
        "requests_per_s": r["requests_per_s"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "errors": sum(r["errors"].values()),
        "client_cpu": max(r["client_cpu"]),
        "processes": r["processes"],
    }


def _compare(server: Server, body: bytes, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """wrk and `skylift bench serve` back to back at concurrency 64, `--rounds` times, the order
    flipping each round: the machine's load drifts (other jobs share the cores), so each round's
    pair sees the same conditions; the verdict is the median of the per-round ratios."""
    w: list[dict[str, float]] = []
    b: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for tool in ("wrk", "bench") if i % 2 == 0 else ("bench", "wrk"):
            if tool == "wrk":
                w.append(wrk(server.url, body, 64, args.check_duration, tmp))
            else:
                b.append(bench(server, 64, "v2-json", args.check_duration))
    wrk_cpu_us = statistics.median(1e6 * x["cpu_s"] / x["requests"] for x in w)
    bench_cpu_us = statistics.median(1e6 * sum(x["client_cpu"]) / x["requests_per_s"] for x in b)
    return {
        "server": server.name,
        "ratio": statistics.median(
            y["requests_per_s"] / x["requests_per_s"] for x, y in zip(w, b, strict=True)
        ),
        "wrk": statistics.median(x["requests_per_s"] for x in w),
        "bench": statistics.median(x["requests_per_s"] for x in b),
        "wrk_p99": statistics.median(x["p99"] for x in w),
        "bench_p99": statistics.median(x["latency_ms"]["p99"] for x in b),
        "wrk_cpu_us": wrk_cpu_us,
        "bench_cpu_us": bench_cpu_us,
        "bench_processes": b[0]["processes"],
        "pairs": [
            (round(x["requests_per_s"]), round(y["requests_per_s"])) for x, y in zip(w, b, strict=True)
        ],
    }


def _n(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def report(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> None:
    """Markdown tables for RESULTS.md, then the issue's targets."""
    print(
        "\n| server | protocol | concurrency | requests/s | p50 ms | p99 ms | errors | client procs (cpu) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "missing" in r:
            print(f"| {r['server']} | - | - | not measured: {r['missing']} | | | | |")
            continue
        print(
            f"| {r['server']} | {r['protocol']} | {r['concurrency']} | {_n(r['requests_per_s'])} | "
            f"{_n(r['p50'], '.2f')} | {_n(r['p99'], '.2f')} | {r['errors']} | "
            f"{r['processes']} ({r['client_cpu']:.0%}) |"
        )
    print(
        "\n| ceiling, c=64 | wrk req/s | bench req/s | bench / wrk (median of pairs) | p99 wrk / bench |"
        " client CPU per request wrk / bench | pairs (wrk, bench) |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in checks:
        pairs = "; ".join(f"{x:,} / {y:,}" for x, y in c["pairs"])
        print(
            f"| {c['server']} | {c['wrk']:,.0f} | {c['bench']:,.0f} ({c['bench_processes']} procs) | "
            f"{c['ratio']:.2f} | {c['wrk_p99']:.2f} / {c['bench_p99']:.2f} ms | "
            f"{c['wrk_cpu_us']:.1f} / {c['bench_cpu_us']:.1f} us | {pairs} |"
        )

    def at(server: str, protocol: str) -> dict[str, Any] | None:
        key = (server, protocol, 64)
        return next((r for r in rows if (r["server"], r["protocol"], r["concurrency"]) == key), None)

    base, binary, js = at("naive-2w", "v2-json"), at("skylift", "v2-binary"), at("skylift", "v2-json")
    ceilings = [r for r in rows if r["server"].startswith("const-") and r["concurrency"] == 64]
    ceiling = max(ceilings, key=lambda r: float(r["requests_per_s"]), default=None)
    print("\nTargets at concurrency 64:")
    if base and binary:
        ratio = binary["requests_per_s"] / base["requests_per_s"]
        print(f"- skylift v2-binary / naive 2 workers: {ratio:.2f}x (target >= 3x)")
        print(
            f"- p99: skylift v2-binary {binary['p99']:.2f} ms vs naive 2 workers {base['p99']:.2f} ms (lower)"
        )
    if base and js:
        ratio = js["requests_per_s"] / base["requests_per_s"]
        print(f"- skylift v2-json / naive 2 workers: {ratio:.2f}x (target >= 2x)")
    if binary and ceiling:
        share = binary["requests_per_s"] / ceiling["requests_per_s"]
        print(f"- skylift v2-binary / ceiling ({ceiling['server']}): {share:.0%} (target >= 60%)")
    if not binary:
        print("- skylift serve was not measured (see above)")


if __name__ == "__main__":
    main()
