"""Served throughput and latency against the bare model, in one process.

Raw: decode + preprocess (`model.prepare`), `model.predict` on a batch and
`model.detection`, called directly in a loop, for several batch sizes; the
best is the baseline. Served: the same images through a real gRPC unit on
port 0 (max batch size = the best raw one) with N concurrent grpc.aio
clients in this process (the clients' CPU counts against the server: a
conservative measure). At light load (one
client), the served p50/p99 latency is compared with a raw single-image
call; the difference is the serving overhead.

Last line: summary served_over_raw=R p50_overhead_ms=X served_images_per_s=N device=D
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "inference-server"))

from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc  # noqa: E402
from vigil_inference import synthetic  # noqa: E402
from vigil_inference.images import inspect_image  # noqa: E402
from vigil_inference.metrics import InferenceMetrics  # noqa: E402
from vigil_inference.model import AnomalyModel  # noqa: E402
from vigil_inference.options import ServeOptions, ServingConfig, TrainConfig  # noqa: E402
from vigil_inference.server import create_server  # noqa: E402
from vigil_inference.trainer import train  # noqa: E402


def make_images(n: int, size: int) -> list[bytes]:
    """Half normal, half defective generated textures, PNG-encoded."""
    out = []
    for i in range(n):
        sample = synthetic.defective(1000 + i, size) if i % 2 else synthetic.normal(i, size)
        buf = io.BytesIO()
        Image.fromarray(sample.image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def train_small(workdir: Path) -> Path:
    normal, anomalous = synthetic.write_dataset(workdir / "data", 30, 10, seed=0)
    out = workdir / "bench.vigil"
    train(normal, anomalous, out, TrainConfig(max_bank=1024, seed=0), quiet=True)
    return out


def raw_pass(model: AnomalyModel, images: Sequence[bytes], batch: int) -> None:
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        headers = [inspect_image(data) for data in chunk]
        inputs = [model.prepare(data, h) for data, h in zip(chunk, headers, strict=True)]
        scores, maps = model.predict(inputs)
        for i, h in enumerate(headers):
            model.detection(float(scores[i]), maps[i], (h.width, h.height), False)


def raw_throughput(
    model: AnomalyModel, images: Sequence[bytes], batch: int, seconds: float
) -> float:
    raw_pass(model, images[: batch * 2], batch)  # warm this batch size
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        raw_pass(model, images, batch)
        done += len(images)
    return done / elapsed


def raw_latencies(model: AnomalyModel, images: Sequence[bytes], count: int) -> list[float]:
    out = []
    for i in range(count):
        t0 = time.perf_counter()
        raw_pass(model, images[i % len(images) : i % len(images) + 1], 1)
        out.append(time.perf_counter() - t0)
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def served(
    model: AnomalyModel,
    images: Sequence[bytes],
    clients: int,
    seconds: float,
    max_batch_size: int,
    delay_ms: float,
) -> tuple[float, list[float], dict[int, int]]:
    """(images/s, per-request latencies, batch size histogram) over `seconds`."""
    config = ServingConfig(
        max_batch_size=max_batch_size,
        max_batch_delay_s=delay_ms / 1000,
        max_queue=max(ServingConfig.max_queue, 2 * clients),
    )
    server, port = create_server(model, "127.0.0.1:0", config=config, metrics=InferenceMetrics())
    await server.start()
    requests = [anomaly_pb2.DetectAnomaliesRequest(image=data) for data in images]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(min(clients, 4))]
    latencies: list[float] = []
    stop_at = 0.0
    counting = False

    async def client(k: int) -> int:
        stub = anomaly_pb2_grpc.AnomalyDetectionStub(channels[k % len(channels)])  # type: ignore[no-untyped-call]
        n, i = 0, k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await stub.DetectAnomalies(requests[i % len(requests)])
            if counting:
                latencies.append(time.perf_counter() - t0)
                n += 1
            i += clients
        return n

    try:
        stop_at, counting = time.perf_counter() + min(2.0, seconds / 2), False  # warm up
        await asyncio.gather(*(client(k) for k in range(clients)))
        server.service.batcher.stats.batch_sizes.clear()
        start = time.perf_counter()
        stop_at, counting = start + seconds, True
        done = sum(await asyncio.gather(*(client(k) for k in range(clients))))
        elapsed = time.perf_counter() - start
        sizes = dict(sorted(server.service.batcher.stats.batch_sizes.items()))
    finally:
        for ch in channels:
            await ch.close(grace=None)
        await server.stop(grace=5)
    return done / elapsed, latencies, sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help=".vigil artifact (default: train a small one)")
    p.add_argument("--device", default=ServeOptions.device)
    p.add_argument("--images", type=int, default=32, help="distinct images to cycle through")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--batch-sizes", default="1,4,8,16")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients at full load")
    p.add_argument(
        "--max-batch-delay-ms", type=float, default=ServingConfig.max_batch_delay_s * 1000
    )
    p.add_argument("--seconds", type=float, default=4.0, help="measuring time per point")
    p.add_argument("--rounds", type=int, default=3, help="interleaved raw/served rounds")
    p.add_argument("--latency-requests", type=int, default=200)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or train_small(Path(tmp))
        model = AnomalyModel.load(path, device=args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    model.warmup(max(batch_sizes))
    images = make_images(args.images, args.size)

    # A sweep picks the best raw batch size; then rounds interleave raw and
    # served runs at that size and each side keeps its best round, so that
    # drift in the machine's speed favours neither.
    raw = {b: raw_throughput(model, images, b, args.seconds) for b in batch_sizes}
    best_batch = max(raw, key=lambda b: raw[b])
    rate, sizes = 0.0, {}
    for _ in range(args.rounds):
        raw[best_batch] = max(
            raw[best_batch], raw_throughput(model, images, best_batch, args.seconds)
        )
        r, _, s = asyncio.run(
            served(model, images, args.clients, args.seconds, best_batch, args.max_batch_delay_ms)
        )
        if r > rate:
            rate, sizes = r, s
    raw_single = raw_latencies(model, images, args.latency_requests)
    _, light, _ = asyncio.run(
        served(model, images, 1, args.seconds, best_batch, args.max_batch_delay_ms)
    )

    print(f"device={model.device} runtime={model.runtime} images={args.size}x{args.size} PNG")
    print(f"{'path':<26}{'images/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for b in batch_sizes:
        mark = " *" if b == best_batch else ""
        print(f"{f'raw batch={b}{mark}':<26}{raw[b]:>10.1f}")
    print(f"{f'served clients={args.clients}':<26}{rate:>10.1f}")
    print(
        f"{'raw single image':<26}{'':>10}{pct(raw_single, 0.5) * 1e3:>9.1f}"
        f"{pct(raw_single, 0.99) * 1e3:>9.1f}"
    )
    print(
        f"{'served 1 client':<26}{'':>10}{pct(light, 0.5) * 1e3:>9.1f}"
        f"{pct(light, 0.99) * 1e3:>9.1f}"
    )
    print(f"served batch sizes at full load: {sizes}")
    ratio = rate / raw[best_batch]
    overhead = (pct(light, 0.5) - pct(raw_single, 0.5)) * 1e3
    print(
        f"served/raw = {ratio:.3f}  (raw best: batch {best_batch}, {raw[best_batch]:.1f} images/s)"
    )
    print(
        f"median single-request overhead = {overhead:.2f} ms "
        f"(mean {(statistics.mean(light) - statistics.mean(raw_single)) * 1e3:.2f} ms)"
    )
    device = "cuda" if model.device.startswith("cuda") else "cpu"
    print(
        f"summary served_over_raw={ratio:.3f} p50_overhead_ms={overhead:.2f} "
        f"served_images_per_s={rate:.1f} device={device}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
