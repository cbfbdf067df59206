"""The operator's RBAC in the chart grants exactly what the operator's code
calls: nothing missing (it would fail with 403 in a cluster), nothing extra
(least privilege).

What the code needs is derived from the code itself, not from a list kept
beside it: kopf's registry (every resource a handler or index watches, and
which of them kopf patches for finalizers and progress), kopf's own
resources (CRDs it scans, events it posts, namespaces it follows when
watching given namespaces), the Kubernetes client methods the operator's
modules reference (their HTTP method and path read from the client's
source), and `kopf.adopt` (owner references with blockOwnerDeletion, which
needs update on the owner's finalizers). The integration tests run the real
operator under these rules in the API server emulator, which refuses (403)
any call they do not grant.
The leader Lease is the exception to "cluster-wide": a Role in the release
namespace, with get and update limited to the Lease by resourceNames.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import references
from kubernetes_asyncio import client

from tests.tools import ROOT
from tests.unit.chart.conftest import ALL_ON, NAMESPACE, Render, find

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
PACKAGE = ROOT / "operator" / "vigil_operator"
CLUSTER_SCOPED = {
    ("", "nodes"),
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}
HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
LEASES = ("coordination.k8s.io", "leases")


def _selector(sel: Any) -> tuple[str, str]:
    plural = sel.plural or sel.any_name
    assert isinstance(plural, str) and plural, f"kopf selector without a plural: {sel!r}"
    return (sel.group or "", plural)


def kopf_permissions(namespaced: bool) -> set[Permission]:
    """What kopf does for the handlers vigil_operator.cluster.handlers registers."""
    from vigil_operator.cluster.handlers import registry as handlers_registry
    from vigil_operator.settings import OperatorSettings

    registry = handlers_registry(OperatorSettings())
    out: set[Permission] = set()
    watched = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]
    assert watched, "no kopf handlers registered"
    for handler in watched:
        group, plural = _selector(handler.selector)
        out |= {(group, plural, "list"), (group, plural, "watch")}
    # Change handlers, timers and daemons keep state on the object itself:
    # finalizers and the vigil.dev/ progress annotations, by PATCH.
    for handler in [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]:
        group, plural = _selector(handler.selector)
        out.add((group, plural, "patch"))
    crds = _selector(references.CRDS)
    out |= {(*crds, "list"), (*crds, "watch")}
    out.add((*_selector(references.EVENTS), "create"))  # kopf.event() and posted warnings
    if namespaced:  # kopf follows the namespaces it was given
        namespaces = _selector(references.NAMESPACES)
        out |= {(*namespaces, "list"), (*namespaces, "watch")}
    return out


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _api_classes(trees: Iterable[ast.Module]) -> list[type]:
    """The client API classes the operator instantiates (client.AppsV1Api(...))."""
    names = {
        node.func.attr
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.endswith("Api")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "client"
    }
    assert names, "the operator instantiates no Kubernetes API class"
    return [getattr(client, n) for n in sorted(names)]


def _endpoint(cls: type, method: str) -> tuple[str, str] | None:
    """(HTTP method, path) of a generated client method, from its source."""
    impl = getattr(cls, f"{method}_with_http_info", None)
    if impl is None:
        return None
    source = inspect.getsource(impl)
    paths = re.findall(r"'(/apis?/[^']*)'", source)
    verbs = re.findall(r"'(GET|PUT|POST|PATCH|DELETE)'", source)
    assert len(set(paths)) == 1 and len(set(verbs)) == 1, f"cannot read {cls.__name__}.{method}"
    return verbs[0], paths[0]


def _constant(path: Path, node: ast.expr) -> str:
    """A module-level constant passed to a client call (GROUP, PLURAL)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.Name), f"{path}: a non-constant group or plural"
    module = importlib.import_module(
        "vigil_operator." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    )
    value = getattr(module, node.id)
    assert isinstance(value, str)
    return value


