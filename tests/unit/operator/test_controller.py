"""The per-Model controller against an in-memory world: the order of a pass,
what it writes and what it leaves alone, and an autoscaler tick. Both shells
(kopf, local) run this code; their worlds are tested with the shells."""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from vigil_operator.controller import Controller
from vigil_operator.core import spec as spec_module
from vigil_operator.core.autoscaling import Sample, ScalingState
from vigil_operator.core.reconcile import Observed, Outcome
from vigil_operator.core.spec import ModelSpec
from vigil_operator.core.status import Event
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.settings import OperatorSettings

Obj = dict[str, Any]
KEY = ("team", "m")
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
ARTIFACT: Obj = {"artifact": {"uri": "https://models.example/m.vigil"}}


class MemoryWorld:
    """A Model, Ready nodes in three zones, and Deployments that become Ready
    as soon as they are applied; it records every write."""

    def __init__(self, node: Callable[..., Obj], spec: Obj) -> None:
        self.model: Obj | None = {
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": KEY[1], "namespace": KEY[0], "generation": 1},
            "spec": spec,
        }
        self.nodes = [node(f"{z}-0", z, gpus=1) for z in ZONES]
        self.deployments: dict[str, Obj] = {}
        self.observed_specs: list[ModelSpec | None] = []
        self.status_writes: list[Obj] = []
        self.events: list[Event] = []
        self.notes: list[str] = []

    def current(self) -> Mapping[str, Any] | None:
        """Spec and status only, as the kopf shell's live view gives them."""
        if self.model is None:
            return None
        return {"spec": self.model["spec"], "status": self.model.get("status") or {}}

    async def read_model(self) -> Mapping[str, Any] | None:
        return copy.deepcopy(self.model)

    def observe(self, spec: ModelSpec | None) -> Observed:
        self.observed_specs.append(spec)
        return Observed(nodes=self.nodes, deployments=list(self.deployments.values()))

    def unit_pods(self) -> Sequence[Mapping[str, Any]]:
        return [
            {
                "metadata": {"name": f"{name}-{i}", "uid": f"{name}-{i}"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            for name, dep in self.deployments.items()
            for i in range(dep["spec"]["replicas"])
        ]

    def status_fields(self) -> Mapping[str, Any]:
        return {}

    async def apply(self, body: Mapping[str, Any], outcome: Outcome) -> None:
        for obj in outcome.apply:
            if obj["kind"] == "Deployment":
                obj = copy.deepcopy(obj)
                obj["status"] = {"readyReplicas": obj["spec"]["replicas"]}
                self.deployments[obj["metadata"]["name"]] = obj
        for name in outcome.delete_deployments:
            self.deployments.pop(name)

    async def write_status(self, status: Mapping[str, Any]) -> None:
        self.status_writes.append(dict(status))
        assert self.model is not None
        self.model["status"] = dict(status)

    def emit(self, body: Mapping[str, Any], event: Event) -> None:
        self.events.append(event)

    def note(self, message: str) -> None:
        self.notes.append(message)


class FixedLoad:
    """A scraper whose units all report the same total load."""

    def __init__(self, load: float) -> None:
        self.load = load

    async def sample(self, pods: Sequence[Mapping[str, Any]], metric: str) -> Sample | None:
        return Sample(time.monotonic(), self.load, len(pods))  # the controller's clock


@pytest.fixture
def controller() -> Controller:
    return Controller(OperatorSettings(), OperatorMetrics(), default_image="img:1")


def units(world: MemoryWorld) -> int:
    return sum(d["spec"]["replicas"] for d in world.deployments.values())


def test_a_pass_hosts_the_model_writes_status_once_and_records_it(
    controller: Controller, node: Callable[..., Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[Mapping[str, Any]] = []
    real_parse = spec_module.parse_spec

    def counting_parse(spec: Mapping[str, Any]) -> ModelSpec:
        parsed.append(spec)
        return real_parse(spec)

    for module in list(sys.modules.values()):  # wherever it was imported
        if getattr(module, "parse_spec", None) is real_parse:
            monkeypatch.setattr(module, "parse_spec", counting_parse)
    world = MemoryWorld(node, {**ARTIFACT, "minUnits": 3})

    outcome = asyncio.run(controller.reconcile(KEY, world))

    assert outcome is not None and outcome.spec is not None
    assert len(parsed) == 1, "one pass parses the spec once; the world's reads share it"
    assert world.observed_specs == [outcome.spec]
    assert units(world) == 3 and len(world.deployments) == 3  # one per zone
    assert [w["desiredUnits"] for w in world.status_writes] == [3]
    assert world.events, "the first hosting is announced"
    row = controller.metrics.models.get(KEY)
    assert row is not None and (row.desired, row.min_units) == (3, 3)

    asyncio.run(controller.reconcile(KEY, world))  # units Ready now: one more status write
    asyncio.run(controller.reconcile(KEY, world))  # nothing changed: no write wakes watchers
    assert len(world.status_writes) == 2
    assert world.status_writes[-1]["inServiceUnits"] == 3


def test_an_invalid_spec_touches_no_unit_and_says_why(
    controller: Controller, node: Callable[..., Obj]
) -> None:
    world = MemoryWorld(node, {**ARTIFACT, "minUnits": 2})
    asyncio.run(controller.reconcile(KEY, world))
    assert world.model is not None
    world.model["spec"]["minUnits"] = -1

    outcome = asyncio.run(controller.reconcile(KEY, world))

    assert outcome is not None and outcome.spec is None
    assert world.observed_specs[-1] is None
    assert units(world) == 2, "units already serving keep serving"
    assert "minUnits" in world.status_writes[-1]["message"]


def test_a_deleted_model_or_a_closing_controller_does_nothing(
    controller: Controller, node: Callable[..., Obj]
) -> None:
    world = MemoryWorld(node, {**ARTIFACT, "minUnits": 1})
    assert world.model is not None
    world.model["metadata"]["deletionTimestamp"] = "2025-03-01T12:00:00Z"
    assert asyncio.run(controller.reconcile(KEY, world)) is None
    world.model = None
    assert asyncio.run(controller.reconcile(KEY, world)) is None

    live = MemoryWorld(node, {**ARTIFACT, "minUnits": 1})
    asyncio.run(controller.close())
    assert asyncio.run(controller.reconcile(KEY, live)) is None
    assert not live.deployments and not live.status_writes


def test_an_autoscaler_tick_scales_from_the_units_load_and_says_why(
    controller: Controller, node: Callable[..., Obj]
) -> None:
    spec = {
        **ARTIFACT,
        "minUnits": 1,
        "maxUnits": 4,
        "scaling": {"metric": "concurrency", "target": 2},
    }
    world = MemoryWorld(node, spec)
    asyncio.run(controller.reconcile(KEY, world))
    asyncio.run(controller.reconcile(KEY, world))
    assert units(world) == 1

    async def ticks(scraper: FixedLoad, n: int) -> ScalingState:
        state = ScalingState()
        for _ in range(n):
            state = await controller.autoscale(KEY, world, scraper, state)  # type: ignore[arg-type]
        return state

    state = asyncio.run(ticks(FixedLoad(6.0), 2))  # 6 requests in flight, target 2 a unit

    assert units(world) == 3
    assert state.desired == 3
    assert world.model is not None and world.model["status"]["desiredUnits"] == 3
    assert any(n.startswith("scaling: ") for n in world.notes)
    row = controller.metrics.models.get(KEY)
    assert row is not None and row.decisions == {"up": 1, "down": 0}
    assert row.load == {"concurrency": 6.0}
