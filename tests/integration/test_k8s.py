"""deploy/k8s, the Kubernetes manifests, checked offline: every overlay renders with kubectl's
kustomize and passes deploy/k8s/validate.py (the Kubernetes API schemas, then skylift's own CLI,
routes, key store and metrics); the secrets and overlays docs/kubernetes.md gives are the ones
checked; the readiness probe really asks /v2/health/ready with the probe key; and each mistake a
platform engineer could make fails, naming what is wrong."""

from __future__ import annotations

import base64
import http.server
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from skylift.cli import _parser
from skylift.security.apikeys import KeyStore
from skylift.serve import routes
from skylift.serve.metrics import Metrics
from skylift.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOC = ROOT / "docs" / "kubernetes.md"
CONTAINERFILE = (ROOT / "deploy" / "Containerfile").read_text()
OVERLAYS = ("serve", "train", "predict")
SECRET_FILES = ("master.key", "keys.json", "keys.json.lock", "probe.key", "metrics.key")

Obj = dict[str, Any]


def _doc_block(lang: str, containing: str) -> str:
    """The one fenced `lang` block of docs/kubernetes.md holding `containing`."""
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S) if containing in b]
    assert len(blocks) == 1, f"docs/kubernetes.md: {len(blocks)} {lang} blocks hold {containing!r}"
    return str(blocks[0])


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`script` under bash -euo pipefail in `cwd`, with this Python's `skylift` first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SKYLIFT_HOME": str(cwd / "home"),
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def validate() -> ModuleType:
    """deploy/k8s/validate.py, imported as its script runs: its folder first on sys.path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(K8S))
        return importlib.import_module("validate")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository root holding a copy of deploy/k8s, its secrets made by the commands of
    docs/kubernetes.md, and the documented overlays of my-skylift/."""
    root = tmp_path_factory.mktemp("k8s-root")
    shutil.copytree(K8S, root / "deploy" / "k8s", ignore=shutil.ignore_patterns(*SECRET_FILES, "__pycache__"))
    done = _bash(_doc_block("bash", "skylift keys master-create"), root)
    assert done.returncode == 0, done.stderr
    for name in ("serve", "train"):
        path = f"my-skylift/{name}/kustomization.yaml"
        (root / path).parent.mkdir(parents=True)
        (root / path).write_text(_doc_block("yaml", f"# {path}"))
    return root


@pytest.fixture
def root(made: Path, tmp_path: Path) -> Path:
    """A fresh copy of `made` for a test that breaks something."""
    shutil.copytree(made, tmp_path / "root")
    return tmp_path / "root"


@pytest.fixture(scope="module")
def rendered(made: Path, validate: ModuleType) -> dict[str, list[Obj]]:
    return {name: validate.render(made / "deploy" / "k8s" / "overlays" / name) for name in OVERLAYS}


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def _container(workload: Obj) -> Obj:
    containers: list[Obj] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: Obj) -> dict[str, Obj]:
    return {var["name"]: var for var in container.get("env", [])}


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, (pattern, text[:200])
    return match.group(1)


def _secret(objects: list[Obj], name: str, key: str) -> str:
    return base64.b64decode(_one(objects, "Secret", name)["data"][key]).decode()


