"""The API server emulator, exercised over HTTP the way the operator will use it.

Requests go through the official ``kubernetes_asyncio`` client (loaded from
the emulator's kubeconfig) or through raw aiohttp for watch streams; the
emulator's own helpers are used only to arrange the cluster and to assert.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kube_emulator import (
    ADMIN_TOKEN,
    GPU,
    ZONE_LABEL,
    EmulatorThread,
    KubeEmulator,
    OperatorProcess,
    auth,
    kopf_command,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    # Zone outages show within a second; evictions come at once unless a test says otherwise.
    pytest.mark.kube_emulator(pod_start_delay=0.1, node_monitor_grace_period=0.5, eviction_delay=0),
]

NS = "vigil-test"
MODELS = ("vigil.dev", "v1alpha1")
MERGE = "application/merge-patch+json"


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def deployment(
    name: str,
    *,
    zones: list[str] | None = None,
    replicas: int = 2,
    gpus: int = 1,
    image: str = "vigil:1",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment shaped like the operator's: pinned by required zone affinity."""
    labels = labels or {"vigil.dev/model": name}
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "unit", "image": image, "resources": {"limits": {GPU: str(gpus)}}}]
    }
    if zones:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": ZONE_LABEL, "operator": "In", "values": zones}
                            ]
                        }
                    ]
                }
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"artifact": {"uri": "pvc://models/pcb/v3.vigil"}, "minUnits": 1, **spec},
    }


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def scheduled_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (c for c in pod["status"].get("conditions", []) if c["type"] == "PodScheduled"), None
    )


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


@pytest.fixture
def apps(kube_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube_api)


@pytest.fixture
def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


# --- discovery and scoping ---


async def test_discovery_lists_what_an_operator_and_kopf_scan(kube_api: client.ApiClient) -> None:
    core_versions = await client.CoreApi(kube_api).get_api_versions()
    assert core_versions.versions == ["v1"]
    groups = {g.name: g for g in (await client.ApisApi(kube_api).get_api_versions()).groups}
    for group in (
        "apps",
        "policy",
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "vigil.dev",
    ):
        assert group in groups
    assert groups["vigil.dev"].preferred_version.version == "v1alpha1"

    core = {r.name: r for r in (await client.CoreV1Api(kube_api).get_api_resources()).resources}
    for name in ("pods", "pods/status", "nodes", "services", "events", "namespaces", "configmaps"):
        assert name in core
    assert core["pods"].namespaced and not core["nodes"].namespaced
    assert not core["namespaces"].namespaced
    apps_v1 = {r.name for r in (await client.AppsV1Api(kube_api).get_api_resources()).resources}
    assert {"deployments", "deployments/status", "deployments/scale"} <= apps_v1
    policy = {r.name for r in (await client.PolicyV1Api(kube_api).get_api_resources()).resources}
    assert "poddisruptionbudgets" in policy

    models = {
        r.name: r
        for r in (await client.CustomObjectsApi(kube_api).get_api_resources(*MODELS)).resources
    }
    assert models["models"].kind == "Model" and models["models"].namespaced
    assert "models/status" in models


async def test_namespaces_and_nodes_are_cluster_scoped(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    names = {ns.metadata.name for ns in (await core.list_namespace()).items}
    assert {"default", "kube-system", NS} <= names
    assert (await core.read_namespace(NS)).status.phase == "Active"

    nodes = (await core.list_node(label_selector=f"{ZONE_LABEL}=zone-b")).items
    assert sorted(n.metadata.name for n in nodes) == ["zone-b-node-1", "zone-b-node-2"]
    assert nodes[0].status.allocatable[GPU] == "4"

    response = await kube.get(f"/api/v1/namespaces/{NS}/nodes")
    assert response.status == 404
    assert (await response.json())["reason"] == "NotFound"


async def test_unknown_resource_and_object_are_404_status(
    core: client.CoreV1Api, kube: KubeEmulator
) -> None:
    with pytest.raises(ApiException) as e:
        await core.read_namespaced_config_map("nope", NS)
    status = status_of(e.value)
    assert e.value.status == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'configmaps "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "configmaps"}

    response = await kube.get("/apis/example.com/v1/namespaces/x/widgets")
    assert response.status == 404

    with pytest.raises(ApiException) as e:
        await core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "a"}})
    assert e.value.status == 404
    assert status_of(e.value)["message"] == 'namespaces "no-such-ns" not found'


# --- metadata, versions, conflicts ---


async def test_create_stamps_metadata_and_generates_unique_names(core: client.CoreV1Api) -> None:
    body = {"metadata": {"generateName": "unit-", "labels": {"a": "b"}}, "data": {"k": "v"}}
    first = await core.create_namespaced_config_map(NS, body)
    second = await core.create_namespaced_config_map(NS, body)
    assert first.metadata.name != second.metadata.name
    for cm in (first, second):
        assert cm.metadata.name.startswith("unit-") and len(cm.metadata.name) == len("unit-") + 5
        assert cm.metadata.uid and cm.metadata.creation_timestamp is not None
        assert cm.metadata.generation == 1 and cm.metadata.namespace == NS
    assert first.metadata.uid != second.metadata.uid

    with pytest.raises(ApiException) as e:
        await core.create_namespaced_config_map(NS, {"metadata": {}})
    assert e.value.status == 422 and status_of(e.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "Not_A_Name"}})
    assert e.value.status == 422 and "metadata.name" in status_of(e.value)["message"]


async def test_resource_version_is_global_and_monotonic(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    seen = []
    cm = await core.create_namespaced_config_map(NS, {"metadata": {"name": "rv"}, "data": {}})
    seen.append(int(cm.metadata.resource_version))
    created = await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("rv"))
    seen.append(int(created["metadata"]["resourceVersion"]))
    cm = await core.patch_namespaced_config_map("rv", NS, {"data": {"k": "v"}})
    seen.append(int(cm.metadata.resource_version))
    listed = await core.list_namespaced_config_map(NS)
    seen.append(int(listed.metadata.resource_version))
    assert seen == sorted(seen) and len(set(seen[:3])) == 3
    assert seen[-1] >= seen[-2]

    # A no-op patch writes nothing: same resourceVersion.
    again = await core.patch_namespaced_config_map("rv", NS, {"data": {"k": "v"}})
    assert again.metadata.resource_version == cm.metadata.resource_version


