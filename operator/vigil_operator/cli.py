"""`vigil operator`: run the operator (in-cluster, or from KUBECONFIG); and `vigil local`."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any


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
        help="/healthz for the kubelet's liveness probe (0: off)",
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
    import kopf
    from prometheus_client import start_http_server

    from vigil_operator import handlers
    from vigil_operator.metrics import OperatorMetrics

    kopf.configure(verbose=args.verbose, log_prefix=True)
    metrics = OperatorMetrics()
    server, _ = start_http_server(handlers.CONFIG.metrics_port, registry=metrics.registry)
    try:
        kwargs: dict[str, Any] = {"clusterwide": not args.namespace, "namespaces": args.namespace}
        if args.liveness_port:
            kwargs["liveness_endpoint"] = f"http://0.0.0.0:{args.liveness_port}/healthz"
        asyncio.run(
            kopf.operator(
                standalone=True, memo=kopf.Memo(metrics=metrics, config=handlers.CONFIG), **kwargs
            )
        )
    finally:
        server.shutdown()
    return 0
