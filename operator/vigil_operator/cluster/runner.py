"""`vigil operator`'s process: /healthz, then kopf, alone or as the elected leader.

A standby runs no kopf at all (no watches, no handlers, nothing to pause): it
serves /healthz and metrics, with `vigil_operator_leader` 0, and tries for
the Lease every retry period. Once it leads, kopf starts with every
session fenced (`fence.Fence`). When the tenure ends without a graceful stop,
the process exits at once, as client-go's OnStoppedLeading does in
kube-controller-manager: a standby will have taken over within the lease
duration, and Kubernetes restarts this container as a fresh standby. Exiting
is simpler and safer than unwinding kopf's tasks and indexes in place.

kopf's own peering (`kopf run` without `--standalone`) is not used: it pauses
lower-priority peers once it notices them, with no deadline after which a
paused leader is known to have stopped, so it cannot promise that two
replicas never reconcile at once. kopf always runs `standalone` here; our
`--standalone` means "a lone replica: no election".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from vigil_operator.cluster.election import Elector, LeaseStore
from vigil_operator.cluster.fence import Fence
from vigil_operator.cluster.kube import new_api_client
from vigil_operator.metrics import OperatorMetrics
from vigil_operator.settings import RunOptions

log = logging.getLogger("vigil.operator")
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EXIT_LOST = 1  # leadership lost: let Kubernetes restart us as a standby


def default_identity() -> str:
    """Pod name (the hostname in a Pod) plus a random suffix, as kube-controller-manager
    does: a restarted container is a new candidate, never mistaken for its past self."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_lease_namespace() -> str:
    """$POD_NAMESPACE, else the service account's namespace, else the kubeconfig's."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SA_NAMESPACE.is_file():
        return SA_NAMESPACE.read_text().strip()
    from kubernetes_asyncio.config import kube_config

    with contextlib.suppress(Exception):
        _, active = kube_config.list_kube_config_contexts()
        namespace = (active or {}).get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    return "default"


def user_agent(identity: str) -> str:
    """Audit logs (and the emulator's call log) show which replica wrote what."""
    return f"vigil-operator/0.1.0 ({identity})"


def stop_leading(reason: str) -> NoReturn:
    """Exit now: no cleanup code runs, so nothing can write after this line."""
    log.error("leadership lost: %s; exiting so that a fresh process stands by", reason)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST)


async def serve_health(port: int, metrics: OperatorMetrics) -> web.AppRunner | None:
    """/healthz answers while the event loop runs, on leader and standby alike."""
    if not port:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": metrics.leading})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # the kubelet probes it
    return runner


KopfRunner = Callable[[Fence, str, asyncio.Event | None], Coroutine[Any, Any, None]]


async def run(options: RunOptions, metrics: OperatorMetrics, kopf_runner: KopfRunner) -> int:
    """`kopf_runner(fence, user_agent, stop_flag)` runs kopf until stop_flag is set."""
    identity = options.identity or default_identity()
    health = await serve_health(options.liveness_port, metrics)
    try:
        if options.standalone:
            metrics.set_leader(True)
            await kopf_runner(Fence.open_forever(), user_agent(identity), None)
            return 0
        return await _run_elected(options, identity, metrics, kopf_runner)
    finally:
        if health is not None:
            await health.cleanup()


async def _run_elected(
    options: RunOptions, identity: str, metrics: OperatorMetrics, kopf_runner: KopfRunner
) -> int:
    fence = Fence(on_expired=lambda: stop_leading("a write found the renew deadline passed"))

    def thawed(*_: Any) -> None:
        """SIGCONT: a thaw after SIGSTOP. Stop before anything else gets to run
        (Python runs the handler at the main thread's next bytecode)."""
        if fence.expired:
            stop_leading("frozen past the renew deadline")

    signal.signal(signal.SIGCONT, thawed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    api = await new_api_client(user_agent=user_agent(identity))  # unfenced: the Lease only
    namespace = options.lease_namespace or default_lease_namespace()
    elector = Elector(
        LeaseStore(api, namespace, options.lease_name),
        identity,
        options.election,
        fence,
        on_leading=metrics.set_leader,
    )
    metrics.set_leader(False)
    try:
        if not await elector.acquire(stop):
            return 0
        kopf_stop = asyncio.Event()
        tasks: dict[str, asyncio.Task[Any]] = {
            "kopf": asyncio.create_task(kopf_runner(fence, user_agent(identity), kopf_stop)),
            "keep": asyncio.create_task(elector.keep()),
            "stop": asyncio.create_task(stop.wait()),
        }
        done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        if tasks["keep"] in done:
            failed = tasks["keep"].exception()
            stop_leading(repr(failed) if failed else tasks["keep"].result())
        # A graceful stop: kopf caught SIGTERM itself, or ours did; or kopf ended on its own.
        kopf_stop.set()
        code = 0
        try:
            await tasks["kopf"]
        except Exception:
            log.exception("the operator failed")
            code = 1
        tasks["keep"].cancel()
        tasks["stop"].cancel()
        await elector.release()  # only now: nothing of ours can write any more
        return code
    finally:
        await api.close()
