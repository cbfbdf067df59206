"""`vigil local up` end to end: a real control process, real `vigil serve`
units, real requests through the client endpoint, and the `vigil local`
subcommands as a user types them.

Windows are short (env VIGIL_SCRAPE_INTERVAL, VIGIL_STABLE_WINDOW,
VIGIL_PANIC_WINDOW) and the Model scales on rps with a low target, so that a
handful of clients mean 3 units and a trickle means 1 on any machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.tools import free_port
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil_operator.local.api import ApiClient

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

VIGIL = [sys.executable, "-m", "vigil_cli"]
WINDOWS = {"VIGIL_SCRAPE_INTERVAL": "0.5", "VIGIL_STABLE_WINDOW": "4", "VIGIL_PANIC_WINDOW": "1.5"}
MODEL_YAML = """\
apiVersion: vigil.dev/v1alpha1
kind: Model
metadata:
  name: {name}
spec:
  artifact:
    uri: {uri}
  minUnits: 1
  maxUnits: 3
  zones: [a, b, c]
  scaling:
    metric: rps
    target: 5
    scaleDownStabilizationSeconds: 2
  unit:
    gpus: 0
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


class LocalUp:
    """`vigil local up` as a process on free ports, its log in a file."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port, self.metrics_port, api_port = free_port(), free_port(), free_port()
        self.api_address = f"127.0.0.1:{api_port}"
        self.target = f"127.0.0.1:{self.port}"
        self.api = ApiClient(self.api_address, timeout=60)
        self.log_path = tmp / "local-up.log"
        args = [
            *VIGIL,
            "local",
            "up",
            "--zones",
            "a,b,c",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--api",
            self.api_address,
            "--state-dir",
            str(tmp / "state"),
            "--grace-seconds",
            "10",
            *extra,
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **WINDOWS, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 30
        while not self.api.healthy():
            assert self.proc.poll() is None, f"vigil local up exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"the control API did not answer:\n{self.tail()}"
            time.sleep(0.1)

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [*VIGIL, "local", *args, "--api", self.api_address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert run.returncode == 0, f"{args}: {run.stderr}\n{self.tail()}"
        return run

    def status(self, name: str = "fabric") -> dict[str, Any]:
        s: dict[str, Any] = self.api.model("default", name).get("status") or {}
        return s

    async def wait(
        self,
        what: str,
        check: Callable[[dict[str, Any]], bool],
        within: float,
        name: str = "fabric",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"vigil local up exited:\n{self.tail()}"
            status = await asyncio.to_thread(self.status, name)
            if check(status):
                return status
            await asyncio.sleep(0.25)
        raise AssertionError(f"not {what} after {within}s: {status}\n{self.tail()}")

    async def units_left(self, n: int, within: float = 15) -> list[dict[str, Any]]:
        """Wait until `n` units remain: stopped ones drain (up to the grace period), then exit."""
        deadline = time.monotonic() + within
        while len(units := await asyncio.to_thread(self.api.units)) != n:
            assert time.monotonic() < deadline, units
            await asyncio.sleep(0.2)
        return units

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"vigil local up did not stop on {sig.name}:\n{self.tail()}"
            ) from None


def zones(status: dict[str, Any], field: str = "inServiceUnits") -> dict[str, int]:
    return {z["name"]: z[field] for z in status.get("zones") or []}


def serving(n: int, **per_zone: int) -> Callable[[dict[str, Any]], bool]:
    def check(s: dict[str, Any]) -> bool:
        placed = all(zones(s).get(z) == k for z, k in per_zone.items())
        return s.get("desiredUnits") == n and s.get("inServiceUnits") == n and placed

    return check


class Load:
    """Clients sending real images through the endpoint; `pause` paces each one."""

    def __init__(self, target: str, image: bytes, clients: int, pause: float = 0.0) -> None:
        self.ok = 0
        self.errors: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._channel = grpc.aio.insecure_channel(target)
        stub = anomaly_pb2_grpc.AnomalyDetectionStub(self._channel)  # type: ignore[no-untyped-call]
        request = anomaly_pb2.DetectAnomaliesRequest(image=image)

        async def client() -> None:
            while not self._stop.is_set():
                try:
                    await stub.DetectAnomalies(request, timeout=30)
                    self.ok += 1
                except grpc.aio.AioRpcError as exc:
                    self.errors.append((time.monotonic(), f"{exc.code().name}: {exc.details()}"))
                if pause:
                    await asyncio.sleep(pause)

        self._tasks = [asyncio.create_task(client()) for _ in range(clients)]

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._channel.close(None)


class PidWatch:
    """Every unit PID the runtime reports, and the lowest in-service count seen."""

    def __init__(self, up: LocalUp) -> None:
        self.up, self.pids, self.units = up, set[int](), {}
        self.low: int | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                units = await asyncio.to_thread(self.up.api.units)
                status = await asyncio.to_thread(self.up.status)
            except (ConnectionError, OSError):
                return
            self.pids |= {u["pid"] for u in units if u["pid"]}
            self.units = {u["name"]: u for u in units}
            if self.low is not None:
                self.low = min(self.low, int(status.get("inServiceUnits") or 0))
            await asyncio.sleep(0.2)

    def watch_low(self) -> None:
        self.low = 1_000_000

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
def model_dir(tmp_path: Path, trained_model_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(trained_model_path, folder / "fabric.vigil")
    (folder / "model.yaml").write_text(MODEL_YAML.format(name="fabric", uri="fabric.vigil"))
    return folder


async def test_apply_refuses_what_the_crd_refuses(tmp_path: Path, model_dir: Path) -> None:
    up = LocalUp(tmp_path)
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            MODEL_YAML.format(name="fabric", uri="fabric.vigil").replace(
                "maxUnits: 3", "maxUnits: 0"
            )
        )
        run = up.cli("apply", "-f", str(bad), check=False)
        assert run.returncode == 1
        assert "spec.maxUnits: 0 is less than the minimum of 1" in run.stderr
        bad.write_text(
            MODEL_YAML.format(name="fabric", uri="x").replace("minUnits: 1", "minUnits: 4")
        )
        run = up.cli("apply", "-f", str(bad), check=False)
        assert run.returncode == 1
        assert (
            'The Model "fabric" is invalid: spec: maxUnits must be greater than or equal to '
            "minUnits"
        ) in run.stderr
        get = up.cli("get", "models")
        assert get.stdout == "" and "No resources found in default namespace." in get.stderr

        # A valid Model whose artifact is missing: accepted (as kubectl would),
        # then its unit crash-loops and the status says why.
        missing = tmp_path / "missing.yaml"
        missing.write_text(MODEL_YAML.format(name="ghost", uri="nowhere/ghost.vigil"))
        run = up.cli("apply", "-f", str(missing))
        assert run.stdout == "model.vigil.dev/ghost created\n"
        assert "does not exist (yet)" in run.stderr
        failed = await up.wait(
            "HostingFailed", lambda s: s.get("phase") == "HostingFailed", 60, name="ghost"
        )
        assert (
            "CrashLoopBackOff (exit code 1, vigil serve: error: cannot read artifact"
            in (failed["message"])
        )
        assert str(tmp_path / "nowhere" / "ghost.vigil") in failed["message"]

        # A bad update is refused and the Model stays as it was.
        missing.write_text(
            MODEL_YAML.format(name="ghost", uri="nowhere/ghost.vigil").replace(
                "metric: rps", "metric: latency"
            )
        )
        run = up.cli("apply", "-f", str(missing), check=False)
        assert run.returncode == 1
        assert "spec.scaling.metric: 'latency' is not one of" in run.stderr
        assert up.api.model("default", "ghost")["metadata"]["generation"] == 1

        # StopModel: no units, phase Stopped.
        missing.write_text(
            MODEL_YAML.format(name="ghost", uri="nowhere/ghost.vigil").replace(
                "minUnits: 1", "state: Stopped\n  minUnits: 1"
            )
        )
        assert up.cli("apply", "-f", str(missing)).stdout == "model.vigil.dev/ghost configured\n"
        stopped = await up.wait("Stopped", lambda s: s.get("phase") == "Stopped", 30, name="ghost")
        assert stopped["desiredUnits"] == 0 and up.api.units() == []

        assert up.cli("delete", "model", "ghost").stdout == 'model.vigil.dev "ghost" deleted\n'
        assert up.api.models() == []
    finally:
        assert up.stop() == 0
    assert processes_mentioning(str(tmp_path / "nowhere")) == []


async def test_serves_scales_fails_over_and_stops_clean(
    tmp_path: Path, model_dir: Path, png_image: Callable[..., bytes]
) -> None:
    up = LocalUp(tmp_path)
    watch = PidWatch(up)
    heavy: Load | None = None
    try:
        run = up.cli("apply", "-f", str(model_dir / "model.yaml"))
        assert run.stdout == "model.vigil.dev/fabric created\n"
        await up.wait("Hosted with 1 unit", serving(1), 90)

        table = up.cli("get", "models").stdout.splitlines()
        assert table[0].split() == ["NAME", "STATE", "DESIRED", "INSERVICE", "MIN", "MAX", "AGE"]
        assert table[1].split()[:6] == ["fabric", "Running", "1", "1", "1", "3"]

        # `vigil detect` works against the endpoint unchanged.
        normal, defect = tmp_path / "normal.png", tmp_path / "defect.png"
        normal.write_bytes(png_image(11))
        defect.write_bytes(png_image(12, defect="patch"))
        detect = await asyncio.to_thread(
            subprocess.run,
            [*VIGIL, "detect", "--target", up.target, str(normal), str(defect)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert detect.returncode == 0, detect.stderr
        out = [json.loads(line) for line in detect.stdout.splitlines()]
        assert [(o["image"], o["is_anomalous"]) for o in out] == [
            (str(normal), False),
            (str(defect), True),
        ]

        # Load: 6 clients, each ~3-5 requests/s, are far above 5 rps per unit: 3
        # units, one per zone. Paced, so starting units get CPU on a small machine.
        heavy = Load(up.target, png_image(11), clients=6, pause=0.2)
        await up.wait("scaled up to 3", serving(3, a=1, b=1, c=1), 120)

        # A unit that dies is restarted in place; its calls in flight are retried.
        victim = next(u for u in up.api.units() if u["zone"] == "b")
        os.kill(victim["pid"], signal.SIGKILL)
        await asyncio.sleep(1)
        await up.wait("serving 3 again", serving(3, a=1, b=1, c=1), 90)
        again = next(u for u in up.api.units() if u["name"] == victim["name"])
        assert again["restarts"] == 1 and again["pid"] != victim["pid"]
        assert heavy.errors == [], (heavy.errors, up.tail())

        # Zone a goes down: its unit is killed, its share moves to b and c.
        down = json.loads(up.cli("zone", "down", "a", "-o", "json").stdout)
        assert down["changed"] and len(down["killed"]) == 1
        killed_pid = down["killed"][0]["pid"]
        await asyncio.sleep(1)
        assert not alive(killed_pid)
        status = await up.wait("refilled in b and c", serving(3, a=0), 120)
        assert sum(zones(status).values()) == 3
        assert {z["name"]: z["healthy"] for z in status["zones"]} == {
            "a": False,
            "b": True,
            "c": True,
        }
        assert "zone unhealthy: a (0/1 nodes Ready)" in status["message"]
        # Only calls in flight on the killed unit may fail (the endpoint retries them).
        assert len(heavy.errors) <= down["inflight"], (heavy.errors, down, up.tail())

        # Zone a is back: it gets its unit again, surge first (never below 3 in service).
        watch.watch_low()
        assert up.cli("zone", "up", "a").stdout == "zone a up\n"
        await up.wait("rebalanced", serving(3, a=1, b=1, c=1), 120)
        assert watch.low is not None and watch.low >= 3, watch.low
        await heavy.stop()
        assert len(heavy.errors) <= down["inflight"], (heavy.errors, down, up.tail())
        assert heavy.ok > 100

        # Load stops (a trickle goes on): back to minUnits, the others drained.
        await up.units_left(3)  # b's extra unit, replaced by a's, has drained
        before = {u["name"]: u["pid"] for u in up.api.units()}
        trickle = Load(up.target, png_image(11), clients=1, pause=0.5)
        await up.wait("scaled down to 1", serving(1), 60)
        kept = {u["name"] for u in await up.units_left(1)}
        gone = [pid for name, pid in before.items() if name not in kept]
        assert len(gone) == 2 and not any(alive(p) for p in gone)
        await trickle.stop()
        assert trickle.errors == [] and trickle.ok > 0, (trickle.errors, up.tail())

        # The operator's metrics, from the local runtime.
        url = f"http://127.0.0.1:{up.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vigil_")
        }
        labels = 'model="fabric",namespace="default"'
        assert samples[f"vigil_model_desired_inference_units{{{labels}}}"] == 1
        assert samples[f"vigil_model_in_service_inference_units{{{labels}}}"] == 1
        assert samples[f"vigil_model_max_inference_units{{{labels}}}"] == 3
        ups = f'vigil_scaling_decisions_total{{direction="up",{labels}}}'
        downs = f'vigil_scaling_decisions_total{{direction="down",{labels}}}'
        assert samples[ups] >= 1 and samples[downs] >= 1
        zone_series = {k for k in samples if k.startswith("vigil_zone_in_service_inference_units")}
        assert len(zone_series) == 3
        assert samples['vigil_model_observed_load{metric="rps",' + labels + "}"] >= 0
    finally:
        if heavy is not None:
            await heavy.stop()
        pids = set(watch.pids)
        await watch.stop()
        code = up.stop(signal.SIGINT)
    # SIGINT: every unit drained and gone, the process exits 0.
    assert code == 0, up.tail()
    assert pids and not [p for p in pids if alive(p)]
    assert processes_mentioning(str(model_dir)) == []
    log = up.log_path.read_text()
    assert "Traceback" not in log, up.tail()
    assert log.rstrip().endswith("INFO stopped")


async def test_a_new_artifact_rolls_over_surge_first(tmp_path: Path, model_dir: Path) -> None:
    up = LocalUp(tmp_path)
    watch = PidWatch(up)
    try:
        up.cli("apply", "-f", str(model_dir / "model.yaml"))
        await up.wait("Hosted with 1 unit", serving(1), 90)
        (old,) = up.api.units()
        shutil.copy(model_dir / "fabric.vigil", model_dir / "fabric-v2.vigil")
        (model_dir / "model.yaml").write_text(
            MODEL_YAML.format(name="fabric", uri="fabric-v2.vigil")
        )
        watch.watch_low()
        run = up.cli("apply", "-f", str(model_dir / "model.yaml"))
        assert run.stdout == "model.vigil.dev/fabric configured\n"
        deadline = time.monotonic() + 90
        while [u["artifact"] for u in up.api.units()] != [str(model_dir / "fabric-v2.vigil")]:
            assert time.monotonic() < deadline, up.api.units()
            await asyncio.sleep(0.2)
        assert not alive(old["pid"])
        status = await up.wait("Hosted on the new artifact", serving(1), 30)
        assert status["observedGeneration"] == 2
        assert watch.low == 1  # the old unit served until the new one was Ready
    finally:
        await watch.stop()
        assert up.stop() == 0


async def test_units_die_with_a_killed_control_process(tmp_path: Path, model_dir: Path) -> None:
    up = LocalUp(tmp_path)
    try:
        up.cli("apply", "-f", str(model_dir / "model.yaml"))
        deadline = time.monotonic() + 30
        while not (units := up.api.units()) or not units[0]["pid"]:
            assert time.monotonic() < deadline, up.tail()
            await asyncio.sleep(0.1)
        pid = units[0]["pid"]
        assert alive(pid)
    finally:
        up.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"unit {pid} outlived its control process"
        await asyncio.sleep(0.1)
    assert processes_mentioning(str(model_dir)) == []