async def test_generation_bumps_on_spec_changes_only(custom: client.CustomObjectsApi) -> None:
    args = (*MODELS, NS, "models", "gen")
    created = await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("gen"))
    assert created["metadata"]["generation"] == 1

    labelled = await custom.patch_namespaced_custom_object(
        *args, {"metadata": {"labels": {"team": "qa"}}}, _content_type=MERGE
    )
    assert labelled["metadata"]["generation"] == 1
    status = await custom.patch_namespaced_custom_object_status(
        *args, {"status": {"phase": "Hosted"}}, _content_type=MERGE
    )
    assert status["metadata"]["generation"] == 1
    assert int(status["metadata"]["resourceVersion"]) > int(labelled["metadata"]["resourceVersion"])

    changed = await custom.patch_namespaced_custom_object(
        *args, {"spec": {"minUnits": 3}}, _content_type=MERGE
    )
    assert changed["metadata"]["generation"] == 2


async def test_stale_resource_version_is_409_conflict(
    apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    created = await apps.create_namespaced_deployment(NS, deployment("stale", replicas=0))
    await apps.patch_namespaced_deployment("stale", NS, {"spec": {"replicas": 1}})

    created.spec.replicas = 5  # still carries the first resourceVersion
    with pytest.raises(ApiException) as e:
        await apps.replace_namespaced_deployment("stale", NS, created)
    status = status_of(e.value)
    assert e.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"].startswith('Operation cannot be fulfilled on deployments.apps "stale"')

    stale_patch = {"metadata": {"resourceVersion": created.metadata.resource_version}}
    with pytest.raises(ApiException) as e:
        await apps.patch_namespaced_deployment(
            "stale", NS, {**stale_patch, "spec": {"replicas": 2}}
        )
    assert e.value.status == 409

    current = await apps.read_namespaced_deployment("stale", NS)
    current.spec.replicas = 0
    replaced = await apps.replace_namespaced_deployment("stale", NS, current)
    assert replaced.spec.replicas == 0 and replaced.metadata.generation == 3


async def test_duplicate_create_is_409_already_exists(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "dup"}})
    status = status_of(e.value)
    assert e.value.status == 409 and status["reason"] == "AlreadyExists"
    assert status["message"] == 'configmaps "dup" already exists'


async def test_status_subresource_isolation(
    custom: client.CustomObjectsApi, apps: client.AppsV1Api
) -> None:
    args = (*MODELS, NS, "models", "iso")
    body = {**model("iso"), "status": {"phase": "Hosted"}}
    created = await custom.create_namespaced_custom_object(*MODELS, NS, "models", body)
    assert "status" not in created  # status is ignored on create

    main = await custom.patch_namespaced_custom_object(
        *args, {"spec": {"minUnits": 2}, "status": {"phase": "Hosted"}}, _content_type=MERGE
    )
    assert main["spec"]["minUnits"] == 2 and "status" not in main

    status = await custom.patch_namespaced_custom_object_status(
        *args, {"spec": {"minUnits": 9}, "status": {"phase": "Hosted"}}, _content_type=MERGE
    )
    assert status["spec"]["minUnits"] == 2 and status["status"] == {"phase": "Hosted"}

    replaced = await custom.replace_namespaced_custom_object(*args, {**status, "status": {}})
    assert replaced["status"] == {"phase": "Hosted"}

    await apps.create_namespaced_deployment(NS, deployment("iso", replicas=0))
    dep = await apps.read_namespaced_deployment_status("iso", NS)
    dep.status.observed_generation = 42
    written = await apps.replace_namespaced_deployment_status("iso", NS, dep)
    assert written.status.observed_generation == 42


async def test_patch_types(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    args = (*MODELS, NS, "models", "patchy")
    created = await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("patchy"))
    rv = created["metadata"]["resourceVersion"]

    # kopf's optimistic JSON patch: a failed test op is a 422, a passing one applies.
    wrong = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    with pytest.raises(ApiException) as e:
        await custom.patch_namespaced_custom_object(
            *args, [*wrong, {"op": "replace", "path": "/spec/minUnits", "value": 4}]
        )
    assert e.value.status == 422
    right = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
    patched = await custom.patch_namespaced_custom_object(
        *args, [*right, {"op": "replace", "path": "/spec/minUnits", "value": 4}]
    )
    assert patched["spec"]["minUnits"] == 4

    # kubernetes_asyncio sends a dict as json-patch unless told: the real server refuses it.
    with pytest.raises(ApiException) as e:
        await custom.patch_namespaced_custom_object(*args, {"spec": {"minUnits": 5}})
    assert e.value.status == 400

    # Merge patch: null deletes, lists replace (strategic merge is applied the same way).
    await core.create_namespaced_config_map(
        NS, {"metadata": {"name": "pt"}, "data": {"a": "1", "b": "2"}}
    )
    cm = await core.patch_namespaced_config_map("pt", NS, {"data": {"a": None, "c": "3"}})
    assert cm.data == {"b": "2", "c": "3"}


# --- selectors and listing ---


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=gpu", {"a", "b"}),
        ("tier==gpu", {"a", "b"}),
        ("tier!=gpu", {"c", "d"}),
        ("zone in (zone-a, zone-c)", {"a", "c"}),
        ("zone notin (zone-a,zone-c)", {"b", "d"}),
        ("canary", {"b"}),
        ("!canary", {"a", "c", "d"}),
        ("tier=gpu,zone=zone-b", {"b"}),
        ("tier=gpu,!canary", {"a"}),
    ],
)
async def test_label_selectors(core: client.CoreV1Api, selector: str, expected: set[str]) -> None:
    labels = {
        "a": {"tier": "gpu", "zone": "zone-a"},
        "b": {"tier": "gpu", "zone": "zone-b", "canary": "yes"},
        "c": {"tier": "cpu", "zone": "zone-c"},
        "d": {"zone": "zone-b"},
    }
    for name, value in labels.items():
        await core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": value}})
    found = await core.list_namespaced_config_map(NS, label_selector=selector)
    assert {cm.metadata.name for cm in found.items} == expected
    everywhere = await core.list_config_map_for_all_namespaces(label_selector=selector)
    assert {cm.metadata.name for cm in everywhere.items} == expected


async def test_bad_selectors_are_400(core: client.CoreV1Api) -> None:
    for kwargs in ({"label_selector": "zone in (a"}, {"field_selector": "data.k=v"}):
        with pytest.raises(ApiException) as e:
            await core.list_namespaced_config_map(NS, **kwargs)
        assert e.value.status == 400 and status_of(e.value)["reason"] == "BadRequest"


