"""`vigil operator`: run the operator (in-cluster, or from KUBECONFIG).

The chart's VIGIL_* environment variables are read here, once, into
`OperatorSettings`; flags win over them. The settings then travel as a value:
to the handlers' registry (the timer), the controller and the metrics port."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vigil_cli.main import lazy
from vigil_operator.core.election import ElectionConfig, ElectionConfigError
from vigil_operator.settings import OperatorSettings, RunOptions

RUN = RunOptions()  # the defaults the flags show


def add_operator_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("operator", help="run the operator that hosts Models on Kubernetes")
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help=f"Prometheus port (default $VIGIL_METRICS_PORT or {OperatorSettings.metrics_port})",
    )
    p.add_argument(
        "--liveness-port",
        type=int,
        default=RUN.liveness_port,
        help="/healthz for the kubelet's liveness probe, on leader and standby (0: off)",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="a lone replica: no leader election (never run two replicas like this)",
    )
    p.add_argument(
        "--lease-name",
        default=RUN.lease_name,
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
        default=RUN.election.lease_duration_s,
        help="seconds a standby waits after the Lease's last change before taking over "
        "(default %(default)s)",
    )
    p.add_argument(
        "--renew-deadline",
        type=float,
        default=RUN.election.renew_deadline_s,
        help="seconds after its last renewal at which the leader stops writing "
        "(default %(default)s)",
    )
    p.add_argument(
        "--retry-period",
        type=float,
        default=RUN.election.retry_period_s,
        help="seconds between tries to acquire or renew the Lease (default %(default)s)",
    )
    p.add_argument("--default-image", help="unit image when a Model names none")
    p.add_argument("--reconcile-interval", type=float, help="seconds between reconciles")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=lazy("vigil_cli.operator", "operator_command"))


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> OperatorSettings:
    """The chart's environment, then the flags over it."""
    flags = {
        "metrics_port": args.metrics_port,
        "default_image": args.default_image,
        "reconcile_interval_s": args.reconcile_interval,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    return replace(OperatorSettings.from_env(env), **given)


def operator_command(args: argparse.Namespace) -> int:
    settings = settings_from(args, os.environ)
    try:
        election = ElectionConfig(args.lease_duration, args.renew_deadline, args.retry_period)
    except ElectionConfigError as exc:
        print(f"vigil operator: {exc}", file=sys.stderr)
        return 2
    import kopf
    from prometheus_client import start_http_server

    from vigil_operator.cluster import handlers
    from vigil_operator.cluster.fence import Fence
    from vigil_operator.cluster.runner import run
    from vigil_operator.controller import Controller
    from vigil_operator.metrics import OperatorMetrics

    kopf.configure(verbose=args.verbose, log_prefix=True)
    metrics = OperatorMetrics()
    server, _ = start_http_server(settings.metrics_port, registry=metrics.registry)
    kwargs: dict[str, Any] = {"clusterwide": not args.namespace, "namespaces": args.namespace}
    registry = handlers.registry(settings)

    async def run_kopf(fence: Fence, user_agent: str, stop: asyncio.Event | None) -> None:
        controller = Controller(settings, metrics)
        memo = kopf.Memo(controller=controller, fence=fence, user_agent=user_agent)
        # kopf's peering is never used: the Lease (or --standalone) decides who runs.
        await kopf.operator(registry=registry, standalone=True, memo=memo, stop_flag=stop, **kwargs)

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
