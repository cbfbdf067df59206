"""vigil serve against Triton, KServe and Ray Serve: same model, images and load.

Every server loads the same artifact's ONNX scorer (ONNX Runtime, CPU) and
gets the same encoded PNG/JPEG bytes over gRPC, decoding them itself: vigil
and Ray Serve speak vigil.v1.AnomalyDetection/DetectAnomalies, Triton and
KServe the v2 (Open Inference Protocol) ModelInfer with one BYTES input. One
client drives them all: pre-serialized requests sent as raw bytes by N
concurrent grpc.aio callers (N = 1, 4, 16, 64), warm-up excluded. All servers
are up together and measured in turn, interleaved over rounds (see `sweep`);
the CPU (cores busy) and RSS of each server's process tree are read from
/proc. The client runs in this process, so its CPU competes with every server
alike.

Run with `make bench-peers` (it builds `.venv-peers`; `vigil serve` itself
runs from the product's `.venv`).

Last line: summary vigil_over_best_peer=R p99_vs_best_peer=R best_peer=NAME
peers=triton,kserve,ray device=cpu  (throughput ratio at the highest level
where every server keeps p99 under 1 s; p99 ratio at 16 clients, vigil over
the best peer: under 1 is better).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from PIL import Image

# vigil.v1 here is generated for this venv's protobuf (`make bench-peers`).
from tritonclient.grpc import service_pb2 as v2

from vigil.v1 import anomaly_pb2
from vigil_inference import synthetic
from vigil_inference.options import ServingConfig

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("triton", "kserve", "ray")
VIGIL_METHOD = "/vigil.v1.AnomalyDetection/DetectAnomalies"
V2_METHOD = "/inference.GRPCInferenceService/ModelInfer"
PRODUCT_VENV = ROOT / ".venv"


def make_images(n: int, size: int) -> list[bytes]:
    """Half normal, half defective textures; alternately PNG and JPEG."""
    out = []
    for i in range(n):
        sample = synthetic.defective(1000 + i, size) if i % 2 else synthetic.normal(i, size)
        buf = io.BytesIO()
        if (i // 2) % 2:
            Image.fromarray(sample.image).save(buf, format="JPEG", quality=90)
        else:
            Image.fromarray(sample.image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


# Protocols: request bytes and a parser that reads the score back --------------


def vigil_request(image: bytes) -> bytes:
    return anomaly_pb2.DetectAnomaliesRequest(image=image).SerializeToString()


def vigil_score(raw: bytes) -> tuple[float, bool]:
    result = anomaly_pb2.DetectAnomaliesResponse.FromString(raw).result
    return result.anomaly_score, result.is_anomalous


def v2_request(image: bytes, batched: bool) -> bytes:
    """ModelInfer with one BYTES element (length-prefixed, as the protocol wants)."""
    shape = [1, 1] if batched else [1]
    tensor = v2.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=shape)
    return v2.ModelInferRequest(
        model_name="vigil",
        inputs=[tensor],
        raw_input_contents=[struct.pack("<I", len(image)) + image],
    ).SerializeToString()


def v2_score(raw: bytes) -> tuple[float, bool]:
    resp = v2.ModelInferResponse.FromString(raw)
    values: dict[str, Any] = {}
    for i, out in enumerate(resp.outputs):
        dtype = np.bool_ if out.datatype == "BOOL" else np.float32
        if resp.raw_output_contents:
            values[out.name] = np.frombuffer(resp.raw_output_contents[i], dtype=dtype)
        elif out.datatype == "BOOL":
            values[out.name] = np.asarray(out.contents.bool_contents)
        else:
            values[out.name] = np.asarray(out.contents.fp32_contents, dtype=np.float32)
    return float(values["score"].ravel()[0]), bool(values["is_anomalous"].ravel()[0])


@dataclass(frozen=True)
class Protocol:
    method: str
    request: Callable[[bytes], bytes]
    score: Callable[[bytes], tuple[float, bool]]
    metadata: tuple[tuple[str, str], ...] = ()


PROTOCOLS = {
    "vigil": Protocol(VIGIL_METHOD, vigil_request, vigil_score),
    # Ray Serve's gRPC proxy routes by this metadata key to the application.
    "ray": Protocol(VIGIL_METHOD, vigil_request, vigil_score, (("application", "vigil"),)),
    "triton": Protocol(V2_METHOD, lambda b: v2_request(b, batched=True), v2_score),
    "kserve": Protocol(V2_METHOD, lambda b: v2_request(b, batched=False), v2_score),
}


# Servers --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(name: str, model: Path, port: int, batch: int, delay_ms: float) -> list[str]:
    limits = ["--max-batch-size", str(batch), "--max-batch-delay-ms", str(delay_ms)]
    if name == "vigil":
        return [
            str(PRODUCT_VENV / "bin" / "vigil"),
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--max-queue",
            "256",
            *limits,
        ]
    ports = ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
    script = str(ROOT / "bench" / "peer_servers.py")
    return [
        sys.executable,
        script,
        name,
        "--model",
        str(model),
        "--port",
        str(port),
        *ports,
        *limits,
    ]


def tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group and every descendant, then SIGKILL."""
    procs = tree(psutil.Process(proc.pid))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


