"""The same scorer behind Triton (PyTriton), KServe and Ray Serve, for bench/peers.py.

Runs in `.venv-peers` (made by `make bench-peers`), never in the product's
environment. Each peer loads the artifact exactly as `vigil serve` does
(`AnomalyModel.load(..., runtime="onnxruntime")`: the same in-memory ONNX
export, the same ONNX Runtime session options), takes encoded PNG/JPEG bytes
over gRPC and decodes them in the server with vigil's own `inspect_image` +
`prepare`, and answers with the same fields as DetectAnomalies (score,
anomaly flag, confidence, anomalous area; the benchmark asks no server for
a mask, so the peers do not offer one). Each is written the way its
documentation shows: decoding happens inside the batched handler, on the
thread the framework gives it.

  python bench/peer_servers.py triton|kserve|ray --model M --port P \
      --max-batch-size B --max-batch-delay-ms D
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

# `make bench-peers` puts the product code and vigil's stubs, generated for
# this venv's protobuf, on the venv's path (a .pth file), so that Ray's
# workers find them too.
from vigil_inference.images import inspect_image
from vigil_inference.messages import result_message
from vigil_inference.model import AnomalyModel, Detection
from vigil_inference.options import ServingConfig

MODEL_NAME = "vigil"
OUTPUTS = (
    ("score", np.float32),
    ("is_anomalous", np.bool_),
    ("confidence", np.float32),
    ("area_fraction", np.float32),
)


class PeerScorer:
    """Decode, batch-score and turn into Detections, exactly as the unit does."""

    def __init__(self, model_path: str) -> None:
        self.model = AnomalyModel.load(model_path, device="cpu", runtime="onnxruntime")

    def warmup(self, max_batch_size: int) -> None:
        self.model.warmup(max_batch_size)

    def score(self, images: Sequence[bytes]) -> list[Detection]:
        headers = [inspect_image(data) for data in images]
        inputs = [self.model.prepare(d, h) for d, h in zip(images, headers, strict=True)]
        scores, maps = self.model.predict(inputs)
        return [
            self.model.detection(float(scores[i]), maps[i], (h.width, h.height), False)
            for i, h in enumerate(headers)
        ]


def columns(dets: Sequence[Detection]) -> dict[str, np.ndarray]:
    """Detections as [N, 1] output tensors (the v2 protocol's batch layout)."""
    values = {
        "score": [d.anomaly_score for d in dets],
        "is_anomalous": [d.is_anomalous for d in dets],
        "confidence": [d.confidence for d in dets],
        "area_fraction": [d.area_fraction for d in dets],
    }
    return {name: np.asarray(values[name], dtype=dt).reshape(-1, 1) for name, dt in OUTPUTS}


def serve_triton(args: argparse.Namespace) -> None:
    """PyTriton: the real tritonserver binary; its dynamic batcher groups requests."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    _use_this_libpython()
    scorer = PeerScorer(args.model)
    scorer.warmup(args.max_batch_size)

    @batch  # type: ignore[misc]
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return columns(scorer.score([bytes(row[0]) for row in image]))

    config = TritonConfig(
        grpc_port=args.port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name=name, dtype=dt, shape=(1,)) for name, dt in OUTPUTS],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=round(args.max_batch_delay_ms * 1000)
                ),
            ),
            strict=True,
        )
        triton.serve()


def _use_this_libpython() -> None:
    """Triton's Python-backend stub links `libpython3.11.so.1.0` and would load
    the system one (Debian's 3.11.2) with this interpreter's 3.11.7 stdlib,
    which fails in multiprocessing (`RLock._recursion_count`). Point the
    loader at this interpreter's own shared library, inherited by tritonserver."""
    import os
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        old = os.environ.get("LD_LIBRARY_PATH", "")
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, old) if p)


def serve_kserve(args: argparse.Namespace) -> None:
    """KServe's model server, gRPC v2. It has no batcher of its own (the
    InferenceService batcher is a Go sidecar that needs Kubernetes), so each
    request is scored alone, in `predict` as KServe's custom-model docs write it."""
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class VigilModel(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(MODEL_NAME)
            self.scorer = PeerScorer(args.model)
            self.scorer.warmup(1)
            self.ready = True

        def predict(self, payload: InferRequest, headers: Any = None) -> InferResponse:
            images = [bytes(x) for x in payload.inputs[0].as_numpy().reshape(-1)]
            cols = columns(self.scorer.score(images))
            outputs = []
            for name, _ in OUTPUTS:
                out = InferOutput(name=name, shape=[len(images)], datatype=_v2_type(cols[name]))
                out.set_data_from_numpy(cols[name].reshape(-1))
                outputs.append(out)
            return InferResponse(
                response_id=payload.id or "", model_name=MODEL_NAME, infer_outputs=outputs
            )

    server = kserve.ModelServer(
        grpc_port=args.port,
        http_port=args.http_port,
        workers=1,
        enable_docs_url=False,
        enable_latency_logging=False,
    )
    logging.getLogger("kserve").setLevel(logging.WARNING)  # it logs every call at INFO
    server.start([VigilModel()])


def _v2_type(array: np.ndarray) -> str:
    return "BOOL" if array.dtype == np.bool_ else "FP32"


def serve_ray(args: argparse.Namespace) -> None:
    """Ray Serve's gRPC proxy with vigil's own proto; `@serve.batch` groups requests."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from vigil.v1 import anomaly_pb2

    batch_size, wait_s, model_path = args.max_batch_size, args.max_batch_delay_ms / 1000, args.model

    quiet = {"enable_access_log": False, "log_level": "WARNING"}

    @serve.deployment(
        max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0}, logging_config=quiet
    )
    class Scorer:
        def __init__(self) -> None:
            self.scorer = PeerScorer(model_path)
            self.scorer.warmup(batch_size)

        @serve.batch(max_batch_size=batch_size, batch_wait_timeout_s=wait_s)  # type: ignore[misc]
        async def DetectAnomalies(self, requests: list[Any]) -> list[Any]:
            dets = self.scorer.score([r.image for r in requests])
            return [anomaly_pb2.DetectAnomaliesResponse(result=result_message(d)) for d in dets]

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"port": args.http_port},
        logging_config=quiet,
        grpc_options=gRPCOptions(
            port=args.port,
            grpc_servicer_functions=[
                "vigil.v1.anomaly_pb2_grpc.add_AnomalyDetectionServicer_to_server"
            ],
        ),
    )
    serve.run(Scorer.bind(), name=MODEL_NAME, route_prefix="/", blocking=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("peer", choices=("triton", "kserve", "ray"))
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True, help="gRPC port")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, default=4)
    p.add_argument(
        "--max-batch-delay-ms", type=float, default=ServingConfig.max_batch_delay_s * 1000
    )
    args = p.parse_args(argv)
    {"triton": serve_triton, "kserve": serve_kserve, "ray": serve_ray}[args.peer](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