async def test_field_selectors(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    kube.create_namespace("other")
    for ns in (NS, "other"):
        for name in ("x", "y"):
            await core.create_namespaced_config_map(ns, {"metadata": {"name": name}})
    by_name = await core.list_config_map_for_all_namespaces(field_selector="metadata.name=x")
    assert sorted(cm.metadata.namespace for cm in by_name.items) == ["other", NS]
    in_ns = await core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={NS},metadata.name!=x"
    )
    assert [(cm.metadata.namespace, cm.metadata.name) for cm in in_ns.items] == [(NS, "y")]


async def test_list_pages_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": f"page-{i}"}})
    names, token, pages = [], None, 0
    while True:
        page = await core.list_namespaced_config_map(NS, limit=2, _continue=token)
        names += [cm.metadata.name for cm in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"page-{i}" for i in range(5)] and pages == 3


# --- watches ---


async def read_events(response: Any, count: int) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(5):
        while len(events) < count:
            line = await response.content.readline()
            assert line, "the watch stream ended early"
            events.append(json.loads(line))
    return events


async def test_watch_streams_added_modified_deleted(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    listed = await core.list_namespaced_config_map(NS)
    params = {"watch": "true", "resourceVersion": listed.metadata.resource_version}
    async with kube.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
        assert response.status == 200
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "w"}})
        await core.patch_namespaced_config_map("w", NS, {"data": {"k": "v"}})
        await core.delete_namespaced_config_map("w", NS)
        events = await read_events(response, 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert [e["object"]["metadata"]["name"] for e in events] == ["w"] * 3
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert events[1]["object"]["data"] == {"k": "v"}


async def test_watch_resumes_from_a_resource_version(core: client.CoreV1Api) -> None:
    first = await core.create_namespaced_config_map(NS, {"metadata": {"name": "r1"}})
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "r2"}})
    await core.delete_namespaced_config_map("r1", NS)
    seen = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        NS,
        resource_version=first.metadata.resource_version,
        timeout_seconds=1,
    )
    async for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "r2"), ("DELETED", "r1")]


async def test_watch_without_version_starts_with_synthetic_added(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "pre"}})
    params = {"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true"}
    async with kube.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
        added, bookmark = await read_events(response, 2)
    assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "pre"
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_with_a_selector_sees_objects_leave_and_enter(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    listed = await core.list_namespaced_config_map(NS)
    params = {
        "watch": "true",
        "labelSelector": "app=unit",
        "resourceVersion": listed.metadata.resource_version,
    }
    async with kube.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
        await core.create_namespaced_config_map(
            NS, {"metadata": {"name": "s", "labels": {"app": "unit"}}}
        )
        await core.create_namespaced_config_map(NS, {"metadata": {"name": "other"}})
        await core.patch_namespaced_config_map("s", NS, {"metadata": {"labels": {"app": None}}})
        await core.patch_namespaced_config_map("s", NS, {"metadata": {"labels": {"app": "unit"}}})
        events = await read_events(response, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "s"),
        ("DELETED", "s"),
        ("ADDED", "s"),
    ]


@pytest.mark.kube_emulator(history_limit=3)
async def test_watch_from_a_compacted_version_is_410(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    first = await core.create_namespaced_config_map(NS, {"metadata": {"name": "old"}})
    for i in range(4):
        await core.create_namespaced_config_map(NS, {"metadata": {"name": f"new-{i}"}})
    params = {"watch": "true", "resourceVersion": first.metadata.resource_version}
    async with kube.get(f"/api/v1/namespaces/{NS}/configmaps", params=params) as response:
        (event,) = await read_events(response, 1)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"


# --- deletion: finalizers, garbage collection, namespaces ---


async def test_finalizers_delay_deletion(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    body = {"metadata": {"name": "fin", "finalizers": ["vigil.dev/cleanup"]}}
    await core.create_namespaced_config_map(NS, body)
    await core.delete_namespaced_config_map("fin", NS)
    marked = await core.read_namespaced_config_map("fin", NS)
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.finalizers == ["vigil.dev/cleanup"]

    with pytest.raises(ApiException) as e:  # no new finalizers on a terminating object
        await core.patch_namespaced_config_map(
            "fin", NS, {"metadata": {"finalizers": ["vigil.dev/cleanup", "other/x"]}}
        )
    assert e.value.status == 422

    await core.patch_namespaced_config_map("fin", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        await core.read_namespaced_config_map("fin", NS)
    assert e.value.status == 404
    history = kube.objects["v1/configmaps", NS, "fin"].history
    assert history[-1] is None and history[-2]["metadata"].get("finalizers") is None


async def test_owner_deletion_cascades_in_the_background(
    kube: KubeEmulator, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    owner = await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("owner"))
    ref = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for name in ("child-1", "child-2"):
        await core.create_namespaced_config_map(
            NS, {"metadata": {"name": name, "ownerReferences": [ref]}}
        )
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "bystander"}})

    await custom.delete_namespaced_custom_object(*MODELS, NS, "models", "owner")
    await kube.wait_for(
        lambda: not kube.list_objects("configmaps", NS, fields="metadata.name=child-1")
    )
    names = {cm.metadata.name for cm in (await core.list_namespaced_config_map(NS)).items}
    assert "child-2" not in names and "bystander" in names


