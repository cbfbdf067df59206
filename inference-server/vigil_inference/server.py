"""The inference unit: a gRPC front over a transport-free data plane.

`DetectionService` validates, decodes, batches and scores images and knows
nothing of gRPC; `AnomalyDetectionServicer` only translates messages and
errors to status codes. Admission happens before decoding, so a flood of
large images is refused (RESOURCE_EXHAUSTED) instead of filling memory.
Readiness follows the model: health reports SERVING once the server runs
with a loaded, warmed model and NOT_SERVING from the start of shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer  # public as health.aio; stubs lack it

from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil.v1.endpoint import new_server
from vigil.v1.wire import SERVICE_NAME
from vigil_inference.batcher import Closed, DynamicBatcher, Overloaded
from vigil_inference.images import InvalidImage, inspect_image
from vigil_inference.messages import result_message
from vigil_inference.metrics import InferenceMetrics, MetricsServer
from vigil_inference.model import AnomalyModel, Detection
from vigil_inference.options import ServeOptions, ServingConfig, from_flags

log = logging.getLogger("vigil.serve")

_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING

Scored = tuple[float, np.ndarray, np.ndarray | None]  # score, map, per-patch types
Context = grpc.aio.ServicerContext[Any, Any]


class DetectionService:
    """The data plane: image bytes in, Detection out, errors as exceptions.

    Raises InvalidImage (bad input), Overloaded (no admission slot) or Closed
    (shutting down). Decoding and mask encoding run on a thread pool and the
    model on the batcher's single thread, so the event loop stays free.
    """

    def __init__(
        self, model: AnomalyModel, config: ServingConfig, metrics: InferenceMetrics
    ) -> None:
        self.model = model
        self.config = config
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(config.prepare_workers, thread_name_prefix="vigil-prepare")
        self.batcher: DynamicBatcher[Any, Scored] = DynamicBatcher(
            self._predict,
            max_batch_size=config.max_batch_size,
            max_delay_s=config.max_batch_delay_s,
            max_queue=config.max_queue,
            on_batch=metrics.observe_batch,
        )

    def _predict(self, inputs: list[Any]) -> list[Scored]:
        scores, maps, cells = self.model.predict_all(inputs)
        return [
            (float(scores[i]), maps[i], None if cells is None else cells[i])
            for i in range(len(inputs))
        ]

    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        """Finish every admitted request, then release the threads."""
        try:
            await self.batcher.close()
        finally:
            self._pool.shutdown(wait=False)

    async def detect(self, image: bytes, content_type: str, return_mask: bool) -> Detection:
        """Score one encoded image; its slot is held from before decoding to the end."""
        try:
            header = inspect_image(image, content_type)  # header only: cheap
            with self.batcher.admit() as slot:
                loop = asyncio.get_running_loop()
                prepared = await loop.run_in_executor(self._pool, self.model.prepare, image, header)
                score, amap, cells = await slot.submit(prepared)
                size = (header.width, header.height)
                if return_mask:  # resizing and PNG-encoding the mask costs real CPU
                    det = await loop.run_in_executor(
                        self._pool,
                        functools.partial(self.model.detection, score, amap, size, True, cells),
                    )
                else:
                    det = self.model.detection(score, amap, size, False, cells)
        except InvalidImage:
            self.metrics.images.labels(result="invalid").inc()
            raise
        self.metrics.images.labels(result="anomalous" if det.is_anomalous else "normal").inc()
        return det


def _description(model: AnomalyModel, config: ServingConfig) -> anomaly_pb2.ModelDescription:
    info = model.info
    return anomaly_pb2.ModelDescription(
        model_version=info.model_version,
        backbone=info.backbone,
        feature_layers=list(info.feature_layers),
        input_width=info.input_size[1],
        input_height=info.input_size[0],
        threshold=info.threshold,
        memory_bank_size=info.memory_bank_size,
        artifact_sha256=info.artifact_sha256,
        created_at=info.created_at,
        performance=anomaly_pb2.ModelPerformance(
            f1_score=info.f1, recall=info.recall, precision=info.precision, auroc=info.auroc
        ),
        evaluation=anomaly_pb2.EvaluationSummary(
            training_images=info.training_images,
            normal_test_images=info.normal_test_images,
            anomalous_test_images=info.anomalous_test_images,
            threshold_independent=info.threshold_independent,
        ),
        device=model.device,
        runtime=model.runtime,
        max_batch_size=config.max_batch_size,
    )


class AnomalyDetectionServicer(anomaly_pb2_grpc.AnomalyDetectionServicer):
    """Translates between messages and the data plane; counts every request."""

    def __init__(self, service: DetectionService) -> None:
        self._service = service
        self._metrics = service.metrics
        self._description = _description(service.model, service.config)

    async def DetectAnomalies(
        self,
        request: anomaly_pb2.DetectAnomaliesRequest,
        context: Context,
    ) -> anomaly_pb2.DetectAnomaliesResponse:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        message = ""
        self._metrics.inflight.inc()
        try:
            det = await self._service.detect(
                request.image, request.content_type, request.return_mask
            )
            return anomaly_pb2.DetectAnomaliesResponse(result=result_message(det))
        except InvalidImage as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"invalid image: {exc}"
        except Overloaded as exc:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, f"unit overloaded: {exc}"
        except Closed as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            log.exception("DetectAnomalies failed")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc}"
        finally:
            self._metrics.inflight.dec()
            self._metrics.requests.labels(code=code.name).inc()
            self._metrics.request_duration.observe(time.perf_counter() - start)
        await context.abort(code, message)
        raise AssertionError("abort returned")  # pragma: no cover

    async def DescribeModel(
        self, request: anomaly_pb2.DescribeModelRequest, context: Context
    ) -> anomaly_pb2.DescribeModelResponse:
        return anomaly_pb2.DescribeModelResponse(description=self._description)


class InferenceServer:
    """A gRPC server with the detection, health and reflection services."""

    def __init__(
        self, server: grpc.aio.Server, service: DetectionService, health: HealthServicer
    ) -> None:
        self.grpc_server = server
        self.service = service
        self.health = health
        self.metrics = service.metrics

    async def start(self) -> None:
        """Start serving; health turns SERVING (the model must be loaded and warm)."""
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _NOT_SERVING)
        self.service.start()
        await self.grpc_server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _SERVING)

    async def stop(self, grace: float | None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        await self.grpc_server.stop(grace)
        await self.service.close()


def create_server(
    model: AnomalyModel,
    address: str = "[::]:0",
    *,
    config: ServingConfig | None = None,
    metrics: InferenceMetrics | None = None,
) -> tuple[InferenceServer, int]:
    """Build (not start) a unit on `address`; returns it and the bound port."""
    config = config or ServingConfig()
    service = DetectionService(model, config, metrics or InferenceMetrics())
    health = HealthServicer()
    server = new_server(health)
    anomaly_pb2_grpc.add_AnomalyDetectionServicer_to_server(  # type: ignore[no-untyped-call]
        AnomalyDetectionServicer(service), server
    )
    port = server.add_insecure_port(address)
    return InferenceServer(server, service, health), port


def _metrics_server(metrics: InferenceMetrics, host: str, port: int) -> MetricsServer:
    """Bind metrics like gRPC binds: `[::]` falls back to IPv4 where IPv6 is off."""
    bare = host.strip("[]")
    if bare in ("::", ""):
        with contextlib.suppress(OSError):
            return MetricsServer(metrics.registry, port, host="::")
        bare = "0.0.0.0"
    return MetricsServer(metrics.registry, port, host=bare)


async def _serve(model: AnomalyModel, options: ServeOptions) -> int:
    config = options.serving
    metrics = InferenceMetrics()
    metrics_server = _metrics_server(metrics, options.host, options.metrics_port)
    try:
        unit, port = create_server(
            model, f"{options.host}:{options.port}", config=config, metrics=metrics
        )
        await unit.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "serving model_version=%s grpc_port=%d metrics_port=%d device=%s runtime=%s "
            "max_batch_size=%d max_queue=%d",
            model.info.model_version,
            port,
            metrics_server.port,
            model.device,
            model.runtime,
            config.max_batch_size,
            config.max_queue,
        )
        await stop.wait()
        grace = options.grace_seconds
        log.info("shutting down: draining in-flight requests for up to %gs", grace)
        await unit.stop(grace)
        log.info("stopped")
    finally:
        metrics_server.close()
    return 0


def serve_options(args: argparse.Namespace) -> ServeOptions:
    """`vigil serve`'s flags as one typed object (defaults: `options`)."""
    delay_s = args.max_batch_delay_ms / 1000.0
    serving = from_flags(ServingConfig, args, max_batch_delay_s=delay_s)
    return from_flags(ServeOptions, args, serving=serving)


def serve_command(args: argparse.Namespace) -> int:
    """`vigil serve`: load and warm the model, serve until SIGTERM, drain, exit 0."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = serve_options(args)
    model = AnomalyModel.load(args.model, device=options.device, runtime=options.runtime)
    model.warmup(options.serving.max_batch_size)
    return asyncio.run(_serve(model, options))
