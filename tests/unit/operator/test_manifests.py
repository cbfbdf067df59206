"""The child objects: valid Kubernetes, named and labelled as DESIGN.md says."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from vigil_operator.core.manifests import (
    DOWNLOAD_SCRIPT,
    deployment_name,
    endpoint,
    model_path,
    owner_reference,
    pod_disruption_budget,
    service,
    unit_deployment,
    unit_resources,
    zone_slug,
)
from vigil_operator.core.spec import ModelSpec, parse_spec

IMAGE = "ghcr.io/vigil/inference:0.1.0"


def _spec(**overrides: Any) -> ModelSpec:
    return parse_spec({"artifact": {"uri": "pvc://models/pcb/v3.vigil"}, **overrides})


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "uri", ["pvc://models/pcb/v3.vigil", "https://h.example/m.vigil", "file:///models/m.vigil"]
)
@pytest.mark.parametrize("gpus", [0, 1])
def test_deployments_are_valid_kubernetes(uri: str, gpus: int) -> None:
    spec = _spec(
        artifact={"uri": uri},
        unit={
            "gpus": gpus,
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "resources": {"requests": {"cpu": 2}, "limits": {"memory": "8Gi"}},
        },
    )
    dep = unit_deployment("pcb-inspector", "factory", "us-east-1a", 2, spec, IMAGE)
    kubernetes_validate.validate(dep, "1.37", strict=True)


def test_service_and_pdb_are_valid_kubernetes() -> None:
    kubernetes_validate.validate(service("pcb-inspector", "factory"), "1.37", strict=True)
    pdb = pod_disruption_budget("pcb-inspector", "factory", 2)
    kubernetes_validate.validate(pdb, "1.37", strict=True)


def test_deployment_identity_and_zone_pinning() -> None:
    dep = unit_deployment("pcb-inspector", "factory", "us-east-1a", 3, _spec(), IMAGE)
    meta = dep["metadata"]
    assert (meta["name"], meta["namespace"]) == ("pcb-inspector-us-east-1a", "factory")
    for labels in (meta["labels"], dep["spec"]["template"]["metadata"]["labels"]):
        assert labels["vigil.dev/model"] == "pcb-inspector"
        assert labels["vigil.dev/zone"] == "us-east-1a"
        assert labels["app.kubernetes.io/managed-by"] == "vigil"
        assert labels["app.kubernetes.io/instance"] == "pcb-inspector"
    assert dep["spec"]["selector"] == {
        "matchLabels": {"vigil.dev/model": "pcb-inspector", "vigil.dev/zone": "us-east-1a"}
    }
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]}
            ]
        }
    ]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vigil.dev/artifact-uri"] == "pvc://models/pcb/v3.vigil"


def test_unit_container_serves_the_model_with_grpc_probes() -> None:
    container = _container(unit_deployment("m", "ns", "a", 1, _spec(), IMAGE))
    assert container["image"] == IMAGE
    assert container["command"] == [
        "vigil",
        "serve",
        "--model",
        "/var/lib/vigil/model/pcb/v3.vigil",
        "--port",
        "50051",
        "--metrics-port",
        "8080",
    ]
    assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {
        ("grpc", 50051),
        ("metrics", 8080),
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051, "service": "vigil.v1.AnomalyDetection"}
    assert "lifecycle" not in container  # the server drains on SIGTERM by itself
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True


def test_gpus_and_resources() -> None:
    gpu = _container(unit_deployment("m", "ns", "a", 1, _spec(), IMAGE))["resources"]
    assert gpu == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    spec = _spec(
        unit={"gpus": 0, "resources": {"requests": {"memory": "3Gi"}, "limits": {"cpu": "250m"}}}
    )
    cpu = _container(unit_deployment("m", "ns", "a", 1, spec, IMAGE))["resources"]
    # No default cpu request: the user's limit alone sets it (a request above it is invalid).
    assert cpu == {"requests": {"memory": "3Gi"}, "limits": {"cpu": "250m"}}
    two = _container(unit_deployment("m", "ns", "a", 1, _spec(unit={"gpus": 2}), IMAGE))
    assert two["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_model_image_overrides_the_default() -> None:
    spec = _spec(unit={"image": "registry.local/vigil:dev"})
    dep = unit_deployment("m", "ns", "a", 1, spec, IMAGE)
    assert _container(dep)["image"] == "registry.local/vigil:dev"


def test_node_selector_and_tolerations_pass_through() -> None:
    spec = _spec(
        unit={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "g", "operator": "Exists"}]}
    )
    pod = unit_deployment("m", "ns", "a", 1, spec, IMAGE)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "g", "operator": "Exists"}]
    bare = unit_deployment("m", "ns", "a", 1, _spec(), IMAGE)["spec"]["template"]["spec"]
    assert "nodeSelector" not in bare and "tolerations" not in bare


def test_pvc_artifact_is_mounted_read_only() -> None:
    pod = unit_deployment("m", "ns", "a", 1, _spec(), IMAGE)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["model"] == {
        "name": "model",
        "mountPath": "/var/lib/vigil/model",
        "readOnly": True,
    }
    assert "initContainers" not in pod


def test_http_artifact_is_downloaded_by_an_init_container_with_the_same_image() -> None:
    spec = _spec(artifact={"uri": "https://models.example.com/pcb/v4.vigil"})
    pod = unit_deployment("m", "ns", "a", 1, spec, IMAGE)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == IMAGE
    assert init["command"][:2] == ["python", "-c"]
    assert init["command"][3:] == [
        "https://models.example.com/pcb/v4.vigil",
        "/var/lib/vigil/model/model.vigil",
    ]
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]
    assert _container({"spec": {"template": {"spec": pod}}})["command"][3] == (
        "/var/lib/vigil/model/model.vigil"
    )


def test_file_artifact_is_a_path_in_the_image() -> None:
    spec = _spec(artifact={"uri": "file:///models/weld.vigil"})
    assert model_path(spec.artifact) == "/models/weld.vigil"
    pod = unit_deployment("m", "ns", "a", 1, spec, IMAGE)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]


@pytest.fixture
def http_file(tmp_path: Path) -> Iterator[Callable[[bytes], str]]:
    servers: list[http.server.HTTPServer] = []

    def serve(content: bytes) -> str:
        (tmp_path / "www").mkdir(exist_ok=True)
        (tmp_path / "www" / "m.vigil").write_bytes(content)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/m.vigil"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_download_script_fetches_the_artifact(
    http_file: Callable[[bytes], str], tmp_path: Path
) -> None:
    content = bytes(range(256)) * 5000
    url = http_file(content)
    dest = tmp_path / "model.vigil"
    run = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_SCRIPT, url, str(dest)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert dest.read_bytes() == content
    missing = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_SCRIPT, url + ".nope", str(dest)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0 and "404" in missing.stderr


def test_pod_security_is_restricted() -> None:
    pod = unit_deployment("m", "ns", "a", 1, _spec(), IMAGE)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 25


def test_names_are_dns_labels_and_distinct() -> None:
    assert zone_slug("us-east-1a") == "us-east-1a"
    assert deployment_name("pcb-inspector", "us-east-1a") == "pcb-inspector-us-east-1a"
    odd = ["US-East-1a", "us_east_1a", "us.east.1a", "us-east-1a", "eu-west-1_b", "...", "Z"]
    slugs = [zone_slug(z) for z in odd]
    assert len(set(slugs)) == len(slugs)
    long_model = "m" * 63
    names = [deployment_name(long_model, z) for z in odd]
    assert len(set(names)) == len(names)
    import re

    label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for name in [*slugs, *names, deployment_name("m", "z" * 63)]:
        assert len(name) <= 63 and label.match(name), name


def test_service_is_headless_over_grpc_and_metrics() -> None:
    svc = service("pcb-inspector", "factory")
    assert svc["metadata"]["name"] == "pcb-inspector"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"vigil.dev/model": "pcb-inspector"}
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {
        ("grpc", 50051),
        ("metrics", 8080),
    }


def test_pdb_keeps_the_floor() -> None:
    pdb = pod_disruption_budget("pcb-inspector", "factory", 2)
    assert pdb["metadata"]["name"] == "pcb-inspector"
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"] == {"matchLabels": {"vigil.dev/model": "pcb-inspector"}}
    assert pod_disruption_budget("m", "ns", 0)["spec"]["minAvailable"] == 0


def test_owner_reference_and_endpoint() -> None:
    body = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "pcb-inspector", "uid": "1234"},
    }
    assert owner_reference(body) == {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "name": "pcb-inspector",
        "uid": "1234",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert endpoint("pcb-inspector", "factory") == (
        "dns:///pcb-inspector.factory.svc.cluster.local:50051"
    )


def test_default_resources_fill_only_what_the_model_leaves_unnamed() -> None:
    from vigil_operator.core.spec import parse_spec

    spec = parse_spec(
        {
            "artifact": {"uri": "file:///m.vigil"},
            "minUnits": 1,
            "unit": {"gpus": 0, "resources": {"limits": {"memory": "3Gi"}}},
        }
    )
    defaults = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    got = unit_resources(spec, defaults)
    # memory is named by the Model (a limit): no default request or limit for it,
    # which could otherwise exceed the limit it set
    assert got == {"requests": {"cpu": "1"}, "limits": {"memory": "3Gi"}}
    assert unit_resources(spec, {}) == {"requests": {}, "limits": {"memory": "3Gi"}}


def test_bad_default_resources_setting_is_named() -> None:
    from vigil_operator.settings import OperatorSettings

    with pytest.raises(ValueError, match="VIGIL_UNIT_RESOURCES must be JSON"):
        OperatorSettings.from_env({"VIGIL_UNIT_RESOURCES": "cpu=1"})