async def test_orphan_and_foreground_propagation(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(
        NS, deployment("orphaner", replicas=1, zones=["zone-a"])
    )
    await kube.wait_for(lambda: len(kube.ready_pods(NS, {"vigil.dev/model": "orphaner"})) == 1)
    await apps.delete_namespaced_deployment(
        "orphaner", NS, body=client.V1DeleteOptions(propagation_policy="Orphan")
    )
    await kube.wait_for(lambda: kube.get_object("deployments", "orphaner", NS) is None)
    (pod,) = kube.pods(NS, {"vigil.dev/model": "orphaner"})
    assert "ownerReferences" not in pod["metadata"]

    await apps.create_namespaced_deployment(NS, deployment("fg", replicas=1, zones=["zone-b"]))
    await kube.wait_for(lambda: len(kube.ready_pods(NS, {"vigil.dev/model": "fg"})) == 1)
    await apps.delete_namespaced_deployment(
        "fg", NS, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    await kube.wait_for(lambda: kube.get_object("deployments", "fg", NS) is None)
    assert kube.pods(NS, {"vigil.dev/model": "fg"}) == []
    deployment_versions = [v for v in kube.objects["apps/v1/deployments", NS, "fg"].history if v]
    assert any(
        "foregroundDeletion" in (v["metadata"].get("finalizers") or []) for v in deployment_versions
    )


async def test_namespace_deletion_removes_its_content(
    kube: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    kube.create_namespace("doomed")
    await core.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    await apps.create_namespaced_deployment("doomed", deployment("d", replicas=1))
    await core.delete_namespace("doomed")
    ns = kube.get_object("namespaces", "doomed")
    assert ns is None or ns["status"]["phase"] == "Terminating"
    await kube.wait_for(lambda: kube.get_object("namespaces", "doomed") is None)
    assert kube.list_objects("configmaps", "doomed") == [] and kube.pods("doomed") == []


# --- the Deployment controller, scheduler and kubelet ---


@pytest.mark.kube_emulator(pod_start_delay=0.3)
async def test_deployment_pods_become_ready_in_their_zone(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    created = await apps.create_namespaced_deployment(NS, deployment("m-zone-b", zones=["zone-b"]))

    pods = await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2 and kube.ready_pods(NS))
    assert loop.time() - started >= 0.3  # the simulated container start delay
    for pod in pods:
        assert pod["metadata"]["name"].startswith("m-zone-b-")
        assert pod["metadata"]["labels"]["vigil.dev/model"] == "m-zone-b"
        assert "pod-template-hash" in pod["metadata"]["labels"]
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["uid"] == created.metadata.uid and owner["kind"] == "Deployment"
        assert kube.zone_of(pod) == "zone-b"
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"].startswith("127.")
    assert len({p["spec"]["nodeName"] for p in pods}) == 2  # spread over the zone's nodes

    status = (await apps.read_namespaced_deployment_status("m-zone-b", NS)).status
    assert status.replicas == status.ready_replicas == status.available_replicas == 2
    assert status.updated_replicas == 2 and status.observed_generation == 1


async def test_scale_down_removes_unready_pods_first(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(NS, deployment("scale", replicas=3))
    pods = await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 3 and kube.ready_pods(NS))
    sick = pods[1]["metadata"]["name"]
    kube.set_pod_ready(NS, sick, False)
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2)

    await apps.patch_namespaced_deployment_scale("scale", NS, {"spec": {"replicas": 2}})
    await kube.wait_for(lambda: len(kube.pods(NS)) == 2)
    assert sick not in {p["metadata"]["name"] for p in kube.pods(NS)}
    scale = await apps.read_namespaced_deployment_scale("scale", NS)
    assert scale.spec.replicas == 2

    await apps.patch_namespaced_deployment("scale", NS, {"spec": {"replicas": 0}})
    await kube.wait_for(lambda: kube.pods(NS) == [])
    status = (await apps.read_namespaced_deployment("scale", NS)).status
    assert status.replicas is None and status.ready_replicas is None  # omitempty, like apps/v1


async def test_rolling_update_replaces_pods(kube: KubeEmulator, apps: client.AppsV1Api) -> None:
    await apps.create_namespaced_deployment(NS, deployment("roll", replicas=2))
    old = await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2 and kube.ready_pods(NS))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "unit", "image": "vigil:2"}]}}}}
    await apps.patch_namespaced_deployment("roll", NS, patch)

    def rolled() -> bool:
        pods = kube.ready_pods(NS)
        return len(pods) == 2 and all(
            p["spec"]["containers"][0]["image"] == "vigil:2" for p in pods
        )

    await kube.wait_for(rolled)
    assert not {p["metadata"]["name"] for p in old} & {p["metadata"]["name"] for p in kube.pods(NS)}
    status = (await apps.read_namespaced_deployment("roll", NS)).status
    assert status.updated_replicas == 2 and status.observed_generation == 2


async def test_gpu_shortage_leaves_pods_pending_unschedulable(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    # zone-a has 2 nodes x 4 GPUs: two 4-GPU units fit, the third does not.
    await apps.create_namespaced_deployment(
        NS, deployment("big", zones=["zone-a"], replicas=3, gpus=4)
    )

    def one_unschedulable() -> dict[str, Any] | None:
        pending = [p for p in kube.pods(NS) if not p["spec"].get("nodeName")]
        cond = scheduled_condition(pending[0]) if len(pending) == 1 else None
        return cond if cond and cond["status"] == "False" else None

    cond = await kube.wait_for(one_unschedulable)
    assert cond["reason"] == "Unschedulable" and cond["lastTransitionTime"]
    assert "2 Insufficient nvidia.com/gpu" in cond["message"]
    assert "4 node(s) didn't match Pod's node affinity/selector" in cond["message"]
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2)
    assert {kube.zone_of(p) for p in kube.ready_pods(NS)} == {"zone-a"}
    assert kube.events(NS, kind="Pod", reason="FailedScheduling")


async def test_zone_outage_strands_pinned_units_until_the_zone_returns(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(NS, deployment("m-zone-a", zones=["zone-a"]))
    before = await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2 and kube.ready_pods(NS))

    kube.zone_down("zone-a")

    def stranded() -> bool:
        pods = kube.pods(NS)
        terminating = [p for p in pods if p["metadata"].get("deletionTimestamp")]
        pending = [p for p in pods if not p["spec"].get("nodeName")]
        return (
            len(terminating) == 2
            and len(pending) == 2
            and all(
                (scheduled_condition(p) or {}).get("reason") == "Unschedulable" for p in pending
            )
        )

    await kube.wait_for(stranded)
    for pod in kube.pods(NS):
        assert not is_ready(pod)
    pending = [p for p in kube.pods(NS) if not p["spec"].get("nodeName")]
    message = scheduled_condition(pending[0])["message"]  # type: ignore[index]
    assert "node.kubernetes.io/unreachable" in message
    dep = (await apps.read_namespaced_deployment("m-zone-a", NS)).status
    assert dep.ready_replicas is None and dep.replicas == 2

    kube.zone_up("zone-a")
    after = await kube.wait_for(
        lambda: len(kube.ready_pods(NS)) == 2 and len(kube.pods(NS)) == 2 and kube.ready_pods(NS)
    )
    assert {kube.zone_of(p) for p in after} == {"zone-a"}
    assert not {p["metadata"]["name"] for p in before} & {p["metadata"]["name"] for p in after}


async def test_zone_outage_moves_units_that_may_run_elsewhere(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(
        NS, deployment("spread", zones=["zone-a", "zone-b"], replicas=4)
    )
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 4)
    assert {kube.zone_of(p) for p in kube.ready_pods(NS)} == {"zone-a", "zone-b"}

    kube.zone_down("zone-a")
    await kube.wait_for(
        lambda: (
            len(kube.ready_pods(NS)) == 4
            and {kube.zone_of(p) for p in kube.ready_pods(NS)} == {"zone-b"}
        )
    )