# Load -----------------------------------------------------------------------


@dataclass
class Point:
    clients: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    rss_mb: float
    errors: int = 0


@dataclass
class Run:
    name: str
    points: dict[int, Point] = field(default_factory=dict)
    startup_s: float = 0.0


@dataclass
class Load:
    """N closed-loop clients, each sending its next request when the last returns."""

    calls: Sequence[Any]
    requests: Sequence[bytes]
    metadata: tuple[tuple[str, str], ...]
    clients: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    _stop_at: float = 0.0
    _counting: bool = False

    async def phase(self, seconds: float, *, counting: bool) -> int:
        """Run every client for `seconds`; returns the answers counted."""
        self._stop_at, self._counting = time.perf_counter() + seconds, counting
        return sum(await asyncio.gather(*(self._client(k) for k in range(self.clients))))

    async def _client(self, k: int) -> int:
        call, n, i = self.calls[k % len(self.calls)], 0, k
        while time.perf_counter() < self._stop_at:
            t0 = time.perf_counter()
            try:
                await call(
                    self.requests[i % len(self.requests)], timeout=60, metadata=self.metadata
                )
            except grpc.aio.AioRpcError:
                self.errors += self._counting
                continue
            if self._counting:
                self.latencies.append(time.perf_counter() - t0)
                n += 1
            i += self.clients
        return n


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_ready(
    call: Any,
    request: bytes,
    metadata: tuple[tuple[str, str], ...],
    proc: subprocess.Popen[bytes],
    timeout_s: float,
) -> bytes:
    """First good answer; a server that exits or never answers is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bytes(await call(request, timeout=30, metadata=metadata))
        except grpc.aio.AioRpcError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}; see its log") from None
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


class Server:
    """One server process tree and the client side of its protocol."""

    def __init__(self, name: str, model: Path, args: argparse.Namespace) -> None:
        self.name = name
        self.protocol = PROTOCOLS[name]
        self.port = free_port()
        cmd = server_command(name, model, self.port, args.max_batch_size, args.max_batch_delay_ms)
        self._log = open(Path(args.log_dir) / f"{name}.log", "wb")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.root = psutil.Process(self.proc.pid)
        self.run = Run(name)
        self.channels: list[grpc.aio.Channel] = []

    async def ready(self, requests: Sequence[bytes], timeout_s: float) -> list[tuple[float, bool]]:
        """Wait for the first answer, then read back every image's (score, flag)."""
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") for _ in range(4)]
        call = self.channels[0].unary_unary(self.protocol.method)
        await wait_ready(call, requests[0], self.protocol.metadata, self.proc, timeout_s)
        self.run.startup_s = time.perf_counter() - self.started
        md = self.protocol.metadata
        return [
            self.protocol.score(bytes(await call(r, timeout=60, metadata=md))) for r in requests
        ]

    async def measure(
        self, requests: Sequence[bytes], level: int, seconds: float, warmup_s: float
    ) -> Point:
        calls = [ch.unary_unary(self.protocol.method) for ch in self.channels]  # raw bytes
        load = Load(calls, requests, self.protocol.metadata, level)
        await load.phase(warmup_s, counting=False)
        cpu0, start = cpu_seconds(tree(self.root)), time.perf_counter()
        done = await load.phase(seconds, counting=True)
        elapsed = time.perf_counter() - start
        procs = tree(self.root)
        lat = load.latencies
        return Point(
            clients=level,
            images_per_s=done / elapsed,
            p50_ms=pct(lat, 0.5) * 1e3 if lat else float("inf"),
            p99_ms=pct(lat, 0.99) * 1e3 if lat else float("inf"),
            cpu_cores=(cpu_seconds(procs) - cpu0) / elapsed,
            rss_mb=rss_bytes(procs) / 2**20,
            errors=load.errors,
        )

    async def stop(self) -> None:
        for ch in self.channels:
            await ch.close(grace=None)
        stop_tree(self.proc)
        self._log.close()


async def sweep(
    names: Sequence[str], model: Path, images: Sequence[bytes], args: argparse.Namespace
) -> tuple[dict[str, Run], dict[str, list[tuple[float, bool]]]]:
    """Start every server, then interleave them: each round visits every level
    and, per level, every server in turn (order rotating between rounds), so
    that drift in a shared machine's speed falls on all of them alike. Idle
    servers stay up (their idle CPU is part of what they cost). Per server and
    level, the round with the highest throughput is kept."""
    servers: list[Server] = []
    answers: dict[str, list[tuple[float, bool]]] = {}
    try:
        for name in names:  # one at a time: startup is CPU-heavy
            print(f"{name}: starting", flush=True)
            servers.append(Server(name, model, args))
            reqs = [servers[-1].protocol.request(data) for data in images]
            answers[name] = await servers[-1].ready(reqs, args.startup_timeout)
        requests = {s.name: [s.protocol.request(data) for data in images] for s in servers}
        for r in range(args.rounds):
            order = servers[r % len(servers) :] + servers[: r % len(servers)]
            for level in args.levels:
                for server in order:
                    point = await server.measure(
                        requests[server.name], level, args.seconds, args.warmup
                    )
                    best = server.run.points.get(level)
                    if best is None or point.images_per_s > best.images_per_s:
                        server.run.points[level] = point
                    print(f"  round {r} {server.name:<7} {point}", flush=True)
    finally:
        for server in servers:
            await server.stop()
    return {s.name: s.run for s in servers}, answers


