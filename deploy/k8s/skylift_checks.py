"""The checks of rendered manifests against skylift itself: a container's args parse with its CLI;
a server is reachable, probed on its V2 health routes and port, with a readiness key its keys.json
holds; a multi-node Job finds node 0 through its headless Service; a mounted job spec loads; an
autoscaler's metric is one skylift serves. Used by validate.py."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import k8s_objects as k8s
from k8s_objects import Obj

HEALTH_ROUTES = ("v2/health/live", "v2/health/ready")
HEALTHCHECK = "/opt/skylift-healthcheck.py"
"""The image's health check (deploy/Containerfile): /v2/health/ready with $SKYLIFT_PROBE_KEY."""


def is_skylift(container: Obj) -> bool:
    """A container of skylift's image, whatever its registry and tag: its entrypoint is `skylift`."""
    return str(container.get("image", "")).rsplit("/", 1)[-1].split("@")[0].split(":")[0] == "skylift"


def command_problems(objects: list[Obj], workload: Obj, pod: Obj, container: Obj) -> list[str]:
    """What is wrong with the skylift command a container runs, and with what it needs around it."""
    if "command" in container:
        return ["`command` replaces the image's skylift entrypoint; give `args` only"]
    # Each pod of an indexed Job gets its own index: its args must parse for every one.
    count = int(workload["spec"].get("completions") or 1) if workload["kind"] == "Job" else 1
    found: list[str] = []
    parsed = None
    for index in range(max(1, count)):
        env = k8s.environment(objects, workload, container, index)
        args, unknown = k8s.expand(container.get("args", []), env)
        found += [f"args use $({name}), which is not in the container's env" for name in unknown]
        parsed, error = _parse(args)
        if parsed is None:
            return [*found, f"`skylift {' '.join(args)}` does not parse: {error}"]
    assert parsed is not None  # the loop ran at least once
    if parsed.command == "serve":
        found += _serve_problems(objects, pod, container, parsed)
    if parsed.command in ("train", "predict") and (parsed.nnodes or 1) > 1:
        found += _multinode_problems(objects, workload, container, parsed)
    if parsed.command == "train" and parsed.spec:
        found += _spec_problems(objects, pod, container, parsed.spec)
    return found


def metric_problems(autoscaler: Obj) -> list[str]:
    """Pods metrics of an autoscaler that skylift serve does not set."""
    served = served_metrics()
    metrics = autoscaler["spec"].get("metrics", [])
    return [
        f"scales on {name}, which is not a metric skylift serve sets ({', '.join(sorted(served))})"
        for name in (m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods")
        if name not in served
    ]


def served_metrics() -> set[str]:
    """The metric names `skylift serve` puts in /metrics, read from its source: those spelled out
    in serve/metrics.py, and skylift_<name> for each gauge set as `metrics.extra["<name>"]` or
    returned by a runtime's `gauges()`."""
    import skylift.serve

    folder = Path(skylift.serve.__file__).parent
    found = set(re.findall(r"\bskylift_[a-z_]*[a-z]\b", (folder / "metrics.py").read_text()))
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names: list[ast.expr | None] = []
            if isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "extra":
                names = [node.slice]
            elif isinstance(node, ast.FunctionDef) and node.name == "gauges":
                names = [k for d in ast.walk(node) if isinstance(d, ast.Dict) for k in d.keys]
            found |= {
                f"skylift_{n.value}"
                for n in names
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            }
    return found


def _parse(args: list[str]) -> tuple[argparse.Namespace | None, str]:
    """skylift's own parser on `args`: (namespace, "") or (None, its error line)."""
    from skylift.cli import _parser

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
            return _parser().parse_args(args), ""
    except SystemExit:
        return None, (said.getvalue().strip().splitlines() or ["it exits"])[-1]


def _serve_problems(objects: list[Obj], pod: Obj, container: Obj, args: argparse.Namespace) -> list[str]:
    from skylift.serve import routes

    found = []
    if args.host in ("127.0.0.1", "localhost", "::1"):
        found.append(f"serves on {args.host}: probes and Services cannot reach it; pass --host=0.0.0.0")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if args.port not in ports.values():
        found.append(f"serves port {args.port}, not one of its containerPorts {sorted(ports.values())}")
    found += [f"has no {kind}" for kind in ("livenessProbe", "readinessProbe") if kind not in container]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind, {})
        if "httpGet" in probe:
            path, port = probe["httpGet"]["path"], probe["httpGet"]["port"]
            route = routes.match(path.partition("?")[0])
            if route.name not in HEALTH_ROUTES:
                found.append(f"{kind} GET {path}: not a V2 health route ({', '.join(HEALTH_ROUTES)})")
            elif route.scope is not None:
                found.append(f"{kind} GET {path}: needs a `{route.scope}` key, which httpGet cannot send")
            if ports.get(port, port) != args.port:
                found.append(f"{kind} probes port {port}, but skylift serves {args.port}")
        elif HEALTHCHECK in probe.get("exec", {}).get("command", []):
            found += _healthcheck_problems(objects, pod, container, kind, args.port)
    for service in (o for o in objects if o["kind"] == "Service"):
        if k8s.selects(service["spec"].get("selector") or {"": ""}, pod["labels"]):
            for sp in service["spec"].get("ports", []):
                target = sp.get("targetPort", sp["port"])
                if ports.get(target, target) != args.port:
                    found.append(
                        f"{k8s.name_of(service)} sends port {sp['port']} to {target}, not {args.port}"
                    )
    return found


