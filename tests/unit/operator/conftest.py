"""Builders for the API objects the core reads: Nodes, unit Pods and Deployments,
shaped as the API server returns them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil_operator.core.crd import ModelValidator

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

Obj = dict[str, Any]


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture(scope="session")
def crd_validator() -> ModelValidator:
    return ModelValidator(yaml.safe_load((ROOT / "crds" / "models.vigil.dev.yaml").read_text()))


@pytest.fixture(scope="session")
def example() -> Callable[[str], Obj]:
    def load(name: str = "model.yaml") -> Obj:
        loaded: Obj = yaml.safe_load((ROOT / "examples" / name).read_text())
        return loaded

    return load


def make_node(
    name: str,
    zone: str | None,
    *,
    ready: bool = True,
    gpus: int | str | None = 1,
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    unschedulable: bool = False,
) -> Obj:
    meta_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if zone is not None:
        meta_labels["topology.kubernetes.io/zone"] = zone
    allocatable: Obj = {"cpu": "8", "memory": "32Gi"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = str(gpus)
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": meta_labels},
        "spec": spec,
        "status": {
            "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def make_pod(
    name: str,
    zone: str,
    *,
    unschedulable_for: float | None = None,
    message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    waiting: str | None = None,
    init_waiting: str | None = None,
    phase: str = "Pending",
    terminating: bool = False,
    now: datetime = NOW,
) -> Obj:
    conditions: list[Obj] = []
    if unschedulable_for is not None:
        since = now - timedelta(seconds=unschedulable_for)
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    status: Obj = {"phase": phase, "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [
            {
                "name": "unit",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": waiting, "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ]
    if init_waiting:
        status["initContainerStatuses"] = [
            {"name": "fetch-artifact", "state": {"waiting": {"reason": init_waiting}}}
        ]
    meta: Obj = {
        "name": name,
        "labels": {"vigil.dev/model": "m", "vigil.dev/zone": zone},
    }
    if terminating:
        meta["deletionTimestamp"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def make_deployment(name: str, zone: str, replicas: int, ready: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"vigil.dev/model": "m", "vigil.dev/zone": zone}},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": ready},
    }


@pytest.fixture(scope="session")
def node() -> Callable[..., Obj]:
    return make_node


@pytest.fixture(scope="session")
def pod() -> Callable[..., Obj]:
    return make_pod


@pytest.fixture(scope="session")
def deployment() -> Callable[..., Obj]:
    return make_deployment
