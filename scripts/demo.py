"""`make demo`: the whole system on one machine, no cluster.

Trains a model on generated fabric images, starts `vigil local up` (three
simulated zones), applies a Model (1 to 4 units, scaled on utilization),
sends it real images through the client endpoint while the load goes up and
down, takes a zone down and back up, and prints what the autoscaler and the
zones did every few seconds. Writes a timeline (CSV) and a plot (PNG) of
desired and in-service units against the load into demo-out/.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from PIL import Image, ImageDraw, ImageFont

from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil_inference import synthetic
from vigil_operator.local.api import ApiClient
from vigil_operator.local.units import free_port

OUT = Path("demo-out")
VIGIL = [sys.executable, "-m", "vigil_cli"]
ZONES = ("zone-a", "zone-b", "zone-c")
# Short windows so the demo takes minutes: the autoscaler averages over 10 s,
# reacts to saturation over 3 s, and scales down after 20 s of low load.
WINDOWS = {"VIGIL_SCRAPE_INTERVAL": "1", "VIGIL_STABLE_WINDOW": "10", "VIGIL_PANIC_WINDOW": "3"}
MODEL_YAML = """\
# Applied by `make demo` with: vigil local apply -f demo-out/model.yaml
apiVersion: vigil.dev/v1alpha1
kind: Model
metadata:
  name: fabric
spec:
  artifact:
    uri: fabric.vigil          # next to this file
  minUnits: 1
  maxUnits: 4
  zones: [zone-a, zone-b, zone-c]
  scaling:
    metric: utilization        # busy fraction of a unit
    target: 0.5
    scaleDownStabilizationSeconds: 20
  unit:
    gpus: 0