# -- the shipped overlays --------------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_overlay_renders_and_passes_the_validator(
    name: str, rendered: dict[str, list[Obj]], validate: ModuleType
) -> None:
    objects = rendered[name]
    assert validate.problems(objects) == []
    kinds = {o["kind"] for o in objects}
    assert {"PersistentVolumeClaim", "ServiceAccount", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds
    expected = {
        "serve": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"},
        "train": {"Job", "Service"},
        "predict": {"Job", "Service"},
    }[name]
    assert expected <= kinds


def test_the_documented_validate_commands_pass(made: Path) -> None:
    done = _bash(_doc_block("bash", "python deploy/k8s/validate.py"), made)
    assert done.returncode == 0, done.stdout + done.stderr
    for overlay in ("deploy/k8s/overlays/serve", "deploy/k8s/overlays/train", "deploy/k8s/overlays/predict"):
        assert re.search(rf"^{overlay}: \d+ objects, ok$", done.stdout, re.M), done.stdout
    assert "my-skylift/train: 9 objects, ok" in done.stdout
    assert "my-skylift/serve: 10 objects, ok" in done.stdout


def test_the_documented_overlays_set_namespace_image_storage_and_node_count(
    made: Path, validate: ModuleType
) -> None:
    train = validate.render(made / "my-skylift" / "train")
    assert {o["metadata"].get("namespace") for o in train} == {"ml"}
    assert _one(train, "PersistentVolumeClaim")["spec"]["storageClassName"] == "nfs-client"
    job = _one(train, "Job")
    assert _container(job)["image"] == "registry.example.com/ml/skylift:0.1.0"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert "--nnodes=4" in _container(job)["args"]


def test_serve_probes_ask_the_v2_health_routes_on_the_served_port(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["serve"]
    container = _container(_one(objects, "Deployment"))
    args = _parser().parse_args(container["args"])
    assert args.command == "serve" and args.host == "0.0.0.0" and not args.no_auth
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("startupProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert routes.match(probe["path"]) == routes.Route("v2/health/live", None)  # no key needed
        assert ports[probe["port"]] == args.port
    # Readiness needs a `predict` key: the image's own health check sends one.
    assert container["readinessProbe"]["exec"]["command"] == ["python3", "/opt/skylift-healthcheck.py"]
    assert "COPY healthcheck.py /opt/skylift-healthcheck.py" in CONTAINERFILE
    assert _env(container)["SKYLIFT_PROBE_PORT"]["value"] == str(args.port)
    service = _one(objects, "Service", "skylift-serve")
    assert [ports[p["targetPort"]] for p in service["spec"]["ports"]] == [args.port]


def test_the_readiness_probe_sends_the_probe_key_to_v2_health_ready(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """deploy/healthcheck.py run with the container's probe settings, against a stub server."""
    objects = rendered["serve"]
    container = _container(_one(objects, "Deployment"))
    ref = _env(container)["SKYLIFT_PROBE_KEY"]["valueFrom"]["secretKeyRef"]
    key = _secret(objects, ref["name"], ref["key"])
    asked: list[tuple[str, str]] = []

    class Stub(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append((self.path, self.headers.get("Authorization", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub) as stub:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        env = {**os.environ, "SKYLIFT_PROBE_KEY": key, "SKYLIFT_PROBE_PORT": str(stub.server_address[1])}
        done = subprocess.run([sys.executable, str(ROOT / "deploy" / "healthcheck.py")], env=env, timeout=30)
        stub.shutdown()
    assert done.returncode == 0
    [(path, authorization)] = asked
    assert routes.match(path).name == "v2/health/ready"
    # ... and the key is one the server accepts there: in the mounted keys.json, with `predict`.
    keys = tmp_path / "keys.json"
    keys.write_text(_secret(objects, "skylift-api-keys", "keys.json"))
    assert "predict" in KeyStore(keys).verify(authorization.removeprefix("Bearer ")).scopes


@pytest.mark.parametrize(("name", "port"), [("train", 29400), ("predict", 29500)])
def test_multinode_jobs_find_node_0_through_their_headless_service(
    name: str, port: int, rendered: dict[str, list[Obj]]
) -> None:
    objects = rendered[name]
    job = _one(objects, "Job")
    container, pod = _container(job), job["spec"]["template"]["spec"]
    raw = dict(arg.split("=", 1) for arg in container["args"] if arg.startswith("--"))
    env = _env(container)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == int(raw["--nnodes"]) == 2
    assert raw["--node-rank"] == "$(JOB_COMPLETION_INDEX)"
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert raw["--node-addr"] == "$(POD_IP)"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # An indexed Job's pod i is <job>-i; with `subdomain` it resolves as <job>-i.<subdomain>.
    service = _one(objects, "Service", pod["subdomain"])
    assert raw["--rdzv-endpoint"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}:{port}"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_the_autoscaler_scales_on_the_queue_depth_skylift_serves(
    rendered: dict[str, list[Obj]], validate: ModuleType
) -> None:
    objects = rendered["serve"]
    metrics = _one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    [metric] = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    assert metric == "skylift_queue_rows"
    assert metric in validate.skylift_checks.served_metrics()
    # A gauge per replica, which the adapter rule sums per pod.
    m = Metrics(replica=0, folder=None)
    m.extra["queue_rows"] = 5
    assert "# TYPE skylift_queue_rows gauge" in m.render()
    assert 'skylift_queue_rows{replica="0"} 5' in m.render()
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    assert rule["seriesQuery"].startswith(f"{metric}{{") and rule["name"]["as"] == metric
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert rule["metricsQuery"].startswith("sum(")
    # The PodMonitor scrapes the serving pods' port with a `metrics` key.
    monitor = yaml.safe_load((K8S / "monitoring" / "podmonitor.yaml").read_text())
    deployment = _one(objects, "Deployment")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in _container(deployment)["ports"]}
    assert routes.match(endpoint["path"]).scope == "metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert f"generic {credentials['name']} " in DOC.read_text()
    assert f"--from-file={credentials['key']}=" in DOC.read_text()


def test_serve_and_predict_use_the_model_the_train_job_registers(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    config = next(o for o in rendered["train"] if o["metadata"]["name"].startswith("skylift-train-spec"))
    (tmp_path / "job.yaml").write_text(config["data"]["job.yaml"])
    spec = load_spec(tmp_path / "job.yaml")
    serve = _parser().parse_args(_container(_one(rendered["serve"], "Deployment"))["args"])
    predict = _container(_one(rendered["predict"], "Job"))["args"]
    assert [re.split("[:@]", ref)[0] for ref in serve.models] == [spec.name]
    assert predict[:2] == ["predict", spec.name]


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_run_unprivileged_with_skylift_home_on_the_shared_volume(
    name: str, rendered: dict[str, list[Obj]]
) -> None:
    objects = rendered[name]
    uid = int(_found(r"--uid (\d+)", CONTAINERFILE))
    home = _found(r"SKYLIFT_HOME=(\S+)", CONTAINERFILE)
    env = next(o for o in objects if o["metadata"]["name"].startswith("skylift-env"))
    assert env["data"]["SKYLIFT_HOME"] == home
    assert _one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    workload = next(o for o in objects if o["kind"] in ("Deployment", "Job"))
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == uid
    container = _container(workload)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container["resources"]["limits"] and "cpu" in container["resources"]["requests"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # the only writable path besides the volume
    claim = volumes[mounts[home]["name"]]["persistentVolumeClaim"]["claimName"]
    assert _one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert mounts[home].get("readOnly", False) is (name == "serve")  # servers only read the registry


# -- mistakes, each named --------------------------------------------------------------------


def _overlay(root: Path, base: str, *patch: dict[str, Any], **more: Any) -> Path:
    """A kustomize overlay over deploy/k8s/overlays/`base` applying JSON patches to its workload."""
    target = {"kind": "Deployment" if base == "serve" else "Job"}
    spec = {"resources": [f"../deploy/k8s/overlays/{base}"], **more}
    if patch:
        spec["patches"] = [{"target": target, "patch": yaml.safe_dump(list(patch))}]
    (root / "broken").mkdir()
    (root / "broken" / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return root / "broken"


def _replace(path: str, value: Any) -> dict[str, Any]:
    return {"op": "replace", "path": "/spec/template/spec/containers/0/" + path, "value": value}


def _without_secrets(root: Path) -> Path:
    kustomization = root / "deploy" / "k8s" / "overlays" / "serve" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - ../../secrets\n", ""))
    return kustomization.parent


def _rewrite(relative: str, change: Callable[[str], str], overlay: str) -> Callable[[Path], Path]:
    """Edits deploy/k8s/`relative` in place; the overlay to check is `overlay`."""

    def edit(root: Path) -> Path:
        path = root / "deploy" / "k8s" / relative
        path.write_text(change(path.read_text()))
        return root / "deploy" / "k8s" / "overlays" / overlay

    return edit


def _other_probe_key(root: Path) -> Path:
    key, _ = KeyStore(root / "elsewhere.json").create("probe", ("predict",))
    (root / "deploy" / "k8s" / "secrets" / "probe.key").write_text(key)
    return root / "deploy" / "k8s" / "overlays" / "serve"


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "the serve overlay without its Secrets": (
        _without_secrets,
        "skylift-serve: env SKYLIFT_MASTER_KEY uses Secret skylift-master-key, which is not defined",
    ),
    "a liveness probe on a route skylift does not have": (
        lambda root: _overlay(root, "serve", _replace("livenessProbe/httpGet/path", "/v2/health/alive")),
        "livenessProbe GET /v2/health/alive: not a V2 health route",
    ),
    "a startup probe on the route that needs a key": (
        lambda root: _overlay(root, "serve", _replace("startupProbe/httpGet/path", "/v2/health/ready")),
        "startupProbe GET /v2/health/ready: needs a `predict` key",
    ),
    "a probe on another port": (
        lambda root: _overlay(root, "serve", _replace("livenessProbe/httpGet/port", 8080)),
        "livenessProbe probes port 8080, but skylift serves 8000",
    ),
    "a server bound to loopback": (
        lambda root: _overlay(root, "serve", _replace("args/2", "--host=127.0.0.1")),
        "serves on 127.0.0.1: probes and Services cannot reach it",
    ),
    "a flag skylift does not have": (
        lambda root: _overlay(root, "serve", _replace("args/4", "--max-batch=32")),
        "does not parse: skylift serve: error: ambiguous option: --max-batch=32",
    ),
    "a field Kubernetes does not have": (
        lambda root: _overlay(root, "serve", {**_replace("readinesProbe", {}), "op": "add"}),
        "Additional properties are not allowed ('readinesProbe' was unexpected) (Kubernetes 1.30 schema)",
    ),
    "a probe key written with its newline": (
        _rewrite("secrets/probe.key", lambda key: key + "\n", "serve"),
        "probe.key of Secret skylift-api-keys ends in whitespace",
    ),
    "a probe key the server does not hold": (
        _other_probe_key,
        "probe.key of Secret skylift-api-keys is not a key of /etc/skylift/api-keys/keys.json",
    ),
    "an autoscaler on a metric skylift does not serve": (
        _rewrite(
            "overlays/serve/horizontalpodautoscaler.yaml", lambda t: t.replace("_rows", "_depth"), "serve"
        ),
        "scales on skylift_queue_depth, which is not a metric skylift serve sets",
    ),
    "a node count the Job does not run": (
        lambda root: _overlay(root, "train", {"op": "replace", "path": "/spec/completions", "value": 3}),
        "--nnodes 2 needs completions and parallelism 2, got 3 and 2",
    ),
    "a name prefix the rendezvous endpoint does not follow": (
        lambda root: _overlay(root, "train", namePrefix="team-"),
        "--rdzv-endpoint host skylift-train-0.skylift-train is not node 0's DNS name team-skylift-train-0",
    ),
    "a job spec skylift refuses": (
        _rewrite("overlays/train/mnist_mlp.yaml", lambda t: t.replace("epochs: 10", "epochs: 0"), "train"),
        "job spec /etc/skylift/job/job.yaml: train.epochs",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_overlay_fails_naming_what_is_wrong(case: str, root: Path, validate: ModuleType) -> None:
    breaking, expected = BROKEN[case]
    found = validate.problems(validate.render(breaking(root)))
    assert any(expected in line for line in found), found


def test_a_missing_secret_file_names_the_secret_before_rendering(root: Path, validate: ModuleType) -> None:
    (root / "deploy" / "k8s" / "secrets" / "probe.key").unlink()
    with pytest.raises(validate.RenderError, match=r"Secret skylift-api-keys needs the file \S+/probe\.key"):
        validate.render(root / "deploy" / "k8s" / "overlays" / "serve")
    done = subprocess.run(
        [sys.executable, "deploy/k8s/validate.py", "deploy/k8s/overlays/train"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Secret skylift-api-keys needs the file" in done.stdout


def test_secrets_made_elsewhere_pass_once_named(root: Path, validate: ModuleType) -> None:
    objects = validate.render(_without_secrets(root))
    missing = [line for line in validate.problems(objects) if "which is not defined" in line]
    assert {_found(r"Secret (\S+),", line) for line in missing} == {"skylift-master-key", "skylift-api-keys"}
    assert validate.problems(objects, ("skylift-master-key", "skylift-api-keys")) == []


def test_the_doc_names_only_files_that_exist() -> None:
    for path in set(re.findall(r"deploy/k8s/[\w./-]+\w", DOC.read_text())):
        if not path.startswith("deploy/k8s/secrets/"):  # made by the reader
            assert (ROOT / path).exists(), path
