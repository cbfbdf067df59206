"""The emulator as its own process, a stand-in for a bare control plane.

``python -m kube_emulator --kubeconfig FILE`` serves
the API over HTTPS on loopback (a throwaway CA: kubectl sends no bearer
token over plain HTTP) and writes an admin kubeconfig for it once it
answers (written atomically, so a client polling for the file never reads
half of it). Like a fresh cluster it has no Nodes, no kubelet and no Model
CRD: the end-to-end suite (``tests/e2e``) brings simulated kubelets and
installs the CRD with the chart, through the public API only. It runs until
SIGTERM or SIGINT.

Options mirror the real components' flags: ``--node-monitor-grace-period``
(kube-controller-manager's, 40-50 s on a real cluster; short here so a zone
outage shows in seconds) and ``--eviction-seconds`` (the default
``tolerationSeconds`` of the unreachable taint, 300 s on a real cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import trustme
import yaml

from .server import KubeEmulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kube_emulator")
    p.add_argument("--kubeconfig", type=Path, required=True, help="admin kubeconfig to write")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument(
        "--node-monitor-grace-period",
        type=float,
        default=4.0,
        help="seconds without a kubelet heartbeat before a Node turns Ready=Unknown",
    )
    p.add_argument(
        "--eviction-seconds",
        type=int,
        default=300,
        help="how long Pods stay on an unreachable Node before eviction",
    )
    return p.parse_args(argv)


def emulator_options(args: argparse.Namespace) -> dict[str, Any]:
    """A bare control plane: no built-in kubelet, no preinstalled Model CRD."""
    return {
        "install_model_crd": False,
        "eviction_delay": args.eviction_seconds,
        "pod_start_delay": 0.0,
        "run_kubelet": False,
        "node_monitor_grace_period": args.node_monitor_grace_period,
    }


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def tls(host: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context from a throwaway CA (kubectl sends no token over plain HTTP),
    and the CA's PEM for the kubeconfig."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host, "localhost").configure_cert(context)
    return context, ca.cert_pem.bytes()


def write_kubeconfig(kube: KubeEmulator, path: Path, ca_pem: bytes) -> None:
    """The emulator's admin kubeconfig, trusting its CA."""
    kube.write_kubeconfig(path, namespace="default")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for cluster in config["clusters"]:
        cluster["cluster"]["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emulator = KubeEmulator(**emulator_options(args))
    context, ca_pem = tls(args.host)
    async with emulator.serve(host=args.host, port=args.port or None, ssl=context) as kube:
        _write_atomically(args.kubeconfig, lambda path: write_kubeconfig(kube, path, ca_pem))
        print(f"serving {kube.server_url}; kubeconfig {args.kubeconfig}", flush=True)
        await stop.wait()
    if emulator.internal_errors:
        for error in emulator.internal_errors:
            print(f"internal error: {error!r}", flush=True)
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
