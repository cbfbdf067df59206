"""Overload against a real `vigil serve` process on loopback.

Three bounded phases: the unit's capacity C is measured with closed-loop
clients (the best of three 2 s windows); then requests arrive open-loop at
10 x C for 5 s, sent on schedule whatever the replies; then the clients run
again until a window reaches 0.8 x C. Every admitted request must be
answered, the rest refused with RESOURCE_EXHAUSTED at once, the unit's
resident memory must stay within what its admission slots can hold, and
afterwards it must serve at full rate again.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tests.integration.inference.serve_process import ServeProcess
from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil_inference import synthetic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

Request = anomaly_pb2.DetectAnomaliesRequest
MAX_QUEUE = 64  # the default of `vigil serve`, named here for the memory bound
CLIENTS = 32  # closed-loop clients: enough to keep batches of 4 full, half of MAX_QUEUE
OVERLOAD = 10.0  # times the measured capacity
MIB = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    code: str
    seconds: float
    answered: bool  # OK with a scored result


@dataclass(frozen=True)
class Phase:
    outcomes: list[Outcome]
    seconds: float

    def codes(self) -> Counter[str]:
        return Counter(o.code for o in self.outcomes)

    def ok_per_s(self) -> float:
        return sum(o.answered for o in self.outcomes) / self.seconds

    def latency(self, code: str, q: float) -> float:
        values = sorted(o.seconds for o in self.outcomes if o.code == code)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def png_requests(n: int = 16) -> list[Request]:
    out = []
    for i in range(n):
        sample = synthetic.defective(100 + i, 256) if i % 2 else synthetic.normal(i, 256)
        buf = io.BytesIO()
        Image.fromarray(sample.image).save(buf, "PNG")
        out.append(Request(image=buf.getvalue()))
    return out


async def call(stub: anomaly_pb2_grpc.AnomalyDetectionStub, request: Request) -> Outcome:
    start = time.perf_counter()
    try:
        reply = await stub.DetectAnomalies(request, timeout=120)
    except grpc.aio.AioRpcError as err:
        return Outcome(err.code().name, time.perf_counter() - start, False)
    return Outcome("OK", time.perf_counter() - start, bool(reply.result.model_version))


async def closed_loop(
    stubs: Sequence[anomaly_pb2_grpc.AnomalyDetectionStub],
    requests: Sequence[Request],
    seconds: float,
) -> Phase:
    """CLIENTS loops, each sending its next request when the last returns."""
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    stop_at = start + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            outcomes.append(await call(stubs[k % len(stubs)], requests[i % len(requests)]))
            i += CLIENTS

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    return Phase(outcomes, time.perf_counter() - start)


async def best_of(
    stubs: Sequence[anomaly_pb2_grpc.AnomalyDetectionStub],
    requests: Sequence[Request],
    windows: int = 3,
    seconds: float = 2.0,
) -> Phase:
    """The fastest of a few closed-loop windows: other work on the machine
    can only slow a window down, so the best is the unit's own rate."""
    phases = [await closed_loop(stubs, requests, seconds) for _ in range(windows)]
    return max(phases, key=Phase.ok_per_s)


async def recover(
    stubs: Sequence[anomaly_pb2_grpc.AnomalyDetectionStub],
    requests: Sequence[Request],
    rate: float,
    windows: int = 8,
) -> list[Phase]:
    """Closed-loop windows of 2 s until one reaches `rate` (at most `windows`)."""
    phases: list[Phase] = []
    while len(phases) < windows and (not phases or phases[-1].ok_per_s() < rate):
        phases.append(await closed_loop(stubs, requests, 2.0))
    return phases


async def open_loop(
    stubs: Sequence[anomaly_pb2_grpc.AnomalyDetectionStub],
    requests: Sequence[Request],
    rate: float,
    seconds: float,
) -> tuple[Phase, float]:
    """rate x seconds requests sent on schedule, whatever the replies do;
    returns the phase (until the last reply) and the rate actually offered."""
    loop = asyncio.get_running_loop()
    total = round(rate * seconds)
    start = loop.time()
    calls = []
    for i in range(total):
        if (wait := start + i / rate - loop.time()) > 0:
            await asyncio.sleep(wait)
        stub = stubs[i % len(stubs)]
        calls.append(asyncio.ensure_future(call(stub, requests[i % len(requests)])))
    offered = total / (loop.time() - start)
    outcomes = await asyncio.gather(*calls)
    return Phase(list(outcomes), loop.time() - start), offered


def server_counts(unit: ServeProcess) -> Counter[str]:
    """Requests the unit has finished, by status code (its own metrics)."""
    return Counter(
        {
            code: int(unit.metric(f'vigil_inference_requests_total{{code="{code}"}}'))
            for code in ("OK", "RESOURCE_EXHAUSTED")
        }
    )


