"""`vigil operator`: run the operator (in-cluster, or from KUBECONFIG); and `vigil local`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from vigil_operator.core.election import ElectionConfig, ElectionConfigError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("operator", help="run the operator that hosts Models on Kubernetes")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all",
    )
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 8080)")
    p.add_argument(
        "--liveness-port",
        type=int,
        default=8081,
        help="/healthz for the kubelet's liveness probe, on leader and standby (0: off)",
    )
    election = ElectionConfig()
    p.add_argument(
        "--standalone",
        action="store_true",
        help="a lone replica: no leader election (never run two replicas like this)",
    )
    p.add_argument(
        "--lease-name",
        default="vigil-operator",
        help="the leader Lease's name (default %(default)s)",
    )
    p.add_argument(
        "--lease-namespace",
        help="the Lease's namespace (default: $POD_NAMESPACE, the service account's, "
        "or the kubeconfig's)",
    )
    p.add_argument("--identity", help="this replica's holderIdentity (default: HOSTNAME_random)")
    p.add_argument(
        "--lease-duration",
        type=float,
        default=election.lease_duration_s,
        help="seconds a standby waits after the Lease's last change before taking over "
        "(default %(default)s)",
    )
    p.add_argument(
        "--renew-deadline",
        type=float,
        default=election.renew_deadline_s,
        help="seconds after its last renewal at which the leader stops writing "
        "(default %(default)s)",
    )
    p.add_argument(
        "--retry-period",
        type=float,
        default=election.retry_period_s,
        help="seconds between tries to acquire or renew the Lease (default %(default)s)",
    )
    p.add_argument("--default-image", help="unit image when a Model names none")
    p.add_argument("--reconcile-interval", type=float, help="seconds between reconciles")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=operator_command)
    from vigil_operator.local.cli import add_local_commands

    add_local_commands(sub)


def operator_command(args: argparse.Namespace) -> int:
    # Flags win over the environment; handlers read it at import time.
    for flag, env in (
        ("metrics_port", "VIGIL_METRICS_PORT"),
        ("default_image", "VIGIL_UNIT_IMAGE"),
        ("reconcile_interval", "VIGIL_RECONCILE_INTERVAL"),
    ):
        if getattr(args, flag) is not None:
            os.environ[env] = str(getattr(args, flag))
    try:
        election = ElectionConfig(args.lease_duration, args.renew_deadline, args.retry_period)
    except ElectionConfigError as exc:
        print(f"vigil operator: {exc}", file=sys.stderr)
        return 2
    import kopf
    from prometheus_client import start_http_server

    from vigil_operator import handlers
    from vigil_operator.fence import Fence
    from vigil_operator.metrics import OperatorMetrics
    from vigil_operator.runner import RunOptions, run

    kopf.configure(verbose=args.verbose, log_prefix=True)
    metrics = OperatorMetrics()
    server, _ = start_http_server(handlers.CONFIG.metrics_port, registry=metrics.registry)
    kwargs: dict[str, Any] = {"clusterwide": not args.namespace, "namespaces": args.namespace}

    async def run_kopf(fence: Fence, user_agent: str, stop: asyncio.Event | None) -> None:
        memo = kopf.Memo(
            metrics=metrics, config=handlers.CONFIG, fence=fence, user_agent=user_agent
        )
        # kopf's peering is never used: the Lease (or --standalone) decides who runs.
        await kopf.operator(standalone=True, memo=memo, stop_flag=stop, **kwargs)

    options = RunOptions(
        liveness_port=args.liveness_port,
        standalone=args.standalone,
        election=election,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace or "",
        identity=args.identity or "",
    )
    try:
        return asyncio.run(run(options, metrics, run_kopf))
    finally:
        server.shutdown()