@pytest.mark.kube_emulator(eviction_delay=1)
async def test_eviction_waits_for_the_eviction_delay(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(
        NS, deployment("slow-evict", zones=["zone-c"], replicas=1)
    )
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 1)
    loop = asyncio.get_running_loop()
    kube.zone_down("zone-c")
    down_at = loop.time()
    (pod,) = await kube.wait_for(lambda: not kube.ready_pods(NS) and kube.pods(NS))
    assert not pod["metadata"].get("deletionTimestamp")  # NotReady first, not yet evicted
    await kube.wait_for(lambda: any(p["metadata"].get("deletionTimestamp") for p in kube.pods(NS)))
    assert loop.time() - down_at >= 1


async def test_pod_disruption_budget_status_and_eviction(
    kube: KubeEmulator, apps: client.AppsV1Api, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    labels = {"vigil.dev/model": "guarded"}
    await apps.create_namespaced_deployment(NS, deployment("guarded", replicas=2))
    pdb = {
        "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": labels}},
    }
    policy = client.PolicyV1Api(kube_api)
    await policy.create_namespaced_pod_disruption_budget(NS, pdb)
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2)

    async def budget() -> client.V1PodDisruptionBudgetStatus:
        return (await policy.read_namespaced_pod_disruption_budget("guarded", NS)).status

    await kube.wait_for(
        lambda: kube.get_object("pdb", "guarded", NS)["status"]["currentHealthy"] == 2
    )
    status = await budget()
    assert (status.expected_pods, status.desired_healthy, status.disruptions_allowed) == (2, 2, 0)

    victim = kube.ready_pods(NS)[0]["metadata"]["name"]
    eviction = {"metadata": {"name": victim, "namespace": NS}}
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_pod_eviction(victim, NS, eviction)
    assert e.value.status == 429 and status_of(e.value)["reason"] == "TooManyRequests"

    await apps.patch_namespaced_deployment("guarded", NS, {"spec": {"replicas": 3}})
    await kube.wait_for(
        lambda: kube.get_object("pdb", "guarded", NS)["status"]["disruptionsAllowed"] == 1
    )
    await core.create_namespaced_pod_eviction(victim, NS, eviction)
    await kube.wait_for(lambda: victim not in {p["metadata"]["name"] for p in kube.pods(NS)})


async def test_pod_hooks_give_addresses_and_see_pods_go(
    kube: KubeEmulator, apps: client.AppsV1Api
) -> None:
    started: list[str] = []
    stopped: list[str] = []

    async def start(pod: dict[str, Any]) -> str:
        started.append(pod["metadata"]["name"])
        return f"127.0.1.{len(started)}"

    kube.pod_started = start
    kube.pod_stopped = lambda pod: stopped.append(pod["metadata"]["name"])
    await apps.create_namespaced_deployment(NS, deployment("hooked", replicas=2))
    pods = await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 2 and kube.ready_pods(NS))
    assert sorted(p["status"]["podIP"] for p in pods) == ["127.0.1.1", "127.0.1.2"]
    assert sorted(started) == sorted(p["metadata"]["name"] for p in pods)
    assert kube.pod_ip(pods[0]) == pods[0]["status"]["podIP"]

    await apps.patch_namespaced_deployment("hooked", NS, {"spec": {"replicas": 0}})
    await kube.wait_for(lambda: len(stopped) == 2)
    assert sorted(stopped) == sorted(started)


@pytest.mark.kube_emulator(pod_termination_delay=0.3)
async def test_graceful_pod_deletion_ends_after_the_termination_delay(
    kube: KubeEmulator, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    await apps.create_namespaced_deployment(NS, deployment("grace", replicas=1))
    (pod,) = await kube.wait_for(lambda: kube.ready_pods(NS))
    name = pod["metadata"]["name"]
    await core.delete_namespaced_pod(name, NS)
    going = await core.read_namespaced_pod(name, NS)
    assert going.metadata.deletion_timestamp is not None
    assert going.metadata.deletion_grace_period_seconds == 30
    await kube.wait_for(lambda: kube.get_object("pods", name, NS) is None)
    await kube.wait_for(lambda: len(kube.ready_pods(NS)) == 1)  # the Deployment replaced it


async def test_binding_a_pod_left_to_another_scheduler(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    body = {
        "metadata": {"name": "manual"},
        "spec": {"schedulerName": "elsewhere", "containers": [{"name": "c", "image": "i"}]},
    }
    await core.create_namespaced_pod(NS, body)
    assert (await core.read_namespaced_pod("manual", NS)).spec.node_name is None
    binding = {"metadata": {"name": "manual"}, "target": {"kind": "Node", "name": "zone-c-node-2"}}
    await kube.post(f"/api/v1/namespaces/{NS}/pods/manual/binding", json=binding)
    (pod,) = await kube.wait_for(lambda: kube.ready_pods(NS))
    assert pod["spec"]["nodeName"] == "zone-c-node-2"


async def test_delete_collection_and_dry_run(kube: KubeEmulator, core: client.CoreV1Api) -> None:
    for name, tier in (("a", "gpu"), ("b", "gpu"), ("c", "cpu")):
        await core.create_namespaced_config_map(
            NS, {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "dry"}}, dry_run="All")
    assert kube.get_object("configmaps", "dry", NS) is None

    await core.delete_collection_namespaced_config_map(NS, label_selector="tier=gpu")
    assert [cm["metadata"]["name"] for cm in kube.list_objects("configmaps", NS)] == ["c"]


async def test_deleting_a_crd_takes_its_objects_and_discovery(
    kube: KubeEmulator, kube_api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("doomed"))
    await client.ApiextensionsV1Api(kube_api).delete_custom_resource_definition("models.vigil.dev")
    assert kube.get_object("customresourcedefinitions", "models.vigil.dev") is None
    response = await kube.get(f"/apis/vigil.dev/v1alpha1/namespaces/{NS}/models")
    assert response.status == 404
    assert kube.objects["vigil.dev/v1alpha1/models", NS, "doomed"].deleted


# --- events, custom resources, counting, fault injection ---


async def test_events_on_both_apis_are_kept(kube: KubeEmulator, kube_api: client.ApiClient) -> None:
    about = {"apiVersion": "vigil.dev/v1alpha1", "kind": "Model", "name": "pcb", "namespace": NS}
    await client.CoreV1Api(kube_api).create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "pcb."},
            "involvedObject": about,
            "reason": "ScaledUp",
            "message": "2 -> 3 units: utilization 0.9 > 0.6",
            "type": "Normal",
            "source": {"component": "vigil-operator"},
        },
    )
    await client.EventsV1Api(kube_api).create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "pcb."},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "regarding": about,
            "reason": "ZoneFailover",
            "note": "zone-a is down: 1 unit moved to zone-b",
            "type": "Warning",
            "action": "Failover",
            "reportingController": "vigil.dev/operator",
            "reportingInstance": "vigil-operator-0",
        },
    )
    events = kube.events(NS, kind="Model", name="pcb")
    assert [(e["reason"], e["type"]) for e in events] == [
        ("ScaledUp", "Normal"),
        ("ZoneFailover", "Warning"),
    ]
    assert events[1]["message"] == "zone-a is down: 1 unit moved to zone-b"
    assert events[0]["source"] == "vigil-operator"