class RssSampler:
    """Peak resident memory of a process, sampled every 20 ms."""

    def __init__(self, unit: ServeProcess) -> None:
        self.unit = unit
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.unit.rss_bytes())
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def heavy_model(dataset: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unit slow enough (EfficientNet-Lite2 at 320 px, some 20-40 images/s on 2
    cores) that this one client process can really offer it 10x its capacity: with
    the 100+ images/s of the shared MobileNetV2 fixture on a quiet machine, the
    flood's own client saturates first and the test would measure the client."""
    from vigil_inference.options import TrainConfig
    from vigil_inference.trainer import train

    out = tmp_path_factory.mktemp("heavy") / "heavy.vigil"
    cfg = TrainConfig(backbone="efficientnet_lite2", input_size=320, max_bank=1024, seed=0)
    train(dataset[0], dataset[1], out, cfg, quiet=True)
    return out


@pytest.fixture(scope="module")
def unit(heavy_model: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(heavy_model, "--max-queue", str(MAX_QUEUE))
    try:
        yield server
    finally:
        server.stop()


async def test_ten_times_capacity_loses_no_admitted_request(unit: ServeProcess) -> None:
    requests = png_requests()
    target = f"127.0.0.1:{unit.port}"
    channels = [grpc.aio.insecure_channel(target) for _ in range(4)]
    stubs = [anomaly_pb2_grpc.AnomalyDetectionStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
    try:
        await closed_loop(stubs, requests, 2.0)  # warm every batch size and buffer
        idle_rss = unit.rss_bytes()
        before = await best_of(stubs, requests)
        capacity = before.ok_per_s()
        served_0 = server_counts(unit)

        with RssSampler(unit) as rss:
            flood, offered = await open_loop(stubs, requests, OVERLOAD * capacity, 5.0)
        served_1 = server_counts(unit)
        inflight = unit.metric("vigil_inference_inflight_requests")
        recovery = await recover(stubs, requests, 0.8 * capacity)
    finally:
        for ch in channels:
            await ch.close(grace=None)

    codes = flood.codes()
    admitted, refused = codes["OK"], codes["RESOURCE_EXHAUSTED"]
    refusal_p50 = flood.latency("RESOURCE_EXHAUSTED", 0.5)
    refusal_p99 = flood.latency("RESOURCE_EXHAUSTED", 0.99)
    admitted_p50 = flood.latency("OK", 0.5)
    summary = (
        f"capacity {capacity:.1f}/s; offered {offered:.0f}/s: {admitted} answered, "
        f"{refused} refused, codes {dict(codes)}; answered during overload "
        f"{flood.ok_per_s():.1f}/s; refusal p50 {refusal_p50 * 1e3:.1f} ms "
        f"p99 {refusal_p99 * 1e3:.1f} ms; admitted p50 {admitted_p50 * 1e3:.0f} ms; "
        f"idle RSS {idle_rss / MIB:.0f} MiB, peak under overload {rss.peak / MIB:.0f} MiB; "
        f"after: {[round(w.ok_per_s(), 1) for w in recovery]}/s in 2 s windows"
    )
    print(summary)

    # The phases really were what they claim.
    assert before.codes() == {"OK": len(before.outcomes)}, summary
    assert capacity > 5, summary
    assert offered >= 0.8 * OVERLOAD * capacity, summary

    # Every admitted request answered with a result; every other one refused.
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, summary
    assert all(o.answered for o in flood.outcomes if o.code == "OK"), summary
    assert refused >= 0.5 * len(flood.outcomes), summary
    # The unit counts the same: nothing it admitted was dropped on its side.
    assert served_1 - served_0 == Counter(codes), summary
    assert inflight == 0, summary
    # Admitted work goes on while the unit refuses 9 requests in 10 (which
    # costs CPU too: the rate may drop, but never collapses).
    assert flood.ok_per_s() >= 0.4 * capacity, summary

    # Refused at once, not after a wait in the queue: an admitted request
    # waits for the MAX_QUEUE ahead of it (about MAX_QUEUE / capacity). The
    # latencies are taken in this client, which is busy itself sending 10x,
    # so the tails hold scheduling stalls of a loaded machine for both.
    assert refusal_p50 < 0.5, summary
    assert refusal_p50 < admitted_p50 / 5, summary
    assert refusal_p99 < flood.latency("OK", 0.99), summary

    # Memory bounded by the admission slots, not by the offered load: each
    # slot holds one request (~140 KB here), its decoded pixels and model
    # input, under 1 MiB; allow that again for messages being refused. The
    # 5 s flood carries 140 KB x 10 x capacity x 5 s: hundreds of MB.
    assert rss.peak - idle_rss < 2 * MAX_QUEUE * MIB, summary

    # Once the flood is over, full rate again (within a few windows, which
    # other work on the machine may slow), nothing refused.
    assert all(w.codes() == {"OK": len(w.outcomes)} for w in recovery), summary
    assert recovery[-1].ok_per_s() >= 0.8 * capacity, summary
    assert "Traceback" not in unit.stderr
