"""Autoscaling end to end: the real operator scrapes unit endpoints serving the
real metric text of `vigil_inference.metrics`, and scales the Model's
Deployments on the emulator between minUnits and maxUnits.

Each unit Pod the emulator starts gets a small HTTP server on its own
loopback address (127.77.x.y:8080) whose counters advance with a demand the
test sets: the Pods share it, each at most 100 % busy, the rest refused
(RESOURCE_EXHAUSTED), exactly as a saturated `vigil serve` reports it.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import generate_latest

from tests.integration.operator.chart_rbac import OperatorIdentity
from tests.integration.operator.emulator import KubeEmulator, OperatorProcess
from tests.tools import free_port
from vigil_inference.metrics import InferenceMetrics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.kube_emulator(pod_start_delay=0.3),
]

GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"
IMAGES_PER_BUSY_S = 20.0


class FakeUnits:
    """Metric endpoints for the emulator's unit Pods, sharing one demand."""

    def __init__(self) -> None:
        self.demand = 0.0  # units of work per second (1.0 = one unit fully busy)
        self.units: dict[str, tuple[web.AppRunner, InferenceMetrics, list[float]]] = {}
        self._ips = (f"127.77.{i // 250}.{i % 250 + 1}" for i in itertools.count())

    def _advance(self, uid: str) -> None:
        _, metrics, last = self.units[uid]
        now = time.monotonic()
        dt, last[0] = now - last[0], now
        share = self.demand / max(len(self.units), 1)
        busy = min(1.0, share) * dt
        refused = max(0.0, share - 1.0) * dt * IMAGES_PER_BUSY_S
        if busy > 0:
            metrics.observe_batch(1, busy)
            metrics.images.labels(result="normal").inc(busy * IMAGES_PER_BUSY_S)
            metrics.requests.labels(code="OK").inc(busy * IMAGES_PER_BUSY_S)
        if refused > 0:
            metrics.requests.labels(code="RESOURCE_EXHAUSTED").inc(refused)

    async def started(self, pod: dict[str, Any]) -> str:
        uid, ip = pod["metadata"]["uid"], next(self._ips)
        metrics = InferenceMetrics()

        async def scrape(_: web.Request) -> web.Response:
            self._advance(uid)
            return web.Response(body=generate_latest(metrics.registry), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, ip, 8080).start()
        self.units[uid] = (runner, metrics, [time.monotonic()])
        return ip

    async def stopped(self, pod: dict[str, Any]) -> None:
        unit = self.units.pop(pod["metadata"]["uid"], None)
        if unit is not None:
            await unit[0].cleanup()

    async def close(self) -> None:
        for runner, _, _ in list(self.units.values()):
            await runner.cleanup()
        self.units.clear()


@pytest_asyncio.fixture(loop_scope="session")
async def units(kube: KubeEmulator) -> AsyncIterator[FakeUnits]:
    fake = FakeUnits()
    kube.pod_started = fake.started
    kube.pod_stopped = fake.stopped
    try:
        yield fake
    finally:
        await fake.close()


async def test_load_scales_up_within_bounds_and_back_down(
    kube: KubeEmulator,
    units: FakeUnits,
    operator_identity: OperatorIdentity,
    kube_api: client.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    api = client.CustomObjectsApi(kube_api)
    port = free_port()
    op = OperatorProcess(
        [
            sys.executable,
            "-m",
            "vigil_cli",
            "operator",
            "-n",
            kube_namespace,
            "--metrics-port",
            str(port),
            "--liveness-port",
            "0",
            "--reconcile-interval",
            "1",
            "--standalone",  # a lone replica: no leader Lease (see test_leader_election.py)
        ],
        kubeconfig=operator_identity.kubeconfig,
        log_path=tmp_path / "operator.log",
        env={
            "VIGIL_SCRAPE_INTERVAL": "0.5",
            "VIGIL_STABLE_WINDOW": "6",
            "VIGIL_PANIC_WINDOW": "1.5",
        },
    )
    seen: list[int] = []

    async def status() -> dict[str, Any]:
        body = await api.get_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, "pcb")
        s: dict[str, Any] = body.get("status") or {}
        if "desiredUnits" in s:
            seen.append(s["desiredUnits"])
        return s

    def at(units_: int):  # type: ignore[no-untyped-def]
        async def check() -> bool:
            s = await status()
            assert s.get("desiredUnits") == units_ and s.get("inServiceUnits") == units_, s
            return True

        return check

    async with op:
        units.demand = 0.3  # light: one unit at 30 %
        await api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Model",
                "metadata": {"name": "pcb", "namespace": kube_namespace},
                "spec": {
                    "artifact": {"uri": "file:///m.vigil"},
                    "minUnits": 1,
                    "maxUnits": 5,
                    "unit": {"gpus": 0},
                    "scaling": {
                        "metric": "utilization",
                        "target": 0.6,
                        "scaleDownStabilizationSeconds": 4,
                    },
                },
            },
        )
        await kube.wait_for(at(1), timeout=20, interval=0.2)
        await asyncio.sleep(4)  # light load for a while: no change
        assert set(seen) == {1}

        units.demand = 2.1  # needs ceil(2.1 / 0.6) = 4 units
        t0 = time.monotonic()
        await kube.wait_for(at(4), timeout=30, interval=0.2)
        up_s = time.monotonic() - t0
        assert len(kube.ready_pods(kube_namespace, {"vigil.dev/model": "pcb"})) == 4
        events = [e["message"] for e in kube.events(kube_namespace, kind="Model", name="pcb")]
        assert any("utilization" in m and "-> 4" in m for m in events), events

        url = f"http://127.0.0.1:{port}/metrics"

        async def published() -> bool:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
            lines = text.splitlines()
            up = next(
                line
                for line in lines
                if line.startswith("vigil_scaling_decisions_total{") and 'direction="up"' in line
            )
            assert float(up.split()[-1]) >= 1
            load = next(
                line
                for line in lines
                if line.startswith("vigil_model_observed_load{") and "utilization" in line
            )
            # the 2.1 demand, once the averaging window has filled with it
            assert 1.0 < float(load.split()[-1]) < 3.0, load
            return True

        await kube.wait_for(published, timeout=20, interval=0.5)

        units.demand = 0.0  # idle: back to the floor after the shortened window
        await kube.wait_for(at(1), timeout=40, interval=0.2)
        assert min(seen) >= 1 and max(seen) <= 5, seen
        assert 4 in seen
    assert "Traceback" not in op.log, op.tail()
    print(f"scaled 1 -> 4 in {up_s:.1f}s")
