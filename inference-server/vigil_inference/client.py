"""`vigil detect`: send images to a unit, print one JSON object per image.

Needs only grpcio and protobuf (no torch, no PIL), so it runs anywhere a
script does. Every image is tried; any failure makes the exit code 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf import json_format

from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
from vigil.v1.wire import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from vigil_inference.options import DetectOptions, from_flags

# Room for a large image out and a 4096x4096 mask back.
_CHANNEL_OPTIONS: Final = [
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
]


def content_type_of(data: bytes) -> str:
    """From magic bytes; empty when unknown, so the unit names the problem."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return ""


def result_json(result: anomaly_pb2.DetectAnomalyResult, image: str) -> dict[str, Any]:
    """The result's fields in snake_case, defaults included, plus `image`."""
    fields: dict[str, Any] = json_format.MessageToDict(
        result,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return {"image": image, **fields}


def lookout_json(result: anomaly_pb2.DetectAnomalyResult) -> dict[str, Any]:
    """Lookout for Vision's DetectAnomalies response for this result, as the
    AWS CLI prints it. A model trained with colour-coded masks answers as a
    Lookout segmentation model (`Anomalies` with `background` first, and the
    mask, base64); any other as a classification model (neither)."""
    out: dict[str, Any] = {
        "Source": {"Type": "direct"},
        "IsAnomalous": result.is_anomalous,
        "Confidence": result.confidence,
    }
    if result.anomalies and result.anomalies[0].name == "background":
        out["Anomalies"] = [
            {
                "Name": a.name,
                "PixelAnomaly": {
                    "TotalPercentageArea": a.pixel_anomaly.total_percentage_area,
                    "Color": a.pixel_anomaly.color,
                },
            }
            for a in result.anomalies
        ]
        out["AnomalyMask"] = base64.b64encode(result.anomaly_mask).decode("ascii")
    return {"DetectAnomalyResult": out}


def _detect_one(
    stub: anomaly_pb2_grpc.AnomalyDetectionStub,
    path: str,
    mask_dir: Path | None,
    options: DetectOptions,
    taken: set[Path] | None = None,
) -> dict[str, Any]:
    data = Path(path).read_bytes()
    fmt = options.format
    request = anomaly_pb2.DetectAnomaliesRequest(
        image=data,
        content_type=content_type_of(data),
        return_mask=mask_dir is not None or fmt == "lookout",
    )
    response = stub.DetectAnomalies(request, timeout=options.timeout_s)
    result = response.result
    lookout = lookout_json(result) if fmt == "lookout" else None
    mask = result.anomaly_mask
    result.ClearField("anomaly_mask")
    out = result_json(result, path)
    if mask_dir is not None:
        mask_path = mask_dir / f"{Path(path).stem}.mask.png"
        n = 2
        while taken is not None and mask_path in taken:  # a/x.png and b/x.png
            mask_path = mask_dir / f"{Path(path).stem}-{n}.mask.png"
            n += 1
        if taken is not None:
            taken.add(mask_path)
        mask_path.write_bytes(mask)
        out["anomaly_mask"] = str(mask_path)
    return lookout if lookout is not None else out


def detect_command(args: argparse.Namespace) -> int:
    """`vigil detect`: every image is tried; exit 1 if any failed."""
    options = from_flags(DetectOptions, args, timeout_s=args.timeout)
    mask_dir = Path(args.mask_dir) if args.mask_dir else None
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    taken: set[Path] = set()
    with grpc.insecure_channel(args.target, options=_CHANNEL_OPTIONS) as channel:
        stub = anomaly_pb2_grpc.AnomalyDetectionStub(channel)  # type: ignore[no-untyped-call]
        for path in args.images:
            try:
                out = _detect_one(stub, path, mask_dir, options, taken)
            except grpc.RpcError as exc:
                failed += 1
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                print(f"vigil detect: {path}: {code}: {details}", file=sys.stderr)
                continue
            except OSError as exc:
                failed += 1
                print(f"vigil detect: {path}: {exc}", file=sys.stderr)
                continue
            print(json.dumps(out), flush=True)
    return 1 if failed else 0
