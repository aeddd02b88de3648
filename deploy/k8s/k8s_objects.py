"""Rendered Kubernetes objects as a kubelet would read them: lookups by kind and name, a pod's
labels, a container's environment with `$(NAME)` expansion, files mounted from a Secret or
ConfigMap. Used by validate.py and skylift_checks.py."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
"""Where an indexed Job's pod finds its index (the Job controller also sets JOB_COMPLETION_INDEX)."""
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def get(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def keys(obj: Obj) -> set[str]:
    """The keys a Secret or ConfigMap holds."""
    return {*obj.get("data", {}), *obj.get("stringData", {}), *obj.get("binaryData", {})}


def value(obj: Obj, key: str) -> str:
    """The text under `key` of a Secret (decoded) or ConfigMap."""
    if key in obj.get("stringData", {}):
        return str(obj["stringData"][key])
    data = str(obj.get("data", {}).get(key, ""))
    return base64.b64decode(data).decode("utf-8", "replace") if obj["kind"] == "Secret" else data


def pods(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod spec with the template's labels added under "labels")."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield obj, {**obj["spec"]["template"]["spec"], "labels": labels(obj)}


def labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"].get("metadata", {}).get("labels", {}))


def selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())


def environment(objects: list[Obj], workload: Obj, container: Obj, index: int) -> dict[str, str]:
    """The container's environment as Kubernetes builds it for pod `index`; field references get
    sample values (an IP for status.podIP, the index for the completion index)."""
    env: dict[str, str] = {}
    if workload["kind"] == "Job" and workload["spec"].get("completionMode") == "Indexed":
        env["JOB_COMPLETION_INDEX"] = str(index)
    for source in container.get("envFrom", []):
        for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            found = get(objects, kind, source.get(field, {}).get("name", ""))
            env.update({k: value(found, k) for k in keys(found)} if found else {})
    samples = {"status.podIP": f"10.0.0.{index + 1}", INDEX_FIELD: str(index)}
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
        found = get(objects, kind, ref["name"]) if ref else None
        if "value" in var:
            env[var["name"]] = expand([var["value"]], env)[0][0]
        elif found is not None and ref is not None:
            env[var["name"]] = value(found, ref["key"])
        else:
            env[var["name"]] = samples.get(source.get("fieldRef", {}).get("fieldPath"), "sample")
    return env


def expand(args: list[str], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """`$(NAME)` replaced as the kubelet does, and the names it would leave as they are."""
    unknown = [name for arg in args for name in VAR.findall(arg) if name not in env]
    return [VAR.sub(lambda m: env.get(m.group(1), m.group(0)), arg) for arg in args], unknown


def mounted(objects: list[Obj], pod: Obj, container: Obj, path: str) -> str | None:
    """The text of file `path` in the container when a rendered Secret or ConfigMap provides it
    ("" when the mounted object lacks it), else None."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        folder, volume = mount["mountPath"].rstrip("/") + "/", volumes.get(mount["name"], {})
        source = volume.get("secret") or volume.get("configMap")
        if source is None or not path.startswith(folder):
            continue
        kind, name = ("Secret", source["secretName"]) if "secret" in volume else ("ConfigMap", source["name"])
        found = get(objects, kind, name)
        if found is None:
            return None
        files = {i["path"]: i["key"] for i in source.get("items") or []} or {k: k for k in keys(found)}
        file = path[len(folder) :]
        return value(found, files[file]) if file in files else ""
    return None