def _healthcheck_problems(objects: list[Obj], pod: Obj, container: Obj, kind: str, port: int) -> list[str]:
    """The image's health check: $SKYLIFT_PROBE_PORT is the served port, $SKYLIFT_PROBE_KEY a
    `predict` key that the server's keys.json holds."""
    env = {var["name"]: var for var in container.get("env", [])}
    found = []
    if env.get("SKYLIFT_PROBE_PORT", {}).get("value", "8000") != str(port):
        found.append(f"{kind}: SKYLIFT_PROBE_PORT is not the served port {port}")
    ref = env.get("SKYLIFT_PROBE_KEY", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        return [*found, f"{kind}: the health check needs SKYLIFT_PROBE_KEY (a `predict` key) from a Secret"]
    secret = k8s.get(objects, "Secret", ref["name"])
    keys_path = env.get("SKYLIFT_API_KEYS_FILE", {}).get("value", "")
    stored = k8s.mounted(objects, pod, container, keys_path)
    if secret is None or not stored or ref["key"] not in k8s.keys(secret):
        return found  # made elsewhere, or reported already: nothing more to check offline
    from skylift.errors import SkyliftError
    from skylift.security.apikeys import KeyStore

    key, named = k8s.value(secret, ref["key"]), f"{ref['key']} of Secret {ref['name']}"
    if key != key.strip():
        return [*found, f"{kind}: {named} ends in whitespace, which no HTTP header may carry (tr -d '\\n')"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "keys.json").write_text(stored)
        try:
            info = KeyStore(Path(tmp) / "keys.json").verify(key)
        except SkyliftError:
            return [*found, f"{kind}: {named} is not a key of {keys_path} (make it with skylift keys create)"]
    if "predict" not in info.scopes:
        found.append(f"{kind}: the probe key {info.name!r} lacks the `predict` scope /v2/health/ready needs")
    return found


def _multinode_problems(objects: list[Obj], job: Obj, container: Obj, args: argparse.Namespace) -> list[str]:
    """One pod per node, each its own rank, all finding node 0 through a headless Service."""
    spec = job["spec"]
    if job["kind"] != "Job" or spec.get("completionMode") != "Indexed":
        return [f"--nnodes {args.nnodes} needs an indexed Job (one pod per node rank)"]
    found = []
    if not spec.get("completions") == spec.get("parallelism") == args.nnodes:
        found.append(
            f"--nnodes {args.nnodes} needs completions and parallelism {args.nnodes}, "
            f"got {spec.get('completions')} and {spec.get('parallelism')}"
        )
    raw = dict(_flags(container.get("args", [])))
    if raw.get("--node-rank") != "$(JOB_COMPLETION_INDEX)":
        found.append(f"--node-rank must be $(JOB_COMPLETION_INDEX), got {raw.get('--node-rank')}")
    named = k8s.VAR.fullmatch(raw.get("--node-addr", ""))
    fields = {
        v["name"]: v.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for v in container["env"]
    }
    if named and fields.get(named.group(1)) != "status.podIP":
        found.append(f"--node-addr $({named.group(1)}) must come from the pod IP (fieldRef status.podIP)")
    if not args.rdzv_endpoint:
        return [*found, f"--nnodes {args.nnodes} needs --rdzv-endpoint"]
    host, _, port = args.rdzv_endpoint.rpartition(":")
    pod, subdomain = job["metadata"]["name"] + "-0", spec["template"]["spec"].get("subdomain")
    service = k8s.get(objects, "Service", subdomain or "")
    if host.split(".")[:2] != [pod, subdomain]:
        found.append(f"--rdzv-endpoint host {host} is not node 0's DNS name {pod}.{subdomain}")
    if service is None or service["spec"].get("clusterIP") != "None":
        found.append(f"subdomain {subdomain} names no headless Service (clusterIP: None)")
    elif not k8s.selects(service["spec"].get("selector") or {"": ""}, k8s.labels(job)):
        found.append(f"headless Service {subdomain} does not select the Job's pods")
    elif int(port) not in [p["port"] for p in service["spec"].get("ports", [])]:
        found.append(f"headless Service {subdomain} does not list the rendezvous port {port}")
    return found


def _spec_problems(objects: list[Obj], pod: Obj, container: Obj, path: str) -> list[str]:
    """A job spec mounted from a ConfigMap must be there and load as a skylift job spec."""
    text = k8s.mounted(objects, pod, container, path)
    if text is None:
        return []  # on a volume: not visible offline
    from skylift.errors import SkyliftError
    from skylift.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "job.yaml"
        file.write_text(text)
        try:
            load_spec(file)
        except SkyliftError as exc:
            return [f"job spec {path}: {str(exc).replace(f'{file}: ', '').replace(str(file), path)}"]
    return []


def _flags(args: list[str]) -> Iterator[tuple[str, str]]:
    """(--flag, value) of args written --flag=value or --flag value."""
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            yield flag, value if eq else (args[i + 1] if i + 1 < len(args) else "")