def _permission(verb: str, url: str, args: dict[str, str]) -> Permission:
    parts = url.strip("/").split("/")
    if parts[0] == "api":  # /api/v1/...
        group, rest = "", parts[2:]
    else:  # /apis/GROUP/VERSION/...
        group, rest = parts[1], parts[3:]
    if rest[:2] == ["namespaces", "{namespace}"]:
        rest = rest[2:]
    resource, named, sub = rest[0], len(rest) > 1, rest[2:]
    group, resource = args.get(group, group), args.get(resource, resource)
    k8s_verb = ("get" if named else "list") if verb == "GET" else HTTP_VERBS[verb]
    return (group, "/".join([resource, *sub]), k8s_verb)


def client_permissions() -> set[Permission]:
    """Every Kubernetes API method the operator's modules reference."""
    modules = list(_modules())
    classes = _api_classes(tree for _, tree in modules)
    out: set[Permission] = set()
    for path, tree in modules:
        calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            for cls in classes:
                found = _endpoint(cls, node.attr)
                if found is None:
                    continue
                verb, url = found
                args: dict[str, str] = {}
                call = calls.get(id(node))
                if "{group}" in url or "{plural}" in url:
                    assert call is not None, f"{path}: {node.attr} passed around uncalled"
                    params = list(inspect.signature(getattr(cls, node.attr)).parameters)[1:]
                    for param, arg in zip(params, call.args, strict=False):
                        if param in ("group", "plural"):
                            args["{" + param + "}"] = _constant(path, arg)
                out.add(_permission(verb, url, args))
    return out


def adoption_permissions() -> set[Permission]:
    """kopf.adopt() marks children with blockOwnerDeletion; the API server then
    wants update on the owner's finalizers (OwnerReferencesPermissionEnforcement)."""
    adopts = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "adopt"
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "kopf"
        for _, tree in _modules()
        for n in ast.walk(tree)
    )
    if not adopts:
        return set()
    owner = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "m", "namespace": "n", "uid": "u"},
    }
    child: dict[str, Any] = {"metadata": {}}
    kopf.adopt(child, owner=owner)  # type: ignore[arg-type]
    (ref,) = child["metadata"]["ownerReferences"]
    assert ref["blockOwnerDeletion"] is True
    from vigil_operator.cluster.handlers import MODELS

    return {(MODELS[0], f"{MODELS[2]}/finalizers", "update")}


def needed(namespaced: bool) -> set[Permission]:
    return kopf_permissions(namespaced) | client_permissions() | adoption_permissions()


def lease_permissions() -> set[Permission]:
    """The leader election's calls, from the same derivation: only these may be
    (and must be) granted in the operator's own namespace alone."""
    return {p for p in client_permissions() if (p[0], p[1]) == LEASES}


