"""The per-Model controller, written once for both shells.

One pass is: read the Model and what the world shows, ask the pure core
(`core.reconcile`) what to do, have the world do it (apply, delete, write
status, emit Events), and record the operator's series. One autoscaler tick
is: scrape the Model's Ready units, run the policy (`core.autoscaling`), and
reconcile on a change. The shells differ only in their `World`: the kopf
handlers' reads indexes and writes through the API server
(`cluster.handlers.ClusterWorld`), the local runtime's reads and starts local
processes (`local.control.LocalModel`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from vigil_operator.core.autoscaling import ScalingState, autoscale, policy_for
from vigil_operator.core.reconcile import Observed, Outcome, read_spec, reconcile
from vigil_operator.core.spec import ModelSpec, SpecError, parse_spec
from vigil_operator.core.status import Event
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.scraper import UnitScraper, pod_ready
from vigil_operator.settings import OperatorSettings

Key = tuple[str, str]  # (namespace, name)
log = logging.getLogger("vigil.controller")


class World(Protocol):
    """What one shell offers the controller for one Model: reads, then writes."""

    def current(self) -> Mapping[str, Any] | None:
        """The Model as last seen, without a call (spec and status): the
        autoscaler's view between reconciles."""

    async def read_model(self) -> Mapping[str, Any] | None:
        """The Model as it is now; None when it is gone."""

    def observe(self, spec: ModelSpec | None) -> Observed:
        """Nodes, the Model's unit Pods and Deployments, as the core reads them."""

    def unit_pods(self) -> Sequence[Mapping[str, Any]]:
        """The Model's unit Pods (the autoscaler scrapes the Ready ones)."""

    def status_fields(self) -> Mapping[str, Any]:
        """Fields the shell adds to the core's status (the local client endpoint)."""

    async def apply(self, body: Mapping[str, Any], outcome: Outcome) -> None:
        """Make the children what `outcome` says (apply, delete)."""

    async def write_status(self, status: Mapping[str, Any]) -> None: ...

    def emit(self, body: Mapping[str, Any], event: Event) -> None: ...

    def note(self, message: str) -> None:
        """A line for the operator's log (what was applied, why it scaled)."""


def valid_spec(body: Mapping[str, Any]) -> ModelSpec | None:
    """The autoscaler's view: the spec alone (`World.current` may carry no
    metadata, so the name is the reconcile's to check)."""
    try:
        return parse_spec(body.get("spec") or {})
    except SpecError:
        return None


@dataclass
class Controller:
    """Reconciles and autoscales Models against a `World`, one pass per Model
    at a time (a lock per Model: timers, events and the autoscaler interleave)."""

    settings: OperatorSettings
    metrics: OperatorMetrics
    default_image: str = ""  # "": settings.default_image

    def __post_init__(self) -> None:
        self.locks: dict[Key, asyncio.Lock] = {}
        self.closing = False

    async def reconcile(
        self, key: Key, world: World, desired: int | None = None, reason: str = ""
    ) -> Outcome | None:
        """One idempotent pass; `desired` is the autoscaler's wish (None: keep)."""
        async with self.locks.setdefault(key, asyncio.Lock()):
            if self.closing:  # the shell is stopping; its clients are going away
                return None
            started = time.perf_counter()
            body = await world.read_model()
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            outcome = self._decide(body, world, desired, reason)
            await world.apply(body, outcome)
            previous = body.get("status") or {}
            status = {**outcome.status, **world.status_fields()}
            if status != previous:  # a no-op write would wake every watcher
                await world.write_status(status)
            for event in outcome.events:
                world.emit(body, event)
            record(self.metrics, key, previous, outcome)
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
            return outcome

    def _decide(
        self, body: Mapping[str, Any], world: World, desired: int | None, reason: str
    ) -> Outcome:
        s = self.settings
        spec = read_spec(body)  # once a pass: the world's reads and the core share it
        return reconcile(
            body,
            world.observe(spec if isinstance(spec, ModelSpec) else None),
            now=datetime.now(UTC),
            spec=spec,
            default_image=self.default_image or s.default_image,
            unschedulable_timeout_s=s.unschedulable_timeout_s,
            zone_recovery_s=s.zone_recovery_s,
            unit_ready_timeout_s=s.unit_ready_timeout_s,
            cluster_domain=s.cluster_domain,
            default_resources=s.default_resources,
            desired_units=desired,
            scaling_reason=reason,
        )

    async def autoscale(
        self, key: Key, world: World, scraper: UnitScraper, state: ScalingState
    ) -> ScalingState:
        """One autoscaler tick: scrape, decide, reconcile on a change."""
        body = world.current() or {}
        spec = valid_spec(body)
        policy = (
            None
            if spec is None
            else policy_for(
                spec,
                stable_window_s=self.settings.stable_window_s,
                panic_window_s=self.settings.panic_window_s,
            )
        )
        if policy is None:
            return ScalingState()  # no autoscaling: minUnits (or 0) rules
        pods = list(world.unit_pods())
        ready = sum(pod_ready(p) for p in pods)
        if state.desired is None:
            last = int((body.get("status") or {}).get("desiredUnits") or 0)
            state = replace(state, desired=last or None)
        sample = await scraper.sample(pods, policy.metric)
        decision, state = autoscale(policy, state, sample, time.monotonic(), ready)
        if decision.load is not None:
            self.metrics.models.observe_load(key, policy.metric, decision.load)
        if decision.changed:  # the reconcile's ScaledUp/ScaledDown Event says why too
            world.note(f"scaling: {decision.reason}")
            await self.reconcile(key, world, decision.desired, decision.reason)
        return state

    async def close(self) -> None:
        """Stop: wait for passes in flight, start no more."""
        self.closing = True
        for lock in list(self.locks.values()):
            async with lock:
                pass

    def forget(self, key: Key) -> None:
        """The Model is gone: its series and its lock go too."""
        self.metrics.models.forget(key)
        self.locks.pop(key, None)


def record(
    metrics: OperatorMetrics, key: Key, previous: Mapping[str, Any], outcome: Outcome
) -> None:
    """The operator's series for one Model after a pass."""
    spec = outcome.spec
    low = spec.min_units if spec else 0
    high = spec.ceiling if spec else 0
    metrics.models.update(key, outcome.status, low, high)
    before, after = previous.get("desiredUnits"), outcome.status.get("desiredUnits")
    if before is not None and after is not None and before != after:
        metrics.models.count_decision(key, "up" if after > before else "down")
