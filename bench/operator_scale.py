"""200 Models on the emulated API server: how fast the real operator hosts them.

Starts the API-server emulator (with its Deployment controller, scheduler and
kubelet) in this process, runs `vigil operator` as a subprocess against it,
creates N Models at once (2 CPU units each, 3 zones), and measures:
seconds until every Model is Hosted, reconciles per second during that ramp
and at steady state (from the operator's own
`vigil_reconcile_duration_seconds_count`), API requests per Model, and the
operator's peak RSS (VmHWM). The emulator shares the machine's cores with
the operator, so the figures are a lower bound for a real cluster.

Last line: summary models=N seconds_to_hosted=S reconciles_per_s=R peak_rss_mb=M
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kube_emulator, beside bench/

from kube_emulator import KubeEmulator, OperatorProcess
from vigil_operator.local.units import free_port

NAMESPACE = "bench"


def reconciles(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith("vigil_reconcile_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model(i: int) -> dict[str, object]:
    return {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": f"model-{i:04d}", "namespace": NAMESPACE},
        "spec": {"artifact": {"uri": "file:///models/m.vigil"}, "minUnits": 2, "unit": {"gpus": 0}},
    }


async def run(n: int, interval: float, steady_s: float, workdir: Path) -> dict[str, float]:
    async with KubeEmulator(pod_start_delay=0.5).serve() as kube:
        # Room for every unit (500m CPU, 1Gi each by default) even when the operator puts
        # both units of every Model in the same two zones: 16-CPU nodes hold 384 units in all,
        # 128 per zone, so 200 Models x 2 units could never all be Ready.
        kube.add_zones(
            ("zone-a", "zone-b", "zone-c"), nodes_per_zone=4, gpus=0, cpu="64", memory="256Gi"
        )
        kube.create_namespace(NAMESPACE)
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig", namespace=NAMESPACE)
        port = free_port()
        op = OperatorProcess(
            [
                sys.executable,
                "-m",
                "vigil_cli",
                "operator",
                "-n",
                NAMESPACE,
                "--metrics-port",
                str(port),
                "--liveness-port",
                "0",
                "--reconcile-interval",
                str(interval),
            ],
            kubeconfig=kubeconfig,
            log_path=workdir / "operator.log",
            stop_timeout=20,
        )
        async with op:
            await kube.wait_for(lambda: _up(port), timeout=30, interval=0.2)
            kube.reset_calls()
            start = time.perf_counter()
            for i in range(n):
                kube.create_object("models.vigil.dev", model(i))

            def all_hosted() -> int:
                phases = [
                    (m.get("status") or {}).get("phase")
                    for m in kube.list_objects("models.vigil.dev", NAMESPACE)
                ]
                done = sum(p == "Hosted" for p in phases)
                assert done == n, f"{done}/{n} Hosted"
                return done

            await kube.wait_for(all_hosted, timeout=600, interval=0.5)
            hosted_s = time.perf_counter() - start
            ramp = reconciles(port)
            calls = len(kube.calls)
            await asyncio.sleep(interval)  # let the last Pods' status settle
            kube.reset_calls()
            before = reconciles(port)
            await asyncio.sleep(steady_s)
            steady = (reconciles(port) - before) / steady_s
            steady_requests = len(kube.calls) / steady_s
            assert op.process is not None
            rss = peak_rss_mb(op.process.pid)
            pods = len(kube.ready_pods(NAMESPACE))
        if "Traceback" in op.log:
            print(op.tail(), file=sys.stderr)
    return {
        "seconds_to_hosted": hosted_s,
        "ramp_reconciles": ramp,
        "ramp_reconciles_per_s": ramp / hosted_s,
        "steady_reconciles_per_s": steady,
        "requests_per_model": calls / n,
        "steady_requests_per_s": steady_requests,
        "peak_rss_mb": rss,
        "ready_pods": pods,
    }


def _up(port: int) -> bool:
    try:
        reconciles(port)
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--interval", type=float, default=10.0, help="operator reconcile timer (s)")
    ap.add_argument("--steady", type=float, default=20.0, help="seconds of steady state")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args.models, args.interval, args.steady, Path(tmp)))
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}; "
        f"{args.models} Models x 2 units, 3 zones, timer {args.interval:g}s"
    )
    print(f"seconds until all Hosted   {r['seconds_to_hosted']:.1f}")
    print(
        f"reconciles during ramp     {r['ramp_reconciles']:.0f} "
        f"({r['ramp_reconciles_per_s']:.1f}/s)"
    )
    print(f"reconciles/s steady state  {r['steady_reconciles_per_s']:.1f}")
    print(f"API requests per Model     {r['requests_per_model']:.1f} (ramp)")
    print(f"API requests/s steady      {r['steady_requests_per_s']:.1f}")
    print(f"ready unit Pods            {r['ready_pods']}")
    print(f"operator peak RSS          {r['peak_rss_mb']:.0f} MB")
    print(
        f"summary models={args.models} seconds_to_hosted={r['seconds_to_hosted']:.1f} "
        f"reconciles_per_s={r['ramp_reconciles_per_s']:.1f} "
        f"peak_rss_mb={r['peak_rss_mb']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