async def test_crds_created_through_the_api_are_served_with_their_schema(
    kube: KubeEmulator, kube_api: client.ApiClient
) -> None:
    crd = {
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wd"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "default": 1},
                                        "color": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    await client.ApiextensionsV1Api(kube_api).create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(kube_api)
    resources = await custom.get_api_resources("example.com", "v1")
    assert {r.name for r in resources.resources} == {"widgets", "widgets/status"}

    body = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"color": "red", "junk": 1},
    }
    created = await custom.create_namespaced_custom_object("example.com", "v1", NS, "widgets", body)
    assert created["spec"] == {"color": "red", "size": 1}  # pruned and defaulted
    bad = {**body, "metadata": {"name": "bad"}, "spec": {"size": 0}}
    with pytest.raises(ApiException) as e:
        await custom.create_namespaced_custom_object("example.com", "v1", NS, "widgets", bad)
    assert e.value.status == 422 and "spec.size" in status_of(e.value)["message"]


async def test_request_counting_and_fault_injection(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    kube.reset_calls()
    await core.create_namespaced_config_map(NS, {"metadata": {"name": "cnt"}})
    await core.read_namespaced_config_map("cnt", NS)
    await core.list_namespaced_config_map(NS)
    assert kube.count("create", "configmaps") == 1
    assert kube.count("get", "v1/configmaps", name="cnt") == 1
    assert kube.count("list", "configmaps", namespace=NS) == 1
    assert kube.call_counts()[("create", "configmaps")] == 1

    # A kmock reaction wins over the emulator: here, one failed patch.
    kube["patch", kmock.resource("v1/configmaps")][:1] << 500
    with pytest.raises(ApiException) as e:
        await core.patch_namespaced_config_map("cnt", NS, {"data": {"k": "v"}})
    assert e.value.status == 500
    patched = await core.patch_namespaced_config_map("cnt", NS, {"data": {"k": "v"}})
    assert patched.data == {"k": "v"}
    assert kube.count("patch", "configmaps", code=500) == 1
    assert kube.count("patch", "configmaps", code=200) == 1


async def test_emulator_thread_serves_synchronous_clients(tmp_path: Path) -> None:
    with EmulatorThread(pod_start_delay=0.05) as thread:
        url = f"{thread.url}/api/v1/namespaces"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5))
        assert anonymous.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        body = await asyncio.to_thread(
            lambda: json.load(urllib.request.urlopen(request, timeout=5))
        )
        assert {ns["metadata"]["name"] for ns in body["items"]} >= {"default"}
        thread.call(lambda kube: kube.add_zones(["zone-a"], nodes_per_zone=1))
        thread.call(
            lambda kube: kube.create_object(
                "v1/pods",
                {
                    "metadata": {"name": "p", "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            )
        )
        await thread.arun(lambda kube: kube.wait_for(lambda: kube.ready_pods("default")))
        assert thread.call(lambda kube: kube.count("list", "namespaces", code=401)) == 1
        assert thread.call(lambda kube: kube.count("list", "namespaces", code=200)) == 1
        assert thread.write_kubeconfig(tmp_path / "kc").exists()
        assert thread.internal_errors == []


# --- a real kopf operator against the emulator ---

KOPF_HANDLERS = """
import kopf

@kopf.on.create("vigil.dev", "v1alpha1", "models")
def hosted(body, spec, patch, **_):
    patch.status["phase"] = "Hosted"
    patch.status["desiredUnits"] = spec.get("minUnits", 1)
    kopf.info(body, reason="Hosted", message="units placed")

@kopf.on.delete("vigil.dev", "v1alpha1", "models")
def stopped(**_):
    pass
"""


@pytest.fixture(params=[NS, None], ids=["namespaced", "cluster-wide"])
async def kopf_operator(
    request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """``kopf run --standalone`` on a tiny handler file, one namespace or all of them."""
    handlers = tmp_path / "handlers.py"
    handlers.write_text(KOPF_HANDLERS)
    command = kopf_command(handlers, namespace=request.param)
    async with OperatorProcess(
        command, kubeconfig=kubeconfig, log_path=tmp_path / "kopf.log"
    ) as op:
        yield op


async def test_kopf_operator_runs_against_the_emulator(
    kube: KubeEmulator, custom: client.CustomObjectsApi, kopf_operator: OperatorProcess
) -> None:
    operator = kopf_operator
    namespaced = "--all-namespaces" not in operator.args
    try:
        await operator.wait_for_log("Starting the watch-stream for models", timeout=30)
        await custom.create_namespaced_custom_object(
            *MODELS, NS, "models", model("pcb", minUnits=2)
        )

        def hosted() -> dict[str, Any] | None:
            found = kube.get_object("models", "pcb", NS)
            return found if found and found.get("status", {}).get("phase") == "Hosted" else None

        found = await kube.wait_for(hosted, timeout=30)
        assert found["status"]["desiredUnits"] == 2
        assert "kopf.zalando.org/KopfFinalizerMarker" in found["metadata"]["finalizers"]
        (event,) = await kube.wait_for(  # kopf posts events in the background
            lambda: kube.events(NS, kind="Model", name="pcb", reason="Hosted")
        )
        assert event["message"] == "units placed" and event["type"] == "Normal"

        await custom.delete_namespaced_custom_object(*MODELS, NS, "models", "pcb")
        await kube.wait_for(lambda: kube.get_object("models", "pcb", NS) is None, timeout=30)
    except BaseException:
        print(operator.tail(120))
        raise

    if namespaced:  # kopf follows the namespaces that match its --namespace patterns
        assert kube.count("list", "namespaces") >= 1 and kube.count("watch", "namespaces") >= 1
    assert kube.count("list", "customresourcedefinitions") >= 1
    assert kube.count("watch", "customresourcedefinitions") >= 1
    assert kube.count("watch", "models", namespace=NS if namespaced else None) >= 1
    assert kube.count("patch", "models", subresource="status") >= 1
    assert kube.count("create", "events") >= 1
    assert "Traceback" not in operator.log


# --- CEL rules, as the API server runs them per request ---


async def test_cel_rules_refuse_with_the_api_servers_message(
    custom: client.CustomObjectsApi,
) -> None:
    with pytest.raises(ApiException) as e:
        await custom.create_namespaced_custom_object(
            *MODELS, NS, "models", model("bad", minUnits=4, maxUnits=2)
        )
    assert e.value.status == 422
    assert status_of(e.value)["message"] == (
        'Model.vigil.dev "bad" is invalid: spec: Invalid value: "object": '
        "maxUnits must be greater than or equal to minUnits"
    )
    args = (*MODELS, NS, "models", "good")
    created = await custom.create_namespaced_custom_object(*MODELS, NS, "models", model("good"))
    assert created["spec"]["scaling"]["target"] == 0.6  # the schema's defaults applied
    with pytest.raises(ApiException) as e:  # the rule holds on updates too
        await custom.patch_namespaced_custom_object(
            *args, {"spec": {"minUnits": 3, "maxUnits": 2}}, _content_type=MERGE
        )
    assert e.value.status == 422 and "maxUnits must be" in status_of(e.value)["message"]

    # The status subresource: its schema, and a transition rule against the old object.
    await custom.patch_namespaced_custom_object_status(
        *args, {"status": {"observedGeneration": 5}}, _content_type=MERGE
    )
    with pytest.raises(ApiException) as e:
        await custom.patch_namespaced_custom_object_status(
            *args, {"status": {"observedGeneration": 3}}, _content_type=MERGE
        )
    assert status_of(e.value)["message"] == (
        'Model.vigil.dev "good" is invalid: status.observedGeneration: Invalid value: '
        '"integer": status.observedGeneration must not go backwards'
    )
    with pytest.raises(ApiException) as e:
        await custom.patch_namespaced_custom_object_status(
            *args, {"status": {"desiredUnits": "three"}}, _content_type=MERGE
        )
    assert e.value.status == 422 and "status.desiredUnits" in status_of(e.value)["message"]


# --- authentication and RBAC ---


@pytest.mark.parametrize(
    ("rule", "request_", "allowed"),
    [
        (
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            ("delete", "apps", "deployments"),
            True,
        ),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, ("list", "", "pods"), False),
        (
            {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["pods"]},
            ("list", "", "pods"),
            False,
        ),
        (
            {"verbs": ["patch"], "apiGroups": ["vigil.dev"], "resources": ["models"]},
            ("patch", "vigil.dev", "models/status"),
            False,
        ),
        (
            {"verbs": ["patch"], "apiGroups": ["vigil.dev"], "resources": ["models/status"]},
            ("patch", "vigil.dev", "models/status"),
            True,
        ),
        (
            {"verbs": ["patch"], "apiGroups": ["vigil.dev"], "resources": ["*/status"]},
            ("patch", "vigil.dev", "models/status"),
            True,
        ),
        (
            {
                "verbs": ["get"],
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["a"],
            },
            ("get", "", "configmaps", "a"),
            True,
        ),
        (
            {
                "verbs": ["get"],
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["a"],
            },
            ("get", "", "configmaps", "b"),
            False,
        ),
        (
            {
                "verbs": ["list"],
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["a"],
            },
            ("list", "", "configmaps"),
            False,
        ),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, ("get", "/apis/apps/v1"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["/apis"]}, ("get", "/apis/apps"), False),
        ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}, ("get", "/api"), False),
    ],
)
async def test_rbac_rules_match_as_the_authorizer_does(
    rule: dict[str, Any], request_: tuple[str, ...], allowed: bool
) -> None:
    if request_[1].startswith("/"):
        request = auth.Request(request_[0], request_[1])
    else:
        verb, group, resource, *name = request_
        plural, _, sub = resource.partition("/")
        request = auth.Request(verb, "/", group, plural, sub or None, NS, *name)
    assert auth.rule_allows(rule, request) is allowed


