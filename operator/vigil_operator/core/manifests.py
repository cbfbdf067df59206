"""The objects the operator makes for a Model, as plain dicts ready to apply.

For a Model `M`: one Deployment per zone (`M-<zone>`, pinned to the zone by
required node affinity), a headless Service `M` for gRPC round_robin over the
units, and a PodDisruptionBudget `M` that keeps the floor in service. The kopf
shell adds owner references with `kopf.adopt`; the local runtime and tests use
`owner_reference`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

from vigil.v1.wire import GRPC_PORT, METRICS_PORT, SERVICE_NAME

from .spec import GPU_RESOURCE, Artifact, ModelSpec
from .zones import ZONE_LABEL, ZONE_POD_LABEL

MODEL_LABEL: Final = "vigil.dev/model"
ARTIFACT_ANNOTATION: Final = "vigil.dev/artifact-uri"
HEALTH_SERVICE: Final = SERVICE_NAME
MODEL_DIR: Final = "/var/lib/vigil/model"
CONTAINER: Final = "unit"
# The server drains in-flight requests for 20 s after SIGTERM (its default
# --grace-seconds); the kubelet waits this long before SIGKILL.
TERMINATION_GRACE_S: Final = 30
# Applied only to resources the Model names in neither requests nor limits, so a
# unit is never BestEffort and a user's limit is never below our request.
DEFAULT_REQUESTS: Final = {"cpu": "500m", "memory": "1Gi"}
RUN_AS: Final = 65532  # the conventional non-root uid; image files must be world-readable

# Run by the init container with the unit's own image, so no extra image is needed.
DOWNLOAD_SCRIPT: Final = """\
import os, sys, urllib.request
url, dest = sys.argv[1], sys.argv[2]
part = dest + ".part"
with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
    while chunk := response.read(1 << 20):
        out.write(chunk)
os.replace(part, dest)
print(f"downloaded {url} to {dest} ({os.path.getsize(dest)} bytes)")
"""

_NOT_DNS: Final = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:5]


def zone_slug(zone: str) -> str:
    """The zone as a DNS-1123 label; a hash suffix keeps zones that sanitise alike apart."""
    if _DNS_LABEL.match(zone) and len(zone) <= 63:
        return zone
    slug = _NOT_DNS.sub("-", zone.lower()).strip("-")[:57].strip("-")
    return f"{slug}-{_hash(zone)}" if slug else _hash(zone)


def deployment_name(model: str, zone: str) -> str:
    """`<model>-<zone>`, at most 63 characters (truncated with a hash suffix)."""
    name = f"{model}-{zone_slug(zone)}"
    if len(name) <= 63:
        return name
    return f"{name[:57].rstrip('-')}-{_hash(model + '/' + zone)}"


def endpoint(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """The gRPC target clients use (with the round_robin policy)."""
    return f"dns:///{name}.{namespace}.svc.{cluster_domain}:{GRPC_PORT}"


def model_labels(name: str) -> dict[str, str]:
    """Labels on everything made for Model `name`."""
    return {
        "app.kubernetes.io/name": "vigil",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference-unit",
        "app.kubernetes.io/managed-by": "vigil",
        MODEL_LABEL: name,
    }


def zone_selector(name: str, zone: str) -> dict[str, str]:
    """A Deployment's selector: immutable once created, so only model and zone."""
    return {MODEL_LABEL: name, ZONE_POD_LABEL: zone}


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """A controller reference to the Model, so deleting it deletes its children."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", "vigil.dev/v1alpha1"),
        "kind": body.get("kind", "Model"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def model_path(artifact: Artifact) -> str:
    """Where the unit finds the .vigil file inside its container."""
    if artifact.kind == "pvc":
        return f"{MODEL_DIR}/{artifact.path}"
    if artifact.kind == "file":
        return artifact.path
    return f"{MODEL_DIR}/model.vigil"


Defaults = Mapping[str, Mapping[str, str]]  # {"requests": {...}, "limits": {...}}


def unit_resources(spec: ModelSpec, defaults: Defaults | None = None) -> dict[str, dict[str, str]]:
    """The Model's requests and limits over the operator's defaults, plus the GPUs
    as a limit. A default applies to a resource the Model names in neither its
    requests nor its limits, so a default can never contradict what it gives."""
    given = spec.unit.resources
    requests = dict(given.get("requests", {}))
    limits = dict(given.get("limits", {}))
    named = set(requests) | set(limits)
    defaults = {"requests": DEFAULT_REQUESTS} if defaults is None else defaults
    for kind, target in (("requests", requests), ("limits", limits)):
        for resource, quantity in (defaults.get(kind) or {}).items():
            if resource not in named:
                target[resource] = str(quantity)
    if spec.unit.gpus > 0:
        limits[GPU_RESOURCE] = str(spec.unit.gpus)
    out = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _grpc_probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "grpc": {"port": GRPC_PORT, "service": HEALTH_SERVICE},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _artifact_delivery(
    artifact: Artifact, image: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the unit's volume mounts, init containers) that bring the artifact."""
    if artifact.kind == "file":
        return [], [], []
    mount = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
    if artifact.kind == "pvc":
        volume = {
            "name": "model",
            "persistentVolumeClaim": {"claimName": artifact.claim, "readOnly": True},
        }
        return [volume], [mount], []
    fetch = {
        "name": "fetch-artifact",
        "image": image,
        "command": ["python", "-c", DOWNLOAD_SCRIPT, artifact.uri, model_path(artifact)],
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": _container_security(),
    }
    return [{"name": "model", "emptyDir": {}}], [mount], [fetch]


