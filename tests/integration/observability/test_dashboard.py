"""The Grafana dashboard and the alerts against live data.

A real Prometheus scrapes a real `vigil operator` (against the API server
emulator) and the real `vigil serve` unit that operator's Deployment asked
for: the emulated kubelet runs the unit Pod's own command line on a loopback
address of its own, with the trained test model as a file:// artifact.
Scrape jobs come from the chart's rendered ServiceMonitor and PodMonitor.
While DetectAnomalies requests flow (normal, defective and invalid images),
every dashboard query, with its template variables substituted, must return
series; every alert rule must evaluate without error. The operator logs in as
the chart's ServiceAccount and the emulator enforces the chart's RBAC, so a
call it does not grant fails the test (see tests/integration/operator/chart_rbac.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from kube_emulator import KubeEmulator, OperatorProcess
from tests.integration.observability.prometheus import Prometheus, free_port, write_targets
from tests.integration.operator.chart_rbac import OperatorIdentity
from tests.tools import require
from tests.unit.chart.conftest import CHART, NAMESPACE, Render
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.kube_emulator(pod_start_delay=0.2),
]

MODEL = "fabric"
DASHBOARD = CHART / "dashboards" / "vigil.json"
RULES = CHART / "rules" / "vigil.rules.yaml"
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for 1 s scrapes and a short range


def loopback_address() -> str:
    """A 127.x.y.z where both unit ports are free: each unit Pod gets its own
    "IP", as in a cluster, so the fixed ports 50051 and 8080 never collide."""
    for _ in range(100):
        ip = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
        try:
            for port in (50051, 8080):
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return ip
    raise AssertionError("no free loopback address for a unit")


class Units:
    """The emulated kubelet's container runtime: runs each unit Pod's command
    (`vigil serve ...`) as a process on the Pod's own loopback address, and
    lists the running ones for Prometheus as the PodMonitor would find them."""

    def __init__(self, workdir: Path, targets: Path) -> None:
        self.workdir = workdir
        self.targets = targets
        self.running: dict[str, tuple[asyncio.subprocess.Process, str, dict[str, Any]]] = {}

    async def start(self, pod: dict[str, Any]) -> str:
        (container,) = pod["spec"]["containers"]
        command = container["command"]
        assert command[:2] == ["vigil", "serve"], command
        ip = loopback_address()
        name = pod["metadata"]["name"]
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "vigil_cli",
                *command[1:],
                "--host",
                ip,
                "--max-batch-size",
                "4",
                "--prepare-workers",
                "1",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while "grpc_port=" not in log.read_text(errors="replace"):
            if process.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"unit {name} did not start:\n{log.read_text()}")
            await asyncio.sleep(0.1)
        self.running[pod["metadata"]["uid"]] = (process, ip, pod)
        self._publish()
        return ip

    async def stop(self, pod: dict[str, Any]) -> None:
        entry = self.running.pop(pod["metadata"]["uid"], None)
        self._publish()
        if entry is not None:
            await self._terminate(entry[0])

    async def close(self) -> None:
        entries, self.running = list(self.running.values()), {}
        for process, _, _ in entries:
            await self._terminate(process)

    @staticmethod
    async def _terminate(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()

    def addresses(self) -> list[str]:
        return [ip for _, ip, _ in self.running.values()]

    def _publish(self) -> None:
        """The targets kubernetes_sd would discover: address and pod metadata."""
        targets = []
        for _, ip, pod in self.running.values():
            meta = pod["metadata"]
            labels = {"__meta_kubernetes_namespace": meta["namespace"]}
            labels["__meta_kubernetes_pod_name"] = meta["name"]
            for key, value in meta["labels"].items():
                labels["__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", key)] = value
            targets.append((f"{ip}:8080", labels))
        write_targets(self.targets, targets)


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    out = []
    for panel in dashboard["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                out.append((sub["title"], target["expr"]))
    return out


def substitute(expr: str, namespace: str) -> str:
    """Grafana's part: the template variables and $__rate_interval."""
    out = (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", namespace)
        .replace("$model", MODEL)
    )
    assert "$" not in out, f"an unknown variable in {expr}"
    return out