async def test_service_account_tokens_are_held_to_stored_rbac(
    kube: KubeEmulator, core: client.CoreV1Api, tmp_path: Path
) -> None:
    await core.create_namespaced_service_account(NS, {"metadata": {"name": "robot"}})
    issued = await core.create_namespaced_service_account_token("robot", NS, {"spec": {}})
    kubeconfig = kube.write_kubeconfig(tmp_path / "kc", namespace=NS, token=issued.status.token)
    user = f"system:serviceaccount:{NS}:robot"
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        robot = client.CoreV1Api(api)
        assert (await client.CustomObjectsApi(api).get_api_resources(*MODELS)).resources
        with pytest.raises(ApiException) as e:
            await robot.list_namespaced_pod(NS)
        assert e.value.status == 403 and status_of(e.value)["message"] == (
            f'pods is forbidden: User "{user}" cannot list resource "pods" in API group "" '
            f'in the namespace "{NS}"'
        )
        with pytest.raises(ApiException) as e:
            await client.CustomObjectsApi(api).list_cluster_custom_object(*MODELS, "models")
        assert status_of(e.value)["message"] == (
            f'models.vigil.dev is forbidden: User "{user}" cannot list resource "models" '
            'in API group "vigil.dev" at the cluster scope'
        )

        admin_rbac = client.RbacAuthorizationV1Api(core.api_client)
        rules = [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get"],
                "resourceNames": ["open"],
            },
        ]
        await admin_rbac.create_namespaced_role(NS, {"metadata": {"name": "r"}, "rules": rules})
        binding = {
            "metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": NS}],
        }
        await admin_rbac.create_namespaced_role_binding(NS, binding)
        assert (await robot.list_namespaced_pod(NS)).items == []
        with pytest.raises(ApiException) as e:  # watch is a verb of its own
            await robot.list_namespaced_pod(NS, watch=True, timeout_seconds=1)
        assert e.value.status == 403 and "cannot watch resource" in status_of(e.value)["message"]
        for name in ("open", "closed"):
            await core.create_namespaced_config_map(NS, {"metadata": {"name": name}})
        assert (await robot.read_namespaced_config_map("open", NS)).metadata.name == "open"
        with pytest.raises(ApiException) as e:
            await robot.read_namespaced_config_map("closed", NS)
        assert status_of(e.value)["message"].startswith('configmaps "closed" is forbidden:')

        await core.delete_namespaced_service_account("robot", NS)  # its tokens die with it
        with pytest.raises(ApiException) as e:
            await robot.list_namespaced_pod(NS)
        assert e.value.status == 401 and status_of(e.value)["reason"] == "Unauthorized"
    assert kube.count("list", "pods", code=200) == 1
    assert {c.user for c in kube.calls if c.code == 403} == {user}