def granted(
    docs: list[dict[str, Any]], account: str, names: dict[Permission, list[str]] | None = None
) -> dict[str, set[Permission]]:
    """Permissions bound to ServiceAccount `account`, by where they apply:
    "*" (cluster-wide) or a namespace. Rules limited by resourceNames (Roles
    only) go into `names`."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in [*find(docs, "ClusterRole"), *find(docs, "Role")]
    }
    out: dict[str, set[Permission]] = {}
    for binding in [*find(docs, "ClusterRoleBinding"), *find(docs, "RoleBinding")]:
        subjects = binding.get("subjects") or []
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == NAMESPACE
            for s in subjects
        ):
            continue
        kind = binding["roleRef"]["kind"]
        role_ns = binding["metadata"].get("namespace") if kind == "Role" else None
        role = roles[(kind, role_ns, binding["roleRef"]["name"])]
        scope = (
            binding["metadata"].get("namespace", "*") if binding["kind"] == "RoleBinding" else "*"
        )
        perms = out.setdefault(scope, set())
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            assert "resourceNames" not in rule or role["kind"] == "Role"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                        perms.add((group, resource, verb))
                        if "resourceNames" in rule and names is not None:
                            names[(group, resource, verb)] = rule["resourceNames"]
    return out


def _show(perms: set[Permission]) -> str:
    return "\n".join(f"  {g or 'core'} {r} {v}" for g, r, v in sorted(perms)) or "  (none)"


def test_the_code_needs_what_a_kopf_operator_of_deployments_needs() -> None:
    """A sanity check of the derivation itself, so that a broken scan cannot
    make the comparison below vacuous."""
    perms = needed(namespaced=False)
    for expected in [
        ("vigil.dev", "models", "watch"),
        ("vigil.dev", "models", "patch"),
        ("vigil.dev", "models", "get"),
        ("vigil.dev", "models/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "update"),
        ("apps", "deployments", "delete"),
        ("policy", "poddisruptionbudgets", "get"),
        ("", "pods", "watch"),
        ("", "events", "create"),
    ]:
        assert expected in perms


def test_cluster_wide_rbac_is_exactly_what_the_operator_calls(render: Render) -> None:
    bound = granted(render(), "vigil")
    assert set(bound) == {"*", NAMESPACE}, "cluster-wide, plus the Lease in its own namespace"
    want, have = needed(namespaced=False) - lease_permissions(), bound["*"]
    assert have == want, f"missing:\n{_show(want - have)}\nextra:\n{_show(have - want)}"


def test_the_lease_is_granted_in_the_release_namespace_by_name(render: Render) -> None:
    """create cannot be limited by name; get and update are, to the Lease the
    operator is told to use."""
    leases = lease_permissions()
    assert leases == {(*LEASES, "get"), (*LEASES, "create"), (*LEASES, "update")}
    for values, lease in [
        ({}, "vigil"),
        ({"leaderElection": {"leaseName": "op-leader"}}, "op-leader"),
    ]:
        docs = render(values)
        names: dict[Permission, list[str]] = {}
        bound = granted(docs, "vigil", names)
        assert bound[NAMESPACE] == leases
        assert names == {(*LEASES, "get"): [lease], (*LEASES, "update"): [lease]}
        (deployment,) = find(docs, "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--lease-name={lease}" in args and f"--lease-namespace={NAMESPACE}" in args


def test_a_lone_replica_gets_no_lease_permissions(render: Render) -> None:
    docs = render({"leaderElection": {"enabled": False}, "replicaCount": 1})
    bound = granted(docs, "vigil")
    assert set(bound) == {"*"}
    assert not {p for p in bound["*"] if (p[0], p[1]) == LEASES}
    (deployment,) = find(docs, "Deployment")
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_namespaced_rbac_grants_namespaced_calls_only_in_watched_namespaces(
    render: Render,
) -> None:
    bound = granted(render(ALL_ON), "vigil")
    assert bound.pop(NAMESPACE) == lease_permissions()
    want = needed(namespaced=True) - lease_permissions()
    cluster = {p for p in want if (p[0], p[1]) in CLUSTER_SCOPED}
    assert set(bound) == {"*", "factory", "lab"}
    assert bound["*"] == cluster, (
        f"missing:\n{_show(cluster - bound['*'])}\nextra:\n{_show(bound['*'] - cluster)}"
    )
    for namespace in ("factory", "lab"):
        have, ns_want = bound[namespace], want - cluster
        assert have == ns_want, (
            f"{namespace} missing:\n{_show(ns_want - have)}\nextra:\n{_show(have - ns_want)}"
        )


def test_user_roles_are_aggregated_and_not_bound_to_the_operator(render: Render) -> None:
    docs = render()
    users = [
        d
        for d in find(docs, "ClusterRole")
        if d["metadata"]["name"] in ("vigil-view", "vigil-edit")
    ]
    assert len(users) == 2
    labels = {d["metadata"]["name"]: d["metadata"]["labels"] for d in users}
    assert labels["vigil-view"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert labels["vigil-edit"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    bound = {
        b["roleRef"]["name"]
        for b in [*find(docs, "ClusterRoleBinding"), *find(docs, "RoleBinding")]
    }
    assert not bound & {"vigil-view", "vigil-edit"}
    assert not any(
        d["metadata"]["name"].endswith(("-view", "-edit"))
        for d in find(render({"rbac": {"aggregateClusterRoles": False}}), "ClusterRole")
    )


@pytest.mark.parametrize("values", [{"rbac": {"create": False}}], ids=["rbac.create=false"])
def test_rbac_can_be_left_to_the_cluster_admin(render: Render, values: dict[str, Any]) -> None:
    docs = render(values)
    assert not [
        d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ]
