"""charts/vigil checked by the real tools: `helm lint --strict`, `helm
template` and `helm package` (helm 4), kubernetes-validate --strict against
Kubernetes 1.30 and the newest version it knows, the prometheus-operator
models for ServiceMonitor/PodMonitor/PrometheusRule; and the chart's
contracts with the rest of the repository (CRD, CLI flags, unit labels,
alerts, dashboard)."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.tools import ROOT, require, require_monitoring_models
from tests.unit.chart.conftest import ALL_ON, CHART, NAMESPACE, Render, find, one, run_helm
from vigil_cli.main import build_parser
from vigil_operator.core import manifests
from vigil_operator.core.spec import parse_spec

CRD_SOURCE = ROOT / "crds" / "models.vigil.dev.yaml"
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
LONE = {"leaderElection": {"enabled": False}, "replicaCount": 1}
CASES = {"defaults": None, "all-on": ALL_ON, "lone-replica": LONE}


def test_lint_strict_with_defaults_and_every_toggle(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "all-on.yaml"
    values.write_text(yaml.safe_dump(ALL_ON))
    for extra in ([], ["-f", str(values)]):
        result = run_helm(helm, "lint", "--strict", str(CHART), *extra)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_package_carries_the_crd_source_itself(helm: Path, tmp_path: Path) -> None:
    """files/models.vigil.dev.yaml is a symlink to crds/: `helm package` stores
    its contents, so the packaged chart cannot hold a diverging copy."""
    link = CHART / "files" / "models.vigil.dev.yaml"
    assert link.is_symlink() and link.resolve() == CRD_SOURCE.resolve()
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("vigil-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("vigil/files/models.vigil.dev.yaml")
        assert member is not None
        assert member.read() == CRD_SOURCE.read_bytes()
        names = set(tar.getnames())
    assert {"vigil/rules/vigil.rules.yaml", "vigil/dashboards/vigil.json"} <= names


def test_rendered_crd_is_the_source_plus_labels(render: Render) -> None:
    source = yaml.safe_load(CRD_SOURCE.read_text())
    crd = one(render(), "CustomResourceDefinition")
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["metadata"]["labels"].items() >= source["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    unkept = one(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in unkept["metadata"]
    assert not find(render({"crds": {"enabled": False}}), "CustomResourceDefinition")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_manifest_validates_strictly(render: Render, case: str, version: str) -> None:
    docs = render(CASES[case])
    checked = set()
    for doc in docs:
        if doc["kind"] in MONITORING_KINDS:
            continue  # not Kubernetes kinds: test_monitoring_objects_validate
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} against {version}: {path}: {exc.message}"
            )
        checked.add(doc["kind"])
    expected = {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"}
    assert expected | {"CustomResourceDefinition"} <= checked


def test_monitoring_objects_validate(render: Render, tmp_path: Path) -> None:
    node = require("node")
    modules = require_monitoring_models()
    docs = [d for d in render(ALL_ON) if d["kind"] in MONITORING_KINDS]
    assert {d["kind"] for d in docs} == MONITORING_KINDS
    # A broken copy proves the validator is really validating.
    broken = json.loads(json.dumps(docs))
    for doc in broken:
        doc["spec"]["bogus_list" if doc["kind"] == "PrometheusRule" else "selector"] = 7
        if doc["kind"] == "PrometheusRule":
            doc["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    for payload, ok in ((docs, True), (broken, False)):
        path = tmp_path / ("ok.json" if ok else "broken.json")
        path.write_text(json.dumps(payload))
        result = subprocess.run(
            [str(node), str(Path(__file__).with_name("validate_monitoring.mjs")), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"NODE_PATH": str(modules), "PATH": "/usr/bin:/bin"},
            check=False,
        )
        lines = result.stdout.splitlines()
        assert len(lines) == 3, result.stdout + result.stderr
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            assert result.returncode == 1 and all(line.startswith("INVALID") for line in lines), (
                result.stdout
            )


class TypeScriptModels:
    """Field names of prometheus-operator objects, read from the .d.ts
    declarations that @kubernetes-models generates from the operator's CRDs
    (its validators check types and enums but let unknown fields through,
    which the API server would silently prune)."""

    def __init__(self, modules: Path) -> None:
        self.folder = modules / "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1"

    def fields(self, stem: str) -> dict[str, str] | None:
        """field -> the local .d.ts stem of its type ("" for anything else)."""
        path = self.folder / f"{stem}.d.ts"
        if not path.is_file():
            return None
        text = path.read_text()
        imports = dict(re.findall(r'import \{ (I\w+) \} from "\./(\w+)\.js";', text))
        block = re.search(rf"^export declare class {stem} .*?\n(.*?)^\}}", text, re.M | re.S)
        if block is None:
            return None  # a type alias (Duration, LabelName, ...): a leaf
        out = {}
        for name, kind in re.findall(r'^    "([^"]+)"\??: (.*?);?$', block[1], re.M):
            element = re.fullmatch(r"Array<(\w+)>", kind)
            out[name] = imports.get(element[1] if element else kind, "")
        return out

    def unknown(self, value: Any, stem: str, path: str) -> list[str]:
        fields = self.fields(stem) if stem else None
        if fields is None:
            return []
        if isinstance(value, list):
            return [
                e for i, item in enumerate(value) for e in self.unknown(item, stem, f"{path}[{i}]")
            ]
        if not isinstance(value, dict):
            return []
        out = []
        for key, item in value.items():
            if key not in fields:
                out.append(f"{path}.{key}")
            elif key != "metadata":
                out += self.unknown(item, fields[key], f"{path}.{key}")
        return out


def test_monitoring_objects_use_only_fields_their_crds_know(render: Render) -> None:
    models = TypeScriptModels(require_monitoring_models())
    docs = [d for d in render(ALL_ON) if d["kind"] in MONITORING_KINDS]
    for doc in docs:
        assert models.fields(doc["kind"]), f"no model for {doc['kind']}"
        assert models.unknown(doc, doc["kind"], doc["kind"]) == []
    typo = json.loads(json.dumps(one(docs, "PodMonitor")))
    typo["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetlabel"] = "job"
    typo["spec"]["namespaceSelector"]["anyNamespace"] = True
    assert models.unknown(typo, "PodMonitor", "PodMonitor") == [
        "PodMonitor.spec.namespaceSelector.anyNamespace",
        "PodMonitor.spec.podMetricsEndpoints[0].relabelings[0].targetlabel",
    ]


def test_values_schema_refuses_typos_and_bad_values(helm: Path) -> None:
    for bad in (
        "imagee.tag=1",
        "image.pullPolicy=Sometimes",
        "prometheus.serviceMonitor.interval=often",
        "watchNamespaces[0]=Not_A_Namespace",
        "livenessProbe.port=0",
        "replicaCount=0",
        "leaderElection.leaseDurationSeconds=0",
        "leaderElection.leaseName=Not_A_Name",
        "topologySpreadConstraints[0].whenUnsatisfiable=Sometimes",
    ):
        result = run_helm(helm, "template", "vigil", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, f"--set {bad} was accepted"
        assert "schema" in result.stderr.lower(), result.stderr


def _value_lines(text: str) -> dict[str, int]:
    """values.yaml key path -> line number (keys only, from indentation)."""
    out: dict[str, int] = {}
    stack: list[str] = []
    for number, line in enumerate(text.splitlines()):
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        depth = len(match[1]) // 2
        stack = [*stack[:depth], match[2]]
        out.setdefault(".".join(stack), number)
    return out


def _schema_leaves(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("additionalProperties") is False and "properties" in sub:
            out.update(_schema_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def test_every_value_is_in_the_schema_and_documented_with_an_example() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = _schema_leaves(schema)
    positions = _value_lines(text)

    def lookup(path: str) -> Any:
        node: Any = values
        for part in path.split("."):
            node = node[part]
        return node

    for path, sub in leaves.items():
        if path == "global":
            continue
        assert path in positions, f"{path} is in the schema but not in values.yaml"
        assert sub.get("description"), f"{path} has no description in the schema"
        lookup(path)
        comment: list[str] = []
        number = positions[path] - 1
        while number >= 0 and lines[number].lstrip().startswith("#"):
            comment.insert(0, lines[number].strip())
            number -= 1
        joined = "\n".join(comment)
        assert len(comment) >= 3 and "For example:" in joined, f"{path}: no comment with an example"
        example = joined.split("For example:", 1)[1]
        assert path.rsplit(".", 1)[-1] + ":" in example, f"{path}: the example does not show it"
    # And nothing in values.yaml escapes the schema (a leaf's own default
    # content, e.g. resources.requests, is part of that leaf).
    for path in positions:
        assert any(path == leaf or path.startswith(leaf + ".") for leaf in leaves) or any(
            leaf.startswith(path + ".") for leaf in leaves
        ), f"{path} in values.yaml is not in values.schema.json"


def test_operator_deployment_is_restricted_and_its_flags_exist(render: Render) -> None:
    for case in CASES.values():
        deployment = one(render(case), "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == manifests.RUN_AS
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
        args = build_parser().parse_args(container["args"])  # the image's entrypoint is vigil
        assert args.command == "operator"
        if case is LONE:
            assert args.standalone and deployment["spec"]["replicas"] == 1
            assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        else:
            assert not args.standalone and deployment["spec"]["replicas"] == 2
            assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
            election = (args.lease_duration, args.renew_deadline, args.retry_period)
            assert election == (15, 10, 2)  # client-go's defaults
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == args.metrics_port == 8080
        assert ports["healthz"] == args.liveness_port == 8081
        probe = container["livenessProbe"]["httpGet"]
        assert probe == {"path": "/healthz", "port": "healthz"}
        assert args.default_image == "ghcr.io/vigil-dev/vigil-inference:0.1.0"
        assert args.namespace == (case or {}).get("watchNamespaces", [])


def test_two_replicas_spread_over_zones_with_a_disruption_budget(render: Render) -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert all(c["labelSelector"] == {"matchLabels": selector} for c in spread)
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    # One replica: a budget of 1 would block every node drain.
    assert not find(render(LONE), "PodDisruptionBudget")
    assert not find(render({"replicaCount": 1}), "PodDisruptionBudget")


def test_several_replicas_without_leader_election_are_refused(helm: Path) -> None:
    result = run_helm(
        helm,
        "template",
        "vigil",
        str(CHART),
        "--set",
        "leaderElection.enabled=false",
        check=False,
    )
    assert result.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled" in result.stderr


def test_unit_image_digest_wins_and_liveness_can_be_off(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    docs = render({"unit": {"image": {"digest": digest}}, "livenessProbe": {"enabled": False}})
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.default_image == f"ghcr.io/vigil-dev/vigil-inference@{digest}"
    assert args.liveness_port == 0 and "livenessProbe" not in container


def test_monitoring_is_opt_in(render: Render) -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & (MONITORING_KINDS | {"ConfigMap"})
    assert kinds & MONITORING_KINDS == set()
    on = render(ALL_ON)
    assert {d["kind"] for d in on} >= MONITORING_KINDS | {"ConfigMap"}


def test_prometheus_rule_is_the_rule_file(render: Render) -> None:
    rule = one(render(ALL_ON), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "rules" / "vigil.rules.yaml").read_text())
    assert rule["metadata"]["namespace"] == NAMESPACE


def test_dashboard_configmap_holds_the_dashboard_for_the_sidecar(render: Render) -> None:
    config_map = one(render(ALL_ON), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Vigil"}
    assert config_map["data"] == {"vigil.json": (CHART / "dashboards" / "vigil.json").read_text()}
    relabelled = render(
        {
            "grafana": {
                "dashboard": {
                    "enabled": True,
                    "namespace": "monitoring",
                    "labels": {"dash": "yes", "grafana_dashboard": None},
                }
            }
        }
    )
    config_map = one(relabelled, "ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["dash"] == "yes"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]


def _pod_label_meta(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", label)


def test_pod_monitor_selects_the_units_the_operator_creates(render: Render) -> None:
    spec = parse_spec(
        {"artifact": {"uri": "file:///models/pcb.vigil"}, "minUnits": 2, "unit": {"gpus": 1}}
    )
    unit = manifests.unit_deployment("pcb", "factory", "zone-a", 2, spec, "img:1")
    labels = unit["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in unit["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for values, namespaces in (
        (ALL_ON, {"matchNames": ["factory", "lab"]}),
        (
            {"prometheus": {"podMonitor": {"enabled": True}}},
            {"any": True},
        ),
    ):
        monitor = one(render(values), "PodMonitor")["spec"]
        assert monitor["namespaceSelector"] == namespaces
        assert monitor["selector"]["matchLabels"].items() <= labels.items()
        for expression in monitor["selector"]["matchExpressions"]:
            assert expression["operator"] == "Exists" and expression["key"] in labels
        (endpoint,) = monitor["podMetricsEndpoints"]
        assert endpoint["port"] in ports
        targets = {r["targetLabel"]: r for r in endpoint["relabelings"]}
        assert targets["job"]["replacement"] == "vigil-unit"
        assert targets["model"]["sourceLabels"] == [_pod_label_meta(manifests.MODEL_LABEL)]
        assert targets["zone"]["sourceLabels"] == [_pod_label_meta("vigil.dev/zone")]
        assert "vigil.dev/zone" in labels


def test_service_monitor_scrapes_the_operator_metrics_service(render: Render, helm: Path) -> None:
    docs = render(ALL_ON)
    monitor = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["honorLabels"] is True  # series keep their Model's namespace
    assert {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]} == {
        "job": "vigil-operator"
    }
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    refused = run_helm(
        helm,
        "template",
        "vigil",
        str(CHART),
        "--set",
        "prometheus.serviceMonitor.enabled=true,metrics.service.enabled=false",
        check=False,
    )
    assert refused.returncode != 0 and "needs metrics.service.enabled" in refused.stderr


def test_unit_default_resources_reach_the_units_the_operator_builds(
    render: Render,
) -> None:
    """values.unit.resources -> VIGIL_UNIT_RESOURCES -> the operator's config -> the
    unit Deployment, for the resources a Model leaves unnamed."""
    from vigil_operator.settings import OperatorSettings

    values = {
        "unit": {
            "resources": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "8Gi"}}
        }
    }
    deployment = one(render(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    config = OperatorSettings.from_env({k: v for k, v in env.items() if v is not None})
    model = parse_spec(
        {
            "artifact": {"uri": "file:///m.vigil"},
            "minUnits": 1,
            "unit": {"gpus": 1, "resources": {"requests": {"cpu": "4"}}},
        }
    )
    unit = manifests.unit_deployment(
        "pcb", "factory", "zone-a", 1, model, "img", config.default_resources
    )
    resources = unit["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "6Gi"}  # the Model's cpu wins
    assert resources["limits"] == {"memory": "8Gi", manifests.GPU_RESOURCE: "1"}