def _unit_container(
    spec: ModelSpec,
    zone: str,
    image: str,
    mounts: list[dict[str, Any]],
    default_resources: Defaults | None,
) -> dict[str, Any]:
    """The unit container: `vigil serve` on the fixed ports, probed over gRPC health."""
    return {
        "name": CONTAINER,
        "image": image,
        "command": [
            "vigil",
            "serve",
            "--model",
            model_path(spec.artifact),
            "--port",
            str(GRPC_PORT),
            "--metrics-port",
            str(METRICS_PORT),
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "VIGIL_ZONE", "value": zone},
        ],
        "resources": unit_resources(spec, default_resources),
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
        # Loading and warming a model can take minutes on a cold GPU node.
        "startupProbe": _grpc_probe(period=5, failures=120, timeout=3),
        "readinessProbe": _grpc_probe(period=5, failures=2, timeout=3),
        "livenessProbe": _grpc_probe(period=10, failures=3, timeout=5),
        "securityContext": _container_security(),
    }


def _unit_pod_spec(
    spec: ModelSpec,
    zone: str,
    selector: Mapping[str, str],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    init: list[dict[str, Any]],
) -> dict[str, Any]:
    """Pinned to `zone` by node affinity, spread over its nodes, locked down."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}
                ]
            }
        }
    }
    pod_spec: dict[str, Any] = {
        "affinity": affinity,
        # Within the zone, prefer one unit per node so a node loss costs one unit.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
            }
        ],
        "containers": [container],
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if init:
        pod_spec["initContainers"] = init
    if spec.unit.node_selector:
        pod_spec["nodeSelector"] = dict(spec.unit.node_selector)
    if spec.unit.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in spec.unit.tolerations]
    return pod_spec


def unit_deployment(
    name: str,
    namespace: str,
    zone: str,
    replicas: int,
    spec: ModelSpec,
    default_image: str,
    default_resources: Defaults | None = None,
) -> dict[str, Any]:
    """The Deployment running Model `name`'s units in `zone`.

    Rolling updates add a unit before removing one (maxSurge 1, maxUnavailable 0).
    Units drain on SIGTERM by themselves (health turns NOT_SERVING, in-flight
    requests finish), so there is no preStop hook.
    """
    image = spec.unit.image or default_image
    selector = zone_selector(name, zone)
    labels = {**model_labels(name), ZONE_POD_LABEL: zone}
    annotations = {ARTIFACT_ANNOTATION: spec.artifact.uri}
    volumes, mounts, init = _artifact_delivery(spec.artifact, image)
    container = _unit_container(spec, zone, image, mounts, default_resources)
    pod_spec = _unit_pod_spec(spec, zone, selector, container, volumes, init)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, zone),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def service(name: str, namespace: str) -> dict[str, Any]:
    """Headless, so DNS returns every Ready unit and gRPC clients balance per request."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": model_labels(name)},
        "spec": {
            "clusterIP": "None",
            "selector": {MODEL_LABEL: name},
            "ports": [
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def pod_disruption_budget(name: str, namespace: str, floor: int) -> dict[str, Any]:
    """Voluntary evictions never take the model below `floor` Ready units (0 when
    Stopped). Not-Ready units may always be evicted, so a broken unit never blocks
    a node drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": model_labels(name)},
        "spec": {
            "minAvailable": floor,
            "selector": {"matchLabels": {MODEL_LABEL: name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
