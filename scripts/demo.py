"""`make demo`: train a model on generated fabric images, serve it as one
inference unit, send it normal and defective images with `vigil detect`,
and print what came back. Everything runs locally; outputs land in demo-out/.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from vigil_inference import synthetic

OUT = Path("demo-out")
VIGIL = [sys.executable, "-m", "vigil_inference.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the unit exited with {proc.returncode}")
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit("the unit did not become SERVING in time")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    model = OUT / "fabric.vigil"
    print("1. Generating 40 normal and 12 defective fabric images ...", flush=True)
    normal_dir, anomalous_dir = synthetic.write_dataset(OUT / "train", 40, 12, seed=0)

    print(f"2. Training {model} (vigil train) ...", flush=True)
    subprocess.run(
        [
            *VIGIL,
            "train",
            "--normal",
            str(normal_dir),
            "--anomalous",
            str(anomalous_dir),
            "--out",
            str(model),
            "--max-bank",
            "2048",
        ],
        check=True,
    )

    grpc_port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    print(f"\n3. Starting an inference unit on {target} (vigil serve) ...", flush=True)
    unit = subprocess.Popen(
        [
            *VIGIL,
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ]
    )
    try:
        wait_serving(target, unit)
        images = OUT / "images"
        images.mkdir(exist_ok=True)
        paths, truth = [], {}
        for i in range(4):
            p = images / f"normal-{i}.png"
            Image.fromarray(synthetic.normal(90_000 + i).image).save(p)
            paths.append(p)
            truth[str(p)] = "normal"
        for i, kind in enumerate((*synthetic.DEFECTS, "scratch")):
            p = images / f"{kind}-{i}.jpg"
            Image.fromarray(synthetic.defective(91_000 + i, defect=kind).image).save(p, quality=92)
            paths.append(p)
            truth[str(p)] = kind

        print("4. Sending 8 images (vigil detect --mask-dir demo-out/masks) ...\n", flush=True)
        r = subprocess.run(
            [
                *VIGIL,
                "detect",
                "--target",
                target,
                "--mask-dir",
                str(OUT / "masks"),
                *map(str, paths),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"{'image':28} {'truth':8} {'anomalous':>9} {'score':>7} {'conf':>5} {'area %':>7}")
        correct = 0
        for line in r.stdout.splitlines():
            res = json.loads(line)
            anomalies = res["anomalies"]  # one entry when any pixel is anomalous
            area = anomalies[0]["pixel_anomaly"]["total_percentage_area"] * 100 if anomalies else 0
            ok = res["is_anomalous"] == (truth[res["image"]] != "normal")
            correct += ok
            print(
                f"{res['image']:28} {truth[res['image']]:8} {res['is_anomalous']!s:>9} "
                f"{res['anomaly_score']:7.3f} {res['confidence']:5.2f} {area:7.2f}"
            )
        print(f"\n{correct}/8 correct; masks in {OUT / 'masks'}/")

        print(f"\n5. The unit's metrics (curl :{metrics_port}/metrics):")
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        for line in text.splitlines():
            if line.startswith(
                (
                    "vigil_inference_requests_total",
                    "vigil_inference_images_total",
                    "vigil_inference_busy_seconds_total",
                )
            ):
                print("  " + line)
    finally:
        unit.send_signal(signal.SIGTERM)
        code = unit.wait(timeout=30)
        print(f"\n6. Unit stopped on SIGTERM (exit {code}).")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