# Report ---------------------------------------------------------------------


def summary(runs: dict[str, Run], levels: Sequence[int]) -> tuple[str, str]:
    """(table-side note, summary line) from the measured runs."""
    ok = [lv for lv in levels if all(r.points[lv].p99_ms < 1000 for r in runs.values())]
    level = max(ok) if ok else min(levels)
    peers = [p for p in PEERS if p in runs]
    best = max(peers, key=lambda p: runs[p].points[level].images_per_s)
    ratio = runs["vigil"].points[level].images_per_s / runs[best].points[level].images_per_s
    p99_level = 16 if 16 in levels else level
    p99 = runs["vigil"].points[p99_level].p99_ms / runs[best].points[p99_level].p99_ms
    note = f"throughput compared at {level} clients, p99 at {p99_level} clients"
    line = (
        f"summary vigil_over_best_peer={ratio:.3f} p99_vs_best_peer={p99:.3f} "
        f"best_peer={best} peers={','.join(peers)} device=cpu"
    )
    return note, line


def train_model(workdir: Path) -> Path:
    """A small model with the product's own trainer (as bench/serving.py trains it)."""
    normal, anomalous = synthetic.write_dataset(workdir / "data", 30, 10, seed=0)
    out = workdir / "bench.vigil"
    cmd = [str(PRODUCT_VENV / "bin" / "vigil"), "train", "--normal", str(normal)]
    cmd += ["--anomalous", str(anomalous), "--out", str(out), "--max-bank", "1024", "--quiet"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help=".vigil artifact (default: train a small one)")
    p.add_argument("--servers", default="vigil,triton,kserve,ray")
    p.add_argument("--levels", default="1,4,16,64", help="concurrent clients")
    p.add_argument("--images", type=int, default=32, help="distinct images to cycle through")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    # 1: on the 2-core development VM, batches of 4 served about half the
    # images/s of single images in every batching server (docs/benchmarks.md).
    p.add_argument("--max-batch-size", type=int, default=1, help="for every server")
    delay_ms = ServingConfig.max_batch_delay_s * 1000  # `vigil serve`'s
    p.add_argument("--max-batch-delay-ms", type=float, default=delay_ms, help="for every server")
    p.add_argument("--seconds", type=float, default=4.0, help="measuring time per point")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds per point")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best kept")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--log-dir", default="", help="server logs (default: a temporary folder)")
    args = p.parse_args(argv)
    args.levels = [int(v) for v in args.levels.split(",")]
    names = args.servers.split(",")

    with tempfile.TemporaryDirectory() as tmp:
        args.log_dir = args.log_dir or tmp
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        model = args.model or train_model(Path(tmp))
        images = make_images(args.images, args.size)
        load0 = os.getloadavg()
        runs, answers = asyncio.run(sweep(names, model, images, args))
        load1 = os.getloadavg()

    # Same model, same answers: every server must agree with vigil on every image.
    for name in names:
        for i, ((s, a), (s0, a0)) in enumerate(zip(answers[name], answers["vigil"], strict=True)):
            if abs(s - s0) > 1e-3 * max(1.0, abs(s0)) or a != a0:
                raise SystemExit(f"{name} answers image {i} with {s} {a}, vigil with {s0} {a0}")

    cpu = psutil.cpu_count()
    print(
        f"cpus={cpu} load_avg_before={load0[0]:.1f} load_avg_after={load1[0]:.1f} "
        f"images={args.size}x{args.size} PNG+JPEG max_batch={args.max_batch_size} "
        f"delay_ms={args.max_batch_delay_ms} seconds={args.seconds} rounds={args.rounds}"
    )
    print("| server | clients | images/s | p50 ms | p99 ms | server CPU cores | RSS MB | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        for lv in args.levels:
            pt = runs[name].points[lv]
            print(
                f"| {name} | {lv} | {pt.images_per_s:.1f} | {pt.p50_ms:.1f} | {pt.p99_ms:.1f} "
                f"| {pt.cpu_cores:.2f} | {pt.rss_mb:.0f} | {pt.errors} |"
            )
    print("startup s: " + " ".join(f"{n}={runs[n].startup_s:.1f}" for n in names))
    if "vigil" in runs and any(p in runs for p in PEERS):
        note, line = summary(runs, args.levels)
        print(note)
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
