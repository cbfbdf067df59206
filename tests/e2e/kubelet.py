"""Simulated kubelets for a cluster without nodes of its own, as kwok does.

``python -m tests.e2e.kubelet --kubeconfig FILE --node NAME [--node ...]
[--zone Z] [--gpus N] [--pod-cidr 127.101.0.0/16] [--mode process|status]
[--workdir DIR]`` registers the Nodes and keeps them alive through the public
API only, as a kubelet does:

- each Node carries ``topology.kubernetes.io/zone`` and ``nvidia.com/gpu``
  capacity, renews its Lease in ``kube-node-lease`` every second and posts
  Ready heartbeats on its status (at start, then every 10 s);
- it watches the Pods bound to its Nodes; ``status`` mode marks each one
  Running and Ready with an address from the pod CIDR; ``process`` mode runs
  each container as a local process from the Pod's own command and args
  (image entrypoint ``vigil``), with the Pod's environment, on the Pod's own
  loopback address (``vigil serve`` gets ``--host``, standing in for the Pod's
  network namespace), init containers first, restarts with back-off, and the
  readiness probe (gRPC health, HTTP GET or TCP) run every 0.5 s; a Pod whose
  service account token is mounted gets a kubeconfig with a token from the
  TokenRequest API (``KUBECONFIG``), as the kubelet projects one;
- a Terminating Pod's containers get SIGTERM, SIGKILL after the grace period,
  and the Pod is then deleted with gracePeriodSeconds=0;
- containerID is ``vigil-e2e://<pid>``, so a test can kill a container;
- SIGUSR1 toggles the Nodes' Ready condition (NotReady with the Pods still
  running, as when the container runtime is down), SIGUSR2 makes every
  readiness probe of its Pods fail (or pass again), for the chaos tests.

Stopping this process (SIGTERM or SIGKILL) is a zone outage: its containers
die with it and the Nodes stop heartbeating. Started again, it takes its Nodes
back, confirms the deletions that happened meanwhile and restarts the Pods
still bound to them, as a rebooted node does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.e2e.api import Api, Obj, pod_path

ZONE_LABEL = "topology.kubernetes.io/zone"
GPU = "nvidia.com/gpu"
SIMULATED_LABEL = "vigil.dev/simulated-kubelet"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
LEASE_RENEW_S = 1.0
STATUS_EVERY_S = 10.0
PROBE_EVERY_S = 0.5
ENTRYPOINT = ["vigil"]  # both Vigil images' ENTRYPOINT
LOG = print


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: containers die with their kubelet, even on SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def node_body(
    name: str, zone: str | None, gpus: int, address: str, extra_labels: dict[str, str]
) -> Obj:
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        SIMULATED_LABEL: "true",
        **extra_labels,
    }
    if zone:
        labels[ZONE_LABEL] = zone
    if gpus:
        capacity[GPU] = str(gpus)
        labels["nvidia.com/gpu.present"] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.35.0-vigil-e2e",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "vigil-e2e://1",
                "osImage": "simulated",
                "kernelVersion": os.uname().release,
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
            "conditions": node_conditions(),
        },
    }


def node_conditions(ready: bool = True, since: str | None = None) -> list[Obj]:
    """The conditions a kubelet posts; `since` is when Ready last changed (a real
    kubelet moves lastTransitionTime only then, and the operator's zone recovery
    reads it)."""
    beat = now_iso()
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": f"KubeletHasSufficient{kind.removesuffix('Pressure')}",
            "message": f"kubelet has no {kind}",
            "lastHeartbeatTime": beat,
            "lastTransitionTime": since or beat,
        }
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status"
            if ready
            else "container runtime is down (simulated with SIGUSR1)",
            "lastHeartbeatTime": beat,
            "lastTransitionTime": since or beat,
        }
    )
    return conditions


@dataclass
class Container:
    """One running container: its process and what its status reports."""

    name: str
    image: str
    process: asyncio.subprocess.Process | None = None
    started_at: str = ""
    restarts: int = 0
    ready: bool = False
    last_exit: Obj | None = None
    failures: int = 0


@dataclass
class PodRun:
    """A pod this kubelet runs: address, containers, the task that keeps them up."""

    uid: str
    namespace: str
    name: str
    ip: str
    node: str
    containers: list[Container] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    waiting: str = ""  # why the main container is not running yet


class Kubelet:
    def __init__(self, api: Api, args: argparse.Namespace, server: str, ca: str | None) -> None:
        """``ca``: the cluster's CA bundle, base64 (kubeconfig's certificate-authority-data)."""
        self.api = api
        self.args = args
        self.server = server
        self.ca = ca
        self.nodes: list[str] = args.node
        self.pods: dict[str, PodRun] = {}
        self.network = ipaddress.ip_network(args.pod_cidr)
        self._hosts: Iterator[Any] = self.network.hosts()
        # The Nodes' own addresses come first in the range; Pods get the others.
        self.used_ips: set[str] = {str(self.network[i + 1]) for i in range(len(self.nodes))}
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._deleting: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Faults a test can switch with signals (see toggle_ready / toggle_probes).
        self.node_ready = True
        self.ready_since = now_iso()
        self.probes_fail = False

    # --- nodes ---

    async def register(self) -> None:
        for i, name in enumerate(self.nodes):
            labels = dict(item.split("=", 1) for item in self.args.label)
            body = node_body(name, self.args.zone, self.args.gpus, f"{self.network[i + 1]}", labels)
            try:
                await self.api.create("/api/v1/nodes", body)
            except ApiException as e:
                if e.status != 409:
                    raise
            # Status on create is kept for Nodes, but post it too: the node may exist.
            await self.post_status(name)
            await self.renew_lease(name)

    async def post_status(self, name: str) -> None:
        conditions = node_conditions(self.node_ready, self.ready_since)
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            body={"status": {"conditions": conditions}},
            content_type="application/strategic-merge-patch+json",
        )

    def toggle_ready(self) -> None:
        """SIGUSR1: the Nodes report NotReady (or Ready again) at once, as a kubelet
        whose container runtime went down (or came back) does; Pods keep running."""
        self.node_ready = not self.node_ready
        self.ready_since = now_iso()
        LOG(f"nodes {'Ready' if self.node_ready else 'NotReady'}", flush=True)
        for name in self.nodes:
            task = asyncio.create_task(self.post_status(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def toggle_probes(self) -> None:
        """SIGUSR2: every readiness probe of this kubelet's Pods fails (or passes again),
        as for a unit that hangs before it can serve."""
        self.probes_fail = not self.probes_fail
        LOG(f"readiness probes {'failing' if self.probes_fail else 'run'}", flush=True)

    async def renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS}
        try:
            await self.api.patch(f"{path}/{name}", {"spec": {**spec, "renewTime": now_micro()}})
        except ApiException as e:
            if e.status != 404:
                raise
            node = await self.api.get(f"/api/v1/nodes/{name}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": name}
            owner["uid"] = node["metadata"]["uid"]
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "ownerReferences": [owner]},
                "spec": {**spec, "renewTime": now_micro()},
            }
            await self.api.create(path, lease)

    async def heartbeats(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            post = time.monotonic() - last_status >= STATUS_EVERY_S
            for name in self.nodes:
                try:
                    await self.renew_lease(name)
                    if post:
                        await self.post_status(name)
                except (TimeoutError, ApiException, OSError) as e:
                    LOG(f"heartbeat of {name} failed: {e}", flush=True)
            if post:
                last_status = time.monotonic()

    # --- pods ---

    async def watch_node(self, node: str) -> None:
        """List then watch the node's pods; relist whenever the watch ends."""
        selector = f"spec.nodeName={node}"
        while True:
            try:
                listed = await self.api.get("/api/v1/pods", fieldSelector=selector)
                seen = set()
                for pod in listed["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.sync(pod)
                for uid, run in list(self.pods.items()):
                    if uid not in seen and run.node == node:
                        self.forget(uid)
                rv = listed["metadata"]["resourceVersion"]
                async for event in self.api.watch(
                    "/api/v1/pods", fieldSelector=selector, resourceVersion=rv, timeoutSeconds=300
                ):
                    pod = event.get("object") or {}
                    if event.get("type") == "DELETED":
                        self.forget(pod["metadata"]["uid"])
                    elif event.get("type") in ("ADDED", "MODIFIED"):
                        self.sync(pod)
                    elif event.get("type") == "ERROR":
                        break
            except (TimeoutError, ApiException, OSError) as e:
                LOG(f"watch of pods on {node}: {e}", flush=True)
                await asyncio.sleep(1)

    def sync(self, pod: Obj) -> None:
        md = pod["metadata"]
        uid = md["uid"]
        run = self.pods.get(uid)
        if md.get("deletionTimestamp"):
            if uid not in self._deleting:
                self._deleting.add(uid)
                task = asyncio.create_task(self.terminate(pod))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if run is None and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            ip = self._reuse_or_allocate((pod.get("status") or {}).get("podIP"))
            run = PodRun(uid, md["namespace"], md["name"], ip, pod["spec"]["nodeName"])
            self.pods[uid] = run
            run.task = asyncio.create_task(self.run_pod(pod, run))

    def _reuse_or_allocate(self, previous: str | None) -> str:
        mine = previous and ipaddress.ip_address(previous) in self.network
        if previous and mine and previous not in self.used_ips:
            self.used_ips.add(previous)
            return previous
        for host in self._hosts:
            text = str(host)
            if text not in self.used_ips and int(host) & 0xFF not in (0, 255):
                self.used_ips.add(text)
                return text
        raise RuntimeError(f"pod CIDR {self.network} exhausted")

    def forget(self, uid: str) -> None:
        """The pod object is gone: kill what is left of it."""
        run = self.pods.pop(uid, None)
        self._deleting.discard(uid)
        if run is None:
            return
        run.stopping = True
        if run.task is not None:
            run.task.cancel()
        for c in run.containers:
            if c.process is not None and c.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    c.process.kill()
        self.used_ips.discard(run.ip)

    async def terminate(self, pod: Obj) -> None:
        """SIGTERM, wait out the grace period, SIGKILL; then confirm with a grace-0 delete."""
        md = pod["metadata"]
        run = self.pods.get(md["uid"])
        grace = float(md.get("deletionGracePeriodSeconds") or 0)
        if run is not None:
            run.stopping = True
            if run.task is not None:
                run.task.cancel()
            procs = [c.process for c in run.containers if c.process is not None]
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(p.wait() for p in procs)), timeout=max(grace, 0.1)
                )
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        try:
            await self.api.delete(
                pod_path(md["namespace"], md["name"]),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}},
            )
        except ApiException as e:
            if e.status not in (404, 409):
                LOG(f"confirming the deletion of {md['name']}: {e.status} {e.body}", flush=True)
                self._deleting.discard(md["uid"])
                return
        self.forget(md["uid"])

    async def run_pod(self, pod: Obj, run: PodRun) -> None:
        try:
            if self.args.mode == "status":
                run.containers = [
                    Container(c["name"], c.get("image", ""), started_at=now_iso(), ready=True)
                    for c in pod["spec"]["containers"]
                ]
                await self.post_pod_status(pod, run)
                return
            await self.run_processes(pod, run)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # report it on the pod, as a runtime error would be
            LOG(f"pod {run.namespace}/{run.name}: {e!r}", flush=True)
            run.waiting = f"RunContainerError: {e}"
            with contextlib.suppress(ApiException, OSError):
                await self.post_pod_status(pod, run)

    # --- process mode ---

    async def run_processes(self, pod: Obj, run: PodRun) -> None:
        spec = pod["spec"]
        claims = [v for v in spec.get("volumes") or [] if "persistentVolumeClaim" in v]
        if claims:
            run.waiting = "ContainerCreating: persistentVolumeClaim volumes are not simulated"
            await self.post_pod_status(pod, run)
            return
        env_extra = await self.service_account_env(pod, run)
        backoff = 1.0
        for init in spec.get("initContainers") or []:
            while True:
                run.waiting = f"PodInitializing: init container {init['name']}"
                await self.post_pod_status(pod, run)
                code = await self.run_once(pod, run, init, env_extra)
                if code == 0:
                    break
                run.waiting = f"Init:Error: {init['name']} exited with {code}"
                await self.post_pod_status(pod, run)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
        run.waiting = ""
        main = spec["containers"][0]  # units and the operator have one container
        container = Container(main["name"], main.get("image", ""))
        run.containers = [container]
        backoff = 1.0
        while not run.stopping:
            container.process = await self.start(pod, run, main, env_extra)
            container.started_at, container.ready, container.failures = now_iso(), False, 0
            await self.post_pod_status(pod, run)
            began = time.monotonic()
            probe = asyncio.create_task(self.probe_loop(pod, run, container, main))
            code = await container.process.wait()
            probe.cancel()
            if run.stopping:
                return
            container.ready = False
            container.restarts += 1
            container.last_exit = {
                "terminated": {
                    "exitCode": code if code >= 0 else 128 - code,
                    "reason": "Error" if code else "Completed",
                    "startedAt": container.started_at,
                    "finishedAt": now_iso(),
                    "containerID": f"vigil-e2e://{container.process.pid}",
                }
            }
            container.process = None
            run.waiting = "CrashLoopBackOff"
            await self.post_pod_status(pod, run)
            backoff = 1.0 if time.monotonic() - began > 30 else min(backoff * 2, 10)
            await asyncio.sleep(backoff)
            run.waiting = ""

    def command(self, container: Obj, ip: str) -> list[str]:
        argv = list(container.get("command") or ENTRYPOINT) + list(container.get("args") or [])
        if argv[0] == "vigil":
            argv = [sys.executable, "-m", "vigil_cli", *argv[1:]]
            if "serve" in argv[3:4]:
                argv += ["--host", ip]  # the pod's own address, as in its network namespace
        elif argv[0] in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]
        return argv

    async def start(
        self, pod: Obj, run: PodRun, container: Obj, env_extra: dict[str, str]
    ) -> asyncio.subprocess.Process:
        env = {**os.environ, **env_extra}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
        env.update({"POD_IP": run.ip, "HOSTNAME": run.name})
        cwd = self.workdir / run.uid
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{run.namespace}_{run.name}_{container['name']}.log"
        with log.open("ab") as out:
            return await asyncio.create_subprocess_exec(
                *self.command(container, run.ip),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )

    async def run_once(
        self, pod: Obj, run: PodRun, container: Obj, env_extra: dict[str, str]
    ) -> int:
        proc = await self.start(pod, run, container, env_extra)
        try:
            return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()

    async def service_account_env(self, pod: Obj, run: PodRun) -> dict[str, str]:
        """A kubeconfig with a TokenRequest token of the pod's service account."""
        spec = pod["spec"]
        if spec.get("automountServiceAccountToken") is False:
            return {}
        account = spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": run.name},
            },
        }
        request["spec"]["boundObjectRef"]["uid"] = run.uid
        path = f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{account}/token"
        try:
            token = (await self.api.create(path, request))["status"]["token"]
        except ApiException as e:
            if e.status not in (404, 405):
                raise
            # A server without the TokenRequest API (the emulator before it enforces
            # authentication): the pod gets this kubelet's own credentials.
            LOG(f"no TokenRequest API ({e.status}): {run.name} uses the kubelet's kubeconfig")
            return {"KUBECONFIG": self.args.kubeconfig}
        cluster: Obj = {"server": self.server}
        if self.ca:
            cluster["certificate-authority-data"] = self.ca
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [
                {
                    "name": f"system:serviceaccount:{run.namespace}:{account}",
                    "user": {"token": token},
                }
            ],
            "contexts": [
                {
                    "name": "pod",
                    "context": {
                        "cluster": "cluster",
                        "user": f"system:serviceaccount:{run.namespace}:{account}",
                        "namespace": run.namespace,
                    },
                }
            ],
            "current-context": "pod",
        }
        path_out = self.workdir / run.uid / "kubeconfig"
        path_out.parent.mkdir(parents=True, exist_ok=True)
        path_out.write_text(yaml.safe_dump(kubeconfig), encoding="utf-8")
        return {"KUBECONFIG": str(path_out)}

    async def probe_loop(self, pod: Obj, run: PodRun, container: Container, spec: Obj) -> None:
        probe = spec.get("readinessProbe")
        if not probe:
            container.ready = True
            await self.post_pod_status(pod, run)
            return
        threshold = int(probe.get("failureThreshold", 3))
        while True:
            ok = not self.probes_fail and await self.probe_once(probe, run.ip)
            was = container.ready
            if ok:
                container.failures = 0
                container.ready = True
            else:
                container.failures += 1
                if container.failures >= threshold or not was:
                    container.ready = False
            if container.ready != was:
                await self.post_pod_status(pod, run)
            await asyncio.sleep(PROBE_EVERY_S)

    async def probe_once(self, probe: Obj, ip: str) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "grpc" in probe:
                target = f"{ip}:{probe['grpc']['port']}"
                async with grpc.aio.insecure_channel(target) as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    request = health_pb2.HealthCheckRequest(
                        service=probe["grpc"].get("service", "")
                    )
                    reply = await stub.Check(request, timeout=timeout)
                    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            if "httpGet" in probe:
                get = probe["httpGet"]
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, int(get["port"])), timeout
                )
                writer.write(f"GET {get.get('path', '/')} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
                line = await asyncio.wait_for(reader.readline(), timeout)
                writer.close()
                return line.split()[1:2] in ([b"200"], [b"204"])
            if "tcpSocket" in probe:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, int(probe["tcpSocket"]["port"])), timeout
                )
                writer.close()
                return True
        except (grpc.RpcError, OSError, TimeoutError, ValueError, IndexError):
            return False
        return True

    # --- pod status ---

    async def post_pod_status(self, pod: Obj, run: PodRun) -> None:
        if run.stopping:
            return
        ready = bool(run.containers) and all(c.ready for c in run.containers) and not run.waiting
        statuses = []
        for c in run.containers:
            state: Obj
            if c.process is not None:
                state = {"running": {"startedAt": c.started_at}}
            elif run.waiting:
                reason, _, message = run.waiting.partition(": ")
                state = {"waiting": {"reason": reason, "message": message}}
            else:
                state = {"running": {"startedAt": c.started_at}}
            entry: Obj = {
                "name": c.name,
                "image": c.image,
                "imageID": c.image,
                "ready": c.ready,
                "started": c.process is not None or self.args.mode == "status",
                "restartCount": c.restarts,
                "state": state,
                "lastState": c.last_exit or {},
            }
            if c.process is not None:
                entry["containerID"] = f"vigil-e2e://{c.process.pid}"
            statuses.append(entry)
        if not statuses:
            reason, _, message = run.waiting.partition(": ")
            statuses = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {
                        "waiting": {"reason": reason or "ContainerCreating", "message": message}
                    },
                    "lastState": {},
                }
                for c in pod["spec"]["containers"]
            ]
        flag = "True" if ready else "False"
        now = now_iso()
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ]
        node_ip = str(self.network[self.nodes.index(run.node) + 1])
        status = {
            "phase": "Running" if run.containers else "Pending",
            "conditions": conditions,
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": pod.get("status", {}).get("startTime") or now,
            "containerStatuses": statuses,
        }
        try:
            await self.api.request(
                "PATCH",
                pod_path(run.namespace, run.name, "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise

    async def shutdown(self) -> None:
        for uid in list(self.pods):
            self.forget(uid)


async def main_async(args: argparse.Namespace) -> None:
    loader = await config.load_kube_config(config_file=args.kubeconfig)
    del loader
    configuration = client.Configuration.get_default_copy()
    api_client = client.ApiClient(configuration)
    ca = None
    if configuration.ssl_ca_cert:  # a temporary file the client library removes at exit
        ca = base64.b64encode(Path(configuration.ssl_ca_cert).read_bytes()).decode()  # noqa: ASYNC240 - once, at start
    kubelet = Kubelet(Api(api_client), args, configuration.host, ca)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, kubelet.toggle_ready)
    loop.add_signal_handler(signal.SIGUSR2, kubelet.toggle_probes)
    try:
        await kubelet.register()
        tasks = [asyncio.create_task(kubelet.heartbeats())]
        tasks += [asyncio.create_task(kubelet.watch_node(n)) for n in kubelet.nodes]
        LOG(f"kubelet for {', '.join(kubelet.nodes)} running", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await kubelet.shutdown()
        await api_client.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.kubelet")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node", action="append", required=True, help="a Node to run (repeatable)")
    p.add_argument("--zone", help="topology.kubernetes.io/zone of the Nodes (none: no zone)")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE on the Nodes")
    p.add_argument("--gpus", type=int, default=4, help="nvidia.com/gpu per Node")
    p.add_argument("--pod-cidr", default="127.101.0.0/16", help="loopback range for Pod IPs")
    p.add_argument("--mode", choices=("process", "status"), default="process")
    p.add_argument("--workdir", default="kubelet", help="container logs and pod files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