# --- node lifecycle, as the node lifecycle controller and kubelets play it ---


def pod(name: str, node: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}], **spec}
    if node:
        body["nodeName"] = node
    return {"metadata": {"name": name}, "spec": body}


def taints(kube: KubeEmulator, node: str) -> set[tuple[str, str]]:
    found = kube.get_object("nodes", node) or {}
    return {(t["key"], t["effect"]) for t in found.get("spec", {}).get("taints") or []}


def node_ready(kube: KubeEmulator, node: str) -> str | None:
    found = kube.get_object("nodes", node) or {}
    conditions = found.get("status", {}).get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Ready"), None)


@pytest.mark.kube_emulator(eviction_delay=300)
async def test_pods_get_the_default_toleration_seconds(core: client.CoreV1Api) -> None:
    created = await core.create_namespaced_pod(NS, pod("p"))
    assert {(t.key, t.effect, t.toleration_seconds) for t in created.spec.tolerations} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 300),
        ("node.kubernetes.io/unreachable", "NoExecute", 300),
    }
    own = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    kept = await core.create_namespaced_pod(NS, pod("q", tolerations=[own]))
    assert [(t.key, t.toleration_seconds) for t in kept.spec.tolerations] == [
        ("node.kubernetes.io/unreachable", None),
        ("node.kubernetes.io/not-ready", 300),
    ]


async def test_an_external_kubelet_heartbeats_through_its_lease(
    kube: KubeEmulator, kube_api: client.ApiClient, core: client.CoreV1Api
) -> None:
    kube.add_node("ext-1", zone="zone-x", kubelet=False)
    leases = client.CoordinationV1Api(kube_api)
    lease = {
        "metadata": {"name": "ext-1"},
        "spec": {"holderIdentity": "ext-1", "leaseDurationSeconds": 40},
    }
    await leases.create_namespaced_lease("kube-node-lease", lease)
    loop = asyncio.get_running_loop()
    end = loop.time() + 1.5  # three grace periods of renewals keep it Ready
    while loop.time() < end:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await leases.patch_namespaced_lease(
            "ext-1", "kube-node-lease", {"spec": {"renewTime": now}}
        )
        await asyncio.sleep(0.1)
    assert node_ready(kube, "ext-1") == "True" and taints(kube, "ext-1") == set()
    await core.create_namespaced_pod(NS, pod("on-ext", "ext-1"))

    await kube.wait_for(lambda: node_ready(kube, "ext-1") == "Unknown", timeout=3)
    node = kube.get_object("nodes", "ext-1")
    assert node is not None
    assert {c["reason"] for c in node["status"]["conditions"]} == {"NodeStatusUnknown"}
    unreachable = "node.kubernetes.io/unreachable"
    await kube.wait_for(
        lambda: taints(kube, "ext-1") == {(unreachable, "NoSchedule"), (unreachable, "NoExecute")}
    )
    # Evicted (eviction_delay=0) but Terminating: only its kubelet can confirm the end.
    going = await kube.wait_for(
        lambda: (
            (kube.get_object("pods", "on-ext", NS) or {})
            .get("metadata", {})
            .get("deletionTimestamp")
        )
    )
    assert going
    await asyncio.sleep(0.3)
    assert kube.get_object("pods", "on-ext", NS) is not None
    await core.delete_namespaced_pod("on-ext", NS, grace_period_seconds=0)
    assert kube.get_object("pods", "on-ext", NS) is None

    await core.patch_node_status(
        "ext-1",
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "KubeletNotReady",
                        "lastHeartbeatTime": datetime.datetime.now(datetime.UTC).strftime(
                            "%Y-%m-%dT%H:%M:%SZ"
                        ),
                    }
                ]
            }
        },
    )
    not_ready = "node.kubernetes.io/not-ready"
    await kube.wait_for(
        lambda: taints(kube, "ext-1") == {(not_ready, "NoSchedule"), (not_ready, "NoExecute")}
    )


@pytest.mark.kube_emulator(zones=("zone-a",), nodes_per_zone=1)
async def test_nothing_is_evicted_when_every_node_is_down(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_pod(NS, pod("survivor"))
    await kube.wait_for(lambda: kube.ready_pods(NS))
    kube.node_down("zone-a-node-1")
    unreachable = "node.kubernetes.io/unreachable"
    await kube.wait_for(
        lambda: taints(kube, "zone-a-node-1") == {(unreachable, "NoSchedule")}, timeout=3
    )
    await kube.wait_for(lambda: not kube.ready_pods(NS))
    await asyncio.sleep(0.5)  # eviction_delay is 0: an eviction would have come by now
    survivor = kube.get_object("pods", "survivor", NS)
    assert survivor is not None and not survivor["metadata"].get("deletionTimestamp")
    assert taints(kube, "zone-a-node-1") == {(unreachable, "NoSchedule")}

    kube.node_up("zone-a-node-1")
    await kube.wait_for(lambda: kube.ready_pods(NS) and taints(kube, "zone-a-node-1") == set())


async def test_built_in_kubelets_renew_their_node_leases(kube: KubeEmulator) -> None:
    def renewed() -> str:
        lease = kube.get_object("leases", "zone-a-node-1", "kube-node-lease")
        assert lease is not None and lease["spec"]["holderIdentity"] == "zone-a-node-1"
        assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
        return str(lease["spec"]["renewTime"])

    first = renewed()
    await kube.wait_for(lambda: renewed() != first, timeout=2)


@pytest.mark.kube_emulator(run_kubelet=False, zones=("zone-a",), nodes_per_zone=1)
async def test_without_the_built_in_kubelet_nodes_wait_for_an_external_one(
    kube: KubeEmulator, core: client.CoreV1Api
) -> None:
    assert kube.get_object("leases", "zone-a-node-1", "kube-node-lease") is None
    await core.create_namespaced_pod(NS, pod("idle"))
    await kube.wait_for(lambda: kube.get_object("pods", "idle", NS)["spec"].get("nodeName"))
    await kube.wait_for(lambda: node_ready(kube, "zone-a-node-1") == "Unknown", timeout=3)
    idle = kube.get_object("pods", "idle", NS)
    assert idle is not None and idle["status"]["phase"] == "Pending"  # nobody started it
