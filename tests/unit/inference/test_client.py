"""`vigil detect`'s pieces: light imports, content type sniffing, JSON shape."""

from __future__ import annotations

import base64
import subprocess
import sys

from vigil.v1 import anomaly_pb2
from vigil_inference.client import content_type_of, lookout_json, result_json


def test_client_imports_neither_torch_nor_pil() -> None:
    """Nor does parsing any unit command, or `vigil --help` and each command's."""
    code = (
        "import contextlib, io, sys, vigil_cli.unit, vigil_inference.client\n"
        "from vigil_cli.main import build_parser\n"
        "p = build_parser()\n"
        "p.parse_args(['train', '--normal', 'n', '--out', 'o'])\n"
        "p.parse_args(['serve', '--model', 'm'])\n"
        "p.parse_args(['detect', '--target', 't', 'a.png'])\n"
        "for cmd in ([], ['train'], ['serve'], ['detect']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        p.parse_args([*cmd, '--help'])\n"
        "print(sorted(m for m in ('torch', 'PIL', 'numpy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_content_type_from_magic_bytes() -> None:
    assert content_type_of(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert content_type_of(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert content_type_of(b"GIF89a") == ""
    assert content_type_of(b"") == ""


def test_result_json_has_every_field_in_snake_case() -> None:
    result = anomaly_pb2.DetectAnomalyResult(anomaly_score=1.5, threshold=2.0, model_version="v1")
    out = result_json(result, "a.png")
    assert out == {
        "image": "a.png",
        "is_anomalous": False,
        "confidence": 0.0,
        "anomaly_score": 1.5,
        "threshold": 2.0,
        "anomalies": [],
        "anomaly_mask": "",
        "model_version": "v1",
    }


def _anomaly(name: str, area: float, color: str) -> anomaly_pb2.Anomaly:
    pixel = anomaly_pb2.PixelAnomaly(total_percentage_area=area, color=color)
    return anomaly_pb2.Anomaly(name=name, pixel_anomaly=pixel)


def test_lookout_json_of_a_segmentation_model_is_lookouts_response() -> None:
    result = anomaly_pb2.DetectAnomalyResult(
        is_anomalous=True,
        confidence=0.75,
        anomaly_score=3.0,
        threshold=2.0,
        anomalies=[_anomaly("background", 0.875, "#FFFFFF"), _anomaly("scratch", 0.125, "#2CA02C")],
        anomaly_mask=b"\x89PNG-mask",
        model_version="v1",
    )
    assert lookout_json(result) == {
        "DetectAnomalyResult": {
            "Source": {"Type": "direct"},
            "IsAnomalous": True,
            "Confidence": 0.75,
            "Anomalies": [
                {
                    "Name": "background",
                    "PixelAnomaly": {"TotalPercentageArea": 0.875, "Color": "#FFFFFF"},
                },
                {
                    "Name": "scratch",
                    "PixelAnomaly": {"TotalPercentageArea": 0.125, "Color": "#2CA02C"},
                },
            ],
            "AnomalyMask": base64.b64encode(b"\x89PNG-mask").decode(),
        }
    }


def test_lookout_json_of_a_model_without_types_is_a_classification_answer() -> None:
    result = anomaly_pb2.DetectAnomalyResult(
        is_anomalous=True,
        confidence=0.5,
        anomalies=[_anomaly("anomaly", 0.25, "#FF0000")],
        anomaly_mask=b"png",
    )
    # Lookout's classification models returned neither Anomalies nor AnomalyMask.
    assert lookout_json(result) == {
        "DetectAnomalyResult": {
            "Source": {"Type": "direct"},
            "IsAnomalous": True,
            "Confidence": 0.5,
        }
    }