"""


def say(text: str) -> None:
    print(text, flush=True)


def vigil(*args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    if show:
        say(f"$ vigil {' '.join(args)}")
    run = subprocess.run([*VIGIL, *args], capture_output=True, text=True, timeout=120)
    if show:
        for line in (run.stdout + run.stderr).splitlines():
            say(f"  {line}")
    if run.returncode != 0:
        raise SystemExit(f"vigil {args[0]} failed ({run.returncode})")
    return run


# -- load --------------------------------------------------------------------------


class Load:
    """Clients sending real images through the client endpoint, as `vigil detect`
    does; `clients` closed-loop senders, each pausing `pause` s between calls."""

    def __init__(self, target: str, images: list[bytes]) -> None:
        self.target, self.images = target, images
        self.done = 0
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None

    async def set(self, clients: int, pause: float) -> None:
        await self.stop()
        self._channel = grpc.aio.insecure_channel(self.target)
        stub = anomaly_pb2_grpc.AnomalyDetectionStub(self._channel)  # type: ignore[no-untyped-call]

        async def client(i: int) -> None:
            n = i
            while True:
                image = self.images[n % len(self.images)]
                n += clients
                try:
                    await stub.DetectAnomalies(
                        anomaly_pb2.DetectAnomaliesRequest(image=image), timeout=30
                    )
                    self.done += 1
                except grpc.aio.AioRpcError as exc:
                    self.errors.append(f"{exc.code().name}: {exc.details()}")
                await asyncio.sleep(pause)

        self._tasks = [asyncio.create_task(client(i)) for i in range(clients)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


# -- timeline ------------------------------------------------------------------------


@dataclass
class Row:
    t: float
    phase: str
    load: float
    desired: int
    in_service: int
    zones: dict[str, int]
    errors: int


@dataclass
class Timeline:
    api: ApiClient
    load: Load
    start: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)
    phase: str = "light"
    marks: list[tuple[float, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    _last: tuple[float, int] | None = None

    def header(self) -> None:
        zones = "".join(f"{z:>8}" for z in ZONES)
        head = f"{'time':>6}  {'phase':<10}{'load/s':>8}{'desired':>9}{'in-svc':>8}"
        say(f"\n{head}{zones}{'errors':>8}")

    def mark(self, text: str) -> None:
        self.marks.append((time.monotonic() - self.start, text))
        say(f"{time.monotonic() - self.start:5.0f}s  >> {text}")

    async def sample(self) -> None:
        now = time.monotonic()
        obj = await asyncio.to_thread(self.api.model, "default", "fabric")
        self.status = obj.get("status") or {}
        t0, n0 = self._last or (now, self.load.done)
        rate = (self.load.done - n0) / (now - t0) if now > t0 else 0.0
        self._last = (now, self.load.done)
        zones = {z["name"]: int(z["inServiceUnits"]) for z in self.status.get("zones") or []}
        self.rows.append(
            Row(
                now - self.start,
                self.phase,
                rate,
                int(self.status.get("desiredUnits") or 0),
                int(self.status.get("inServiceUnits") or 0),
                zones,
                len(self.load.errors),
            )
        )

    def print_row(self) -> None:
        r = self.rows[-1]
        zones = "".join(f"{r.zones.get(z, 0):>8}" for z in ZONES)
        say(
            f"{r.t:5.0f}s  {r.phase:<10}{r.load:>8.1f}{r.desired:>9}{r.in_service:>8}"
            f"{zones}{r.errors:>8}"
        )

    async def run_until(
        self, done: Callable[[dict[str, Any]], bool], at_most: float, at_least: float = 0.0
    ) -> bool:
        """Sample every second (a row every 3 s) until `done(status)` or `at_most` s."""
        began = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            await self.sample()
            if len(self.rows) % 3 == 0:
                self.print_row()
            waited = time.monotonic() - began
            if waited >= at_least and done(self.status):
                return True
            if waited >= at_most:
                return False


def units_match(
    n: int | None = None, zones: dict[str, int] | None = None
) -> Callable[[dict[str, Any]], bool]:
    """Desired units (n, or whatever they are) all in service, with `zones` per zone."""

    def check(s: dict[str, Any]) -> bool:
        desired, serving = s.get("desiredUnits"), s.get("inServiceUnits")
        per_zone = {z["name"]: z["inServiceUnits"] for z in s.get("zones") or []}
        want = n if n is not None else desired
        placed = all(per_zone.get(z) == k for z, k in (zones or {}).items())
        return desired == want and serving == want and placed

    return check


# -- the plot ------------------------------------------------------------------------


Color = tuple[int, int, int]
BLUE, GREEN, ORANGE, GREY = (40, 90, 200), (120, 200, 120), (220, 120, 20), (160, 160, 160)
ZONE_COLORS: dict[str, Color] = {
    "zone-a": (200, 60, 60),
    "zone-b": (60, 120, 200),
    "zone-c": (150, 100, 200),
}


def plot(rows: list[Row], marks: list[tuple[float, str]], path: Path) -> None:
    """Three panels over time, drawn with PIL: desired and in-service units,
    units in service per zone, and the load."""
    w, h, left, right = 1000, 800, 70, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    t_max = max(r.t for r in rows) or 1.0
    u_max = max(max(r.desired for r in rows), max(r.in_service for r in rows), 1) + 1
    z_max = max(max(r.zones.values(), default=0) for r in rows) + 1
    l_max = max(max(r.load for r in rows) * 1.15, 1.0)
    # (top, bottom, y maximum, grid step, title)
    panels = [
        (60, 290, u_max, 1.0, "units: desired (blue), in service (green)"),
        (340, 490, z_max, 1.0, "units in service per zone"),
        (540, 740, l_max, max(10.0, round(l_max / 50) * 10), "load: requests/s answered"),
    ]

    def x(t: float) -> float:
        return left + (w - left - right) * t / t_max

    def y(v: float, i: int) -> float:
        top, bottom, vmax = panels[i][:3]
        return bottom - (bottom - top) * v / vmax

    title = "vigil local up: autoscaling and a zone outage"
    d.text((left, 14), title, fill="black", font=font)
    down = [(t, text.split()[0]) for t, text in marks if " down " in text]
    up = [t for t, text in marks if " up (" in text]
    if down:
        (t_down, zone), t_up = down[0], up[0] if up else t_max
        for top, bottom, *_ in panels:
            d.rectangle([x(t_down), top, x(t_up), bottom], fill=(253, 226, 226))
        d.text((x(t_down) + 4, 64), f"{zone} down", fill=(180, 40, 40), font=small)
        if up:
            d.text((x(t_up) + 4, 64), f"{zone} up", fill=(30, 120, 50), font=small)
    for top, bottom, vmax, step, title in panels:
        d.rectangle([left, top, w - right, bottom], outline="black")
        d.text((left, top - 18), title, fill="black", font=small)
        v = 0.0
        while v <= vmax:
            yy = bottom - (bottom - top) * v / vmax
            d.line([left, yy, w - right, yy], fill=(225, 225, 225))
            d.text((left - 8, yy), f"{v:g}", fill="black", font=small, anchor="rm")
            v += step
    tick = 30.0 if t_max > 120 else 15.0
    t = 0.0
    while t <= t_max:
        d.text((x(t), panels[-1][1] + 6), f"{t:g}s", fill="black", font=small, anchor="mt")
        t += tick
    phases = [(t_mark, text) for t_mark, text in marks if "load" in text]
    for i, (t_mark, text) in enumerate(phases):
        d.line([x(t_mark), panels[0][0], x(t_mark), panels[-1][1]], fill=GREY)
        label = text.split(":")[0]
        d.text((x(t_mark) + 4, panels[-1][0] + 4 + 14 * (i % 2)), label, fill=GREY, font=small)

    def line(values: list[float], i: int, color: Color, width: int, steps: bool = True) -> None:
        pts: list[tuple[float, float]] = []
        for r, v in zip(rows, values, strict=True):
            if steps and pts:
                pts.append((x(r.t), pts[-1][1]))
            pts.append((x(r.t), y(v, i)))
        d.line(pts, fill=color, width=width, joint="curve")

    line([r.in_service for r in rows], 0, GREEN, 7)  # under desired
    line([r.desired for r in rows], 0, BLUE, 2)
    for k, zone in enumerate(ZONES):  # nudged apart so equal counts stay visible
        line([r.zones.get(zone, 0) + (k - 1) * 0.06 for r in rows], 1, ZONE_COLORS[zone], 2)
        lx = w - right - 260 + k * 85
        d.line([lx, panels[1][0] - 10, lx + 20, panels[1][0] - 10], fill=ZONE_COLORS[zone], width=3)
        d.text((lx + 25, panels[1][0] - 10), zone, fill="black", font=small, anchor="lm")
    line([r.load for r in rows], 2, ORANGE, 2, steps=False)
    img.save(path)


# -- the demo --------------------------------------------------------------------------


def train() -> Path:
    say("1. Generating 32 normal and 8 defective fabric images, training a model (vigil train)")
    normal_dir, anomalous_dir = synthetic.write_dataset(OUT / "train", 32, 8, seed=0)
    model = OUT / "fabric.vigil"
    started = time.monotonic()
    run = subprocess.run(
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
            "1024",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"vigil train failed:\n{run.stderr}")
    for line in run.stdout.splitlines():
        say(f"  {line}")
    say(f"  ({time.monotonic() - started:.0f}s)")
    return model


def sample_images() -> tuple[list[bytes], Path, Path]:
    images = OUT / "images"
    images.mkdir(exist_ok=True)
    normal, defect = images / "normal.png", images / "scratch.png"
    Image.fromarray(synthetic.normal(90_000).image).save(normal)
    Image.fromarray(synthetic.defective(91_001, defect="scratch").image).save(defect)
    load = []
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(synthetic.normal(92_000 + i).image).save(buf, "PNG")
        load.append(buf.getvalue())
    return load, normal, defect


async def drive(api: ApiClient, target: str, images: list[bytes]) -> Timeline:
    load = Load(target, images)
    tl = Timeline(api, load)
    tl.header()
    try:
        tl.mark("light load: 1 client, ~3 requests/s")
        await load.set(clients=1, pause=0.3)
        await tl.run_until(lambda s: False, at_most=6)

        tl.phase = "heavy"
        tl.mark("heavy load: 6 clients, as fast as the units answer")
        await load.set(clients=6, pause=0.0)
        # On to the outage once the autoscaler wants the most units and most serve
        # (a unit starts slowly on a machine this load saturates).
        await tl.run_until(
            lambda s: s.get("desiredUnits") == 4 and s.get("inServiceUnits", 0) >= 3, at_most=60
        )

        # The outage hits the zone serving the most units.
        serving = {z["name"]: z["inServiceUnits"] for z in tl.status.get("zones") or []}
        zone = max(ZONES, key=lambda z: serving.get(z, 0))
        tl.phase = "zone-down"
        tl.mark(f"{zone} down (vigil local zone down {zone})")
        down = vigil("local", "zone", "down", zone, "-o", "json", "--api", api.address, show=False)
        reply = json.loads(down.stdout)
        pids = ", ".join(str(k["pid"]) for k in reply["killed"])
        say(
            f"        killed {len(reply['killed'])} unit(s) in {zone} (pid {pids or '-'}); "
            f"{reply['inflight']} requests were in flight on them"
        )
        await tl.run_until(units_match(zones={zone: 0}), at_most=45, at_least=3)

        tl.phase = "zone-up"
        tl.mark(f"{zone} up (vigil local zone up {zone})")
        vigil("local", "zone", "up", zone, "--api", api.address, show=False)
        back = units_match()
        await tl.run_until(
            lambda s: (
                back(s) and any(z["name"] == zone and z["inServiceUnits"] > 0 for z in s["zones"])
            ),
            at_most=45,
            at_least=3,
        )

        tl.phase = "light"
        tl.mark("light load again: 1 client, ~3 requests/s")
        await load.set(clients=1, pause=0.3)
        await tl.run_until(units_match(1), at_most=45, at_least=5)
        await tl.run_until(lambda s: False, at_most=2)
    finally:
        await load.stop()
    return tl


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    model = train()
    (OUT / "model.yaml").write_text(MODEL_YAML)
    images, normal, defect = sample_images()

    port, metrics_port, api_port = free_port(), free_port(), free_port()
    api_address = f"127.0.0.1:{api_port}"
    target = f"127.0.0.1:{port}"
    say(f"\n2. Starting the local runtime: vigil local up (zones {', '.join(ZONES)})")
    log_path = OUT / "local-up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [
                *VIGIL,
                "local",
                "up",
                "--zones",
                ",".join(ZONES),
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--api",
                api_address,
                "--state-dir",
                str(OUT / "local"),
                "--grace-seconds",
                "10",
                # 2 cores, saturated on purpose: new units must still start quickly
                "--serving-nice",
                "5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **WINDOWS, "PYTHONUNBUFFERED": "1"},
        )
    # The clients below stand for machines elsewhere: they yield the CPU to the
    # system under test (units and the control process) on a small machine.
    os.nice(10)
    api = ApiClient(api_address)
    try:
        deadline = time.monotonic() + 30
        while not api.healthy():
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"vigil local up did not start; see {log_path}")
            time.sleep(0.2)
        say(
            f"  client endpoint {target}, metrics http://127.0.0.1:{metrics_port}/metrics, "
            f"control API {api_address}, log {log_path}"
        )

        say(f"\n3. Applying the Model ({model.name}, 1 to 4 units, utilization target 0.5)")
        vigil("local", "apply", "-f", str(OUT / "model.yaml"), "--api", api_address)
        deadline = time.monotonic() + 120
        while (api.model("default", "fabric").get("status") or {}).get("phase") != "Hosted":
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the model was not hosted in time; see {log_path}")
            time.sleep(0.5)
        vigil("local", "get", "models", "--api", api_address)

        say("\n4. Two images through the client endpoint (vigil detect, unchanged)")
        run = vigil("detect", "--target", target, str(normal), str(defect), show=False)
        for line in run.stdout.splitlines():
            r = json.loads(line)
            verdict = "ANOMALOUS" if r["is_anomalous"] else "normal"
            say(
                f"  {r['image']:28} {verdict:9} score {r['anomaly_score']:.2f} "
                f"(threshold {r['threshold']:.2f})"
            )

        say(
            "\n5. Load up and down, a zone outage and its recovery "
            "(a row every 3 s; per-zone columns are units in service)"
        )
        tl = asyncio.run(drive(api, target, images))

        say("\n6. What the autoscaler and the zones did (vigil local events fabric)")
        vigil("local", "events", "fabric", "--api", api_address)
        vigil("local", "get", "models", "-o", "wide", "--api", api_address)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        code = up.wait(60)
    say(f"\n7. vigil local up stopped on SIGINT (exit {code}); every unit drained and exited.")

    with (OUT / "timeline.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_s", "phase", "load_rps", "desired", "in_service", *ZONES, "errors"])
        for r in tl.rows:
            out.writerow(
                [
                    f"{r.t:.1f}",
                    r.phase,
                    f"{r.load:.1f}",
                    r.desired,
                    r.in_service,
                    *(r.zones.get(z, 0) for z in ZONES),
                    r.errors,
                ]
            )
    plot(tl.rows, tl.marks, OUT / "autoscaling.png")
    errors = len(tl.load.errors)
    served = tl.load.done
    say(
        f"\nServed {served} requests with {errors} errors"
        + (f" ({tl.load.errors[0]})" if errors else "")
        + f"; the demo took {time.monotonic() - started:.0f}s.\n"
        f"Outputs in {OUT}/: autoscaling.png (the plot), timeline.csv, model.yaml, "
        f"fabric.vigil, local-up.log (the control process), local/logs/ (each unit)."
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