async def traffic(
    target: Callable[[], list[str]], images: list[bytes], stop: asyncio.Event
) -> dict[str, int]:
    """DetectAnomalies in a loop over the units: normal, defective and invalid
    images, a few per second (the units stay far below their capacity)."""
    codes: dict[str, int] = {}
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        i = 0
        while not stop.is_set():
            addresses = target()
            if not addresses:
                await asyncio.sleep(0.1)
                continue
            ip = addresses[i % len(addresses)]
            if ip not in channels:
                channels[ip] = grpc.aio.insecure_channel(f"{ip}:50051")
            stub = anomaly_pb2_grpc.AnomalyDetectionStub(channels[ip])  # type: ignore[no-untyped-call]
            request = anomaly_pb2.DetectAnomaliesRequest(
                image=images[i % len(images)], content_type="image/png"
            )
            try:
                await stub.DetectAnomalies(request, timeout=10)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            codes[code] = codes.get(code, 0) + 1
            i += 1
            await asyncio.sleep(0.1)
    finally:
        for channel in channels.values():
            await channel.close()
    return codes


@pytest_asyncio.fixture(loop_scope="session")
async def units(tmp_path: Path) -> AsyncIterator[Units]:
    runtime = Units(tmp_path, tmp_path / "units.json")
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_every_panel_query_returns_series_from_a_live_operator_and_unit(
    kube: KubeEmulator,
    operator_identity: OperatorIdentity,
    render: Render,
    kube_namespace: str,
    units: Units,
    trained_model_path: Path,
    png_image: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    prometheus_binary = require("prometheus")
    docs = render(
        {
            "watchNamespaces": [kube_namespace],
            "prometheus": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        }
    )
    service_monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    pod_monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    (operator_endpoint,) = service_monitor["spec"]["endpoints"]
    (unit_endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]

    kube.pod_started = units.start
    kube.pod_stopped = units.stop
    # The Lease as the chart has it: its name, in the release namespace.
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    chart_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    lease_args = [a for a in chart_args if a.startswith("--lease-")]
    metrics_port = free_port()
    operator = OperatorProcess(
        [
            sys.executable,
            "-m",
            "vigil_cli",
            "operator",
            f"--namespace={kube_namespace}",
            f"--metrics-port={metrics_port}",
            "--liveness-port=0",
            "--reconcile-interval=1",
            "--default-image=vigil/unit:test",
            *lease_args,
        ],
        kubeconfig=operator_identity.kubeconfig,
        log_path=tmp_path / "operator.log",
        env={"VIGIL_SCRAPE_INTERVAL": "1"},
    )
    prometheus = Prometheus(prometheus_binary, tmp_path, rule_files=[RULES])
    prometheus.add_job(
        "serviceMonitor/vigil-system/vigil/0",
        operator_endpoint,
        "vigil-system/vigil",
        static=[
            (
                f"127.0.0.1:{metrics_port}",
                {
                    "__meta_kubernetes_namespace": NAMESPACE,
                    "__meta_kubernetes_pod_name": "vigil-operator-test",
                },
            )
        ],
    )
    prometheus.add_job(
        "podMonitor/vigil-system/vigil-units/0",
        unit_endpoint,
        "vigil-system/vigil-units",
        file_sd=units.targets,
    )
    images = [png_image(1), png_image(2, defect="scratch"), b"not an image at all", png_image(3)]
    stop = asyncio.Event()
    async with operator, prometheus:
        kube.create_object(
            "models",
            {
                "apiVersion": "vigil.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": MODEL, "namespace": kube_namespace},
                "spec": {
                    "artifact": {"uri": f"file://{trained_model_path}"},
                    "minUnits": 1,
                    "maxUnits": 2,
                    "zones": ["zone-a", "zone-b"],
                    # Autoscaling on, but never triggered by this trickle.
                    "scaling": {"metric": "utilization", "target": 1.0},
                    "unit": {"gpus": 0},
                },
            },
            kube_namespace,
        )
        sender = asyncio.create_task(traffic(units.addresses, images, stop))
        try:
            queries = panel_queries(json.loads(DASHBOARD.read_text()))
            assert len(queries) >= 20
            failing: dict[str, str] = {}

            async def all_answer() -> bool:
                failing.clear()
                for title, expr in queries:
                    result = await asyncio.to_thread(
                        prometheus.query, substitute(expr, kube_namespace)
                    )
                    if not result:
                        failing[title] = substitute(expr, kube_namespace)
                return not failing

            deadline = asyncio.get_running_loop().time() + 150
            while not await all_answer():
                if asyncio.get_running_loop().time() > deadline or sender.done():
                    missing = "\n".join(f"  {t}: {e}" for t, e in failing.items())
                    pytest.fail(
                        f"dashboard queries without series:\n{missing}\n\n"
                        f"operator log:\n{operator.tail()}\n\nprometheus log:\n{prometheus.log}"
                    )
                await asyncio.sleep(1)

            # Template variables resolve to this Model.
            namespaces = prometheus.api(
                "label/namespace/values", **{"match[]": "vigil_model_desired_inference_units"}
            )
            assert kube_namespace in namespaces
            match = f'vigil_model_desired_inference_units{{namespace="{kube_namespace}"}}'
            models = prometheus.api("label/model/values", **{"match[]": match})
            assert models == [MODEL]
            # The numbers behind the panels are this scenario's.
            sel = f'namespace="{kube_namespace}", model="{MODEL}"'
            assert (
                prometheus.query(f"vigil_model_desired_inference_units{{{sel}}}")[0]["value"][1]
                == "1"
            )
            assert (
                prometheus.query(f"vigil_model_in_service_inference_units{{{sel}}}")[0]["value"][1]
                == "1"
            )
            assert (
                prometheus.query(f'vigil_model_phase{{{sel}, phase="Hosted"}}')[0]["value"][1]
                == "1"
            )
            for code in ("OK", "INVALID_ARGUMENT"):
                (sample,) = prometheus.query(
                    f'sum(vigil_inference_requests_total{{{sel}, code="{code}"}})'
                )
                assert float(sample["value"][1]) > 0, code
            up = prometheus.query('up{job=~"vigil-operator|vigil-unit"}')
            assert {s["metric"]["job"]: s["value"][1] for s in up} == {
                "vigil-operator": "1",
                "vigil-unit": "1",
            }
            (unit_up,) = [s for s in up if s["metric"]["job"] == "vigil-unit"]
            assert unit_up["metric"]["model"] == MODEL and unit_up["metric"]["zone"] in (
                "zone-a",
                "zone-b",
            )

            # Every alert rule evaluates on this data without error.
            async def rules_evaluated() -> bool:
                groups = (await asyncio.to_thread(prometheus.api, "rules"))["groups"]
                rules = [r for g in groups for r in g["rules"]]
                assert len(rules) == 9
                for rule in rules:
                    assert rule["health"] == "ok", rule
                return True

            await kube.wait_for(rules_evaluated, timeout=20)
        finally:
            stop.set()
            codes = await sender
    assert codes.get("OK", 0) > 0 and codes.get("INVALID_ARGUMENT", 0) > 0, codes
    assert "Traceback" not in operator.log, operator.tail()

    # The operator did its work as the chart's ServiceAccount (refusals fail the fixture).
    seen = {
        (
            call.group,
            call.resource + (f"/{call.subresource}" if call.subresource else ""),
            call.verb,
        )
        for call in kube.calls
        if call.user == operator_identity.user and call.code < 400
    }
    assert {
        ("apps", "deployments", "create"),
        ("vigil.dev", "models", "watch"),
        ("vigil.dev", "models/status", "patch"),
        ("", "events", "create"),
        ("coordination.k8s.io", "leases", "update"),  # the leader renewed its Lease
    } <= seen, sorted(seen)
